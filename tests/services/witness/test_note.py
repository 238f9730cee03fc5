"""Signed notes, vkeys and cosignatures, held to the C2SP examples and to sigstead's own log."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from services.log.checkpoint import Checkpoint, CheckpointSigner
from services.witness.note import (
    Cosigner,
    NoteError,
    SignatureError,
    SignedNote,
    Verifier,
    ecdsa_vkey,
)

# c2sp.org/signed-note's example: this vkey verifies this note.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n\u2014 example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
ROOT = hashlib.sha256(b"root").digest()


def test_the_signed_note_spec_example_verifies() -> None:
    verifier = Verifier.parse(SPEC_VKEY)
    note = SignedNote.parse(SPEC_NOTE)
    assert note.text == "This is an example message.\n"
    assert note.verify((verifier,)) == (verifier,)


def test_a_changed_text_fails_under_the_spec_key() -> None:
    note = SignedNote.parse(SPEC_NOTE.replace("example message", "exemplary message"))
    with pytest.raises(SignatureError, match="does not verify"):
        note.verify((Verifier.parse(SPEC_VKEY),))


def test_sigsteads_checkpoint_verifies_under_its_ecdsa_vkey() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = CheckpointSigner("log.example", key)
    vkey = ecdsa_vkey("log.example", key.public_key())
    _, hex_id, material = vkey.split("+", 2)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # transparency-dev's type 0x02: DER SPKI behind the type byte, SHA-256(SPKI)[:4] as the ID,
    # which is the key hint sigstead's signer puts in its lines.
    assert base64.b64decode(material) == b"\x02" + spki
    assert bytes.fromhex(hex_id) == hashlib.sha256(spki).digest()[:4] == signer.key_hint
    note = SignedNote.parse(signer.sign_checkpoint(Checkpoint("log.example - 1", 5, ROOT)))
    verifier = Verifier.parse(vkey)
    assert note.verify((verifier,)) == (verifier,)


def test_a_vkey_whose_base64_holds_a_plus_parses() -> None:
    while True:
        key = ec.generate_private_key(ec.SECP256R1())
        vkey = ecdsa_vkey("log.example", key.public_key())
        if "+" in vkey.split("+", 2)[2]:
            break
    assert Verifier.parse(vkey).key == key.public_key()


def test_signatures_by_unknown_keys_are_ignored_and_none_trusted_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    text = CheckpointSigner("log.example", other).sign_checkpoint(Checkpoint("o", 1, ROOT))
    with pytest.raises(SignatureError, match="no signature by a trusted key"):
        SignedNote.parse(text).verify(
            (Verifier.parse(ecdsa_vkey("log.example", key.public_key())),)
        )
    # Same key, other name: name and ID must both match, so this one is not the trusted key's.
    text = CheckpointSigner("other.example", key).sign_checkpoint(Checkpoint("o", 1, ROOT))
    with pytest.raises(SignatureError, match="no signature by a trusted key"):
        SignedNote.parse(text).verify(
            (Verifier.parse(ecdsa_vkey("log.example", key.public_key())),)
        )


def test_a_bad_signature_by_a_trusted_key_is_refused_even_beside_a_good_one() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = CheckpointSigner("log.example", key)
    good = signer.sign_checkpoint(Checkpoint("o", 1, ROOT))
    body, _, line = good.rpartition("\n\n")
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[-1] ^= 1
    bad = f"\u2014 log.example {base64.b64encode(raw).decode()}\n"
    note = SignedNote.parse(f"{body}\n\n{line}{bad}")
    with pytest.raises(SignatureError, match="does not verify"):
        note.verify((Verifier.parse(ecdsa_vkey("log.example", key.public_key())),))


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        ("example.com/foo+530d903a", "want <name>"),
        ("+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "invalid key name"),
        ("example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "hex"),
        ("example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "is not its"),
        ("example.org/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "is not its"),
        ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2", "base64"),
        ("example.com/foo+530d903a+BOkyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "0x04"),
        ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv", "want 32"),
        ("example.com/foo+530d903a+AjBZ", "DER"),
    ],
)
def test_bad_vkeys_are_refused(vkey: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Verifier.parse(vkey)


def test_an_ecdsa_vkey_must_hold_an_ecdsa_key_on_a_named_curve() -> None:
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    spki = ed.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kid = hashlib.sha256(spki).digest()[:4].hex()
    material = base64.b64encode(bytes([0x02]) + spki).decode()
    vkey = f"log.example+{kid}+{material}"
    with pytest.raises(NoteError, match="P-256"):
        Verifier.parse(vkey)


@pytest.mark.parametrize(
    ("note", "message"),
    [
        ("text\n\u2014 a AAAAAAA=\n", "no blank line"),
        ("text\n\n\u2014 a AAAAAAA=", "newline"),
        ("text\n\n- a AAAAAAA=\n", "malformed signature line"),
        ("text\n\n\u2014 a+b AAAAAAA=\n", "key name"),
        ("text\n\n\u2014 a AAAA\n", "want over 4"),
        ("text\n\n\u2014 a !!!!\n", "base64"),
        ("te\tt\n\n\u2014 a AAAAAAA=\n", "control character"),
        ("text\n\n" + "\u2014 a AAAAAAA=\n" * 65, "at most 64"),
    ],
)
def test_malformed_notes_are_refused(note: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        SignedNote.parse(note)


def test_the_text_ends_at_the_last_blank_line() -> None:
    note = SignedNote.parse("a\n\nb\n\n\u2014 k AAAAAAA=\n")
    assert note.text == "a\n\nb\n"


def check_cosignature(vkey: str, text: str, line: str) -> int:
    """Verify a cosignature line as tlog-cosignature describes it, sharing no code with
    ``Cosigner``; return its timestamp."""
    name, hex_id, material = vkey.split("+", 2)
    raw_key = base64.b64decode(material)
    assert raw_key[0] == 0x04
    public = raw_key[1:]
    assert hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4].hex() == hex_id
    dash, line_name, sig64 = line.rstrip("\n").split(" ")
    assert (dash, line_name) == ("\u2014", name)
    raw = base64.b64decode(sig64)
    assert raw[:4].hex() == hex_id
    (timestamp,) = struct.unpack(">Q", raw[4:12])
    message = f"cosignature/v1\ntime {timestamp}\n{text}".encode()
    ed25519.Ed25519PublicKey.from_public_bytes(public).verify(raw[12:], message)
    assert len(raw) == 4 + 8 + 64
    return int(timestamp)


def test_cosignature_verifies_per_tlog_cosignature() -> None:
    cosigner = Cosigner("witness.example/w1", ed25519.Ed25519PrivateKey.generate())
    text = Checkpoint("log.example - 1", 20852163, ROOT).to_text()
    line = cosigner.cosign(text, 1679315147)
    assert check_cosignature(cosigner.vkey, text, line) == 1679315147


@pytest.mark.parametrize("timestamp", [0, -1, 1 << 63])
def test_cosignature_timestamps_out_of_range_are_refused(timestamp: int) -> None:
    cosigner = Cosigner("w", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ValueError, match="timestamp"):
        cosigner.cosign("o\n1\nAAAA\n", timestamp)
