"""Signed checkpoints: format, round trip, and verification by sigstore-python's own parser."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sigstore._internal.rekor.checkpoint import SignedCheckpoint
from sigstore._internal.trust import Keyring, RekorKeyring
from sigstore._utils import KeyID
from sigstore.errors import VerificationError
from sigstore_models.common import v1 as common_v1

from services.log.checkpoint import Checkpoint, CheckpointSigner, key_id

KEY = ec.generate_private_key(ec.SECP256R1())
ROOT = hashlib.sha256(b"root").digest()


def test_text_round_trip() -> None:
    cp = Checkpoint("log.example - 42", 7, ROOT, ("Timestamp: 1704884598354420783",))
    assert Checkpoint.from_text(cp.to_text()) == cp
    assert cp.to_text() == (
        f"log.example - 42\n7\n{base64.b64encode(ROOT).decode()}\nTimestamp: 1704884598354420783\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("o\n7\n", "at least 3"),
        ("o\n07\nAAAA\n", "tree size"),
        ("o\n-1\nAAAA\n", "tree size"),
        ("o\n1\n!!!!\n", "root"),
        ("o\n1\nAAAA", "newline"),
        ("o\n1\nAAAA\n", "root hash has 3 bytes"),
        ("o\n\u0665\nAAAA\n", "tree size"),  # an Arabic-Indic 5, which int() reads
        ("o\n\u00b9\nAAAA\n", "tree size"),  # a superscript 1, which int() refuses
    ],
)
def test_from_text_rejects_malformed(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Checkpoint.from_text(text)


def test_invalid_values_are_rejected_where_built() -> None:
    with pytest.raises(ValueError, match="origin"):
        Checkpoint("", 1, ROOT)
    with pytest.raises(ValueError, match="negative"):
        Checkpoint("o", -1, ROOT)
    with pytest.raises(ValueError, match="key name"):
        CheckpointSigner("has space", KEY)


def test_key_id_is_sha256_of_spki_and_hint_is_its_prefix() -> None:
    spki = KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signer = CheckpointSigner("log.example", KEY)
    assert key_id(KEY.public_key()) == hashlib.sha256(spki).digest() == signer.key_id
    assert signer.key_hint == signer.key_id[:4]


def _sigstore_keyring() -> RekorKeyring:
    spki = KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return RekorKeyring(
        Keyring(
            [
                common_v1.PublicKey(
                    raw_bytes=base64.b64encode(spki),
                    key_details=common_v1.PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
                )
            ]
        )
    )


def test_sigstore_python_parses_and_verifies_our_signed_note() -> None:
    """sigstore-python's own checkpoint code is the judge of our bytes."""
    signer = CheckpointSigner("log.example", KEY)
    note = signer.sign_checkpoint(Checkpoint("log.example - 42", 9, ROOT))
    signed = SignedCheckpoint.from_text(note)
    signed.signed_note.verify(_sigstore_keyring(), KeyID(signer.key_id))
    cp = signed.checkpoint
    assert (cp.origin, cp.log_size, cp.log_hash) == ("log.example - 42", 9, ROOT.hex())
    assert signed.signed_note.signatures[0].name == "log.example"


def test_sigstore_python_rejects_a_tampered_note() -> None:
    signer = CheckpointSigner("log.example", KEY)
    note = signer.sign_checkpoint(Checkpoint("log.example - 42", 9, ROOT))
    tampered = note.replace("\n9\n", "\n10\n", 1)
    with pytest.raises(VerificationError):
        SignedCheckpoint.from_text(tampered).signed_note.verify(
            _sigstore_keyring(), KeyID(signer.key_id)
        )
