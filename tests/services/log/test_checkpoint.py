"""Signed checkpoints: format, round trip, and verification by sigstore-python's own parser."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sigstore._internal.rekor.checkpoint import SignedCheckpoint
from sigstore._internal.trust import Keyring, RekorKeyring
from sigstore._utils import KeyID
from sigstore.errors import VerificationError
from sigstore_models.common import v1 as common_v1

from clients.rekor import SignedCheckpoint as ClientCheckpoint
from clients.rekor import VerificationFailed
from services.log.checkpoint import (
    Checkpoint,
    CheckpointSigner,
    frozen_line,
    is_frozen,
    key_id,
    note_key_id,
    verify_checkpoint,
    verify_note_signature,
)
from services.witness.note import SignedNote, Verifier, log_vkey

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


ED_KEY = ed25519.Ed25519PrivateKey.generate()


def test_ed25519_key_id_is_c2sp_and_bound_to_the_name() -> None:
    raw = ED_KEY.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    signer = CheckpointSigner("log.example", ED_KEY)
    assert signer.key_id == hashlib.sha256(b"log.example\n\x01" + raw).digest()
    assert signer.key_id == note_key_id(ED_KEY.public_key(), "log.example")
    assert signer.key_hint == signer.key_id[:4]
    assert signer.spki_id == key_id(ED_KEY.public_key()) != signer.key_id
    # The tree ID comes from the SPKI: the same key under another name is the same log key.
    assert CheckpointSigner("other.example", ED_KEY).spki_id == signer.spki_id
    assert CheckpointSigner("other.example", ED_KEY).key_id != signer.key_id


def test_ed25519_note_verifies_in_the_witness_and_the_auditor_client() -> None:
    """Two readers written from C2SP apart from the signer: the witness's vkey verifier and
    ``clients.rekor`` (which never imports ``services``)."""
    signer = CheckpointSigner("log.example", ED_KEY)
    note = signer.sign_checkpoint(Checkpoint("log.example", 9, ROOT))
    verifier = Verifier.parse(log_vkey("log.example", ED_KEY.public_key()))
    signed = SignedNote.parse(note)
    (line,) = signed.signatures
    assert line.key_id == verifier.key_id == signer.key_hint
    verifier.verify(signed.text.encode(), line.signature)
    assert ClientCheckpoint.verify(note, ED_KEY.public_key()).size == 9
    with pytest.raises(VerificationFailed):
        ClientCheckpoint.verify(note.replace("\n9\n", "\n10\n", 1), ED_KEY.public_key())
    # Under another name the hint differs, so the line is not this key's.
    renamed = note.replace("— log.example ", "— evil.example ")
    with pytest.raises(VerificationFailed, match="no signature by log key"):
        ClientCheckpoint.verify(renamed, ED_KEY.public_key())


def test_verify_note_signature_raises_for_either_key_type() -> None:
    for key in (KEY, ED_KEY):
        signer = CheckpointSigner("log.example", key)
        sig = signer.sign(b"text\n")
        verify_note_signature(key.public_key(), sig, b"text\n")
        with pytest.raises(InvalidSignature):
            verify_note_signature(key.public_key(), sig, b"other\n")


def test_the_frozen_line_is_rekor_tiles_and_only_an_extension_line_freezes() -> None:
    # Go's time.UnixDate pads the day with a space: "Mon Jan _2 15:04:05 MST 2006".
    assert frozen_line(1_800_000_000) == "Log frozen \u2014 Fri Jan 15 08:00:00 UTC 2027"
    assert frozen_line(1_764_826_329) == "Log frozen \u2014 Thu Dec  4 05:32:09 UTC 2025"
    signer = CheckpointSigner("log.example", ED_KEY)
    final = signer.sign_checkpoint(Checkpoint("log.example", 9, ROOT, (frozen_line(0),)))
    assert is_frozen(final)
    assert not is_frozen(signer.sign_checkpoint(Checkpoint("log.example", 9, ROOT)))
    # The origin is no extension line, whatever it says.
    origin = signer.sign_checkpoint(Checkpoint(frozen_line(0).replace(" ", "_"), 9, ROOT))
    assert not is_frozen(origin)


def test_verify_checkpoint_needs_the_key_under_its_name() -> None:
    for key in (KEY, ED_KEY):
        note = CheckpointSigner("log.example", key).sign_checkpoint(
            Checkpoint("log.example", 9, ROOT)
        )
        assert verify_checkpoint(note, key.public_key(), "log.example").size == 9
        with pytest.raises(ValueError, match=r"no signature by other\.example"):
            verify_checkpoint(note, key.public_key(), "other.example")
        with pytest.raises(ValueError, match="does not verify"):
            verify_checkpoint(note.replace("\n9\n", "\n10\n"), key.public_key(), "log.example")
