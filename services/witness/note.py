"""C2SP signed notes as a witness reads them: verifier keys, checkpoint signatures, cosignatures.

Written from c2sp.org/signed-note, c2sp.org/tlog-checkpoint and c2sp.org/tlog-cosignature.

Verifier keys (vkeys) are ``<name>+<hex key ID>+<base64(type ‖ public key)>``. Two log key types
are accepted:

- ``0x01`` Ed25519: key ID ``SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4]``;
- ``0x02`` ECDSA (P-256/384/521, SHA-256) with the DER SubjectPublicKeyInfo as the key and
  ``SHA-256(SPKI)[:4]`` as its ID (transparency-dev's encoding, and the key hint sigstead's own
  ``CheckpointSigner`` and Rekor v1 put in their signature lines).

The witness signs with type ``0x04``, an Ed25519 ``cosignature/v1``: the signature is
``key ID ‖ u64 timestamp ‖ Ed25519(“cosignature/v1\\ntime <t>\\n” ‖ note text)``.

Every check raises ``NoteError`` (or ``SignatureError``, for a signature by a trusted key that
does not verify, which the protocol answers differently): nothing returns a bool to forget.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

__all__ = [
    "COSIGNATURE_V1",
    "ECDSA",
    "ED25519",
    "ED25519_COSIGNATURE",
    "MAX_SIGNATURES",
    "Cosigner",
    "NoteError",
    "SignatureError",
    "SignedNote",
    "Verifier",
    "cosignature_message",
    "ecdsa_vkey",
    "log_vkey",
]

ED25519 = 0x01
ECDSA = 0x02
ED25519_COSIGNATURE = 0x04
COSIGNATURE_V1 = "cosignature/v1"
# signed-note says verifiers MUST accept at least 16 signatures; a checkpoint passed between
# many witnesses may carry more, and each costs nothing until a trusted key's line matches.
MAX_SIGNATURES = 64

_EM_DASH = "\u2014"
# Control characters other than newline are forbidden anywhere in a note (signed-note §Format).
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
_HEX8 = re.compile(r"[0-9a-f]{8}")


class NoteError(ValueError):
    """The text is not a well-formed signed note or verifier key."""


class SignatureError(Exception):
    """No signature by a trusted key verifies, or one by a trusted key fails to verify."""


def _check_key_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError(f"invalid key name {name!r}: non-empty, without spaces or '+'")


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise NoteError(f"{what} is not base64: {text[:80]!r}") from None


def _ed25519_id(name: str, kind: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public).digest()[:4]


@dataclass(frozen=True, slots=True)
class Verifier:
    """A log's public key: the key name and ID its signature lines carry, and how to check them."""

    name: str
    key_id: bytes
    kind: int
    key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
    vkey: str

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Parse a vkey; raise ``NoteError`` unless it is a well-formed Ed25519 or ECDSA key whose
        stated key ID is the one its type's rule gives."""
        # Base64 has '+' in its alphabet; the name and hex ID cannot.
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise NoteError(f"vkey {vkey!r}: want <name>+<hex key ID>+<base64 key>")
        name, hex_id, encoded = parts
        _check_key_name(name)
        if not _HEX8.fullmatch(hex_id):
            raise NoteError(f"vkey {vkey!r}: key ID {hex_id!r} is not 8 lowercase hex digits")
        material = _b64(encoded, f"vkey {name!r} key")
        if not material:
            raise NoteError(f"vkey {name!r}: empty key")
        kind, public = material[0], material[1:]
        key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
        if kind == ED25519:
            if len(public) != 32:
                raise NoteError(f"vkey {name!r}: Ed25519 key has {len(public)} bytes, want 32")
            key = ed25519.Ed25519PublicKey.from_public_bytes(public)
            want = _ed25519_id(name, ED25519, public)
        elif kind == ECDSA:
            try:
                loaded = serialization.load_der_public_key(public)
            except ValueError:
                raise NoteError(f"vkey {name!r}: not a DER SubjectPublicKeyInfo") from None
            if not isinstance(loaded, ec.EllipticCurvePublicKey) or not isinstance(
                loaded.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1
            ):
                raise NoteError(f"vkey {name!r}: type 0x02 needs a P-256, P-384 or P-521 key")
            key = loaded
            want = hashlib.sha256(public).digest()[:4]
        else:
            raise NoteError(
                f"vkey {name!r}: signature type 0x{kind:02x} is not a log key type this "
                "witness verifies (0x01 Ed25519, 0x02 ECDSA)"
            )
        if bytes.fromhex(hex_id) != want:
            raise NoteError(f"vkey {name!r}: key ID {hex_id} is not its key's ID {want.hex()}")
        return cls(name, want, kind, key, vkey)

    def verify(self, text: bytes, signature: bytes) -> None:
        """Check ``signature`` (without the key ID) over the note ``text``; raise
        ``SignatureError`` if it does not verify."""
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, text)
            else:
                self.key.verify(signature, text, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise SignatureError(
                f"the signature by trusted key {self.name}+{self.key_id.hex()} does not verify"
            ) from None


def log_vkey(name: str, key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> str:
    """The vkey of a log key: type 0x01 for Ed25519 (a Rekor v2 log's option), 0x02 for ECDSA."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        _check_key_name(name)
        public = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        key_id = _ed25519_id(name, ED25519, public)
        return f"{name}+{key_id.hex()}+{base64.b64encode(bytes([ED25519]) + public).decode()}"
    return ecdsa_vkey(name, key)


def ecdsa_vkey(name: str, key: ec.EllipticCurvePublicKey) -> str:
    """The type 0x02 vkey of an ECDSA log key (such as sigstead's own checkpoint key)."""
    _check_key_name(name)
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_id = hashlib.sha256(spki).digest()[:4]
    return f"{name}+{key_id.hex()}+{base64.b64encode(bytes([ECDSA]) + spki).decode()}"


@dataclass(frozen=True, slots=True)
class SignatureLine:
    """One ``— <name> base64(key ID ‖ signature)`` line."""

    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignedNote:
    """A note split into its text (with its final newline) and its signature lines."""

    text: str
    signatures: tuple[SignatureLine, ...]

    @classmethod
    def parse(cls, note: str) -> SignedNote:
        """Split a signed note per c2sp.org/signed-note; raise ``NoteError`` if malformed."""
        if _CONTROL.search(note):
            raise NoteError("the note holds a control character other than newline")
        body, sep, block = note.rpartition("\n\n")
        if not sep or not body:
            raise NoteError("the note has no blank line before its signatures")
        if not block.endswith("\n"):
            raise NoteError("the note's last signature line does not end in a newline")
        lines = block[:-1].split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise NoteError(f"the note has {len(lines)} signatures, at most {MAX_SIGNATURES}")
        signatures = []
        for line in lines:
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != _EM_DASH:
                raise NoteError(f"malformed signature line {line[:80]!r}")
            _check_key_name(parts[1])
            raw = _b64(parts[2], f"signature by {parts[1]!r}")
            if len(raw) < 5:
                raise NoteError(f"signature by {parts[1]!r} has {len(raw)} bytes, want over 4")
            signatures.append(SignatureLine(parts[1], raw[:4], raw[4:]))
        return cls(body + "\n", tuple(signatures))

    def verify(self, verifiers: tuple[Verifier, ...]) -> tuple[Verifier, ...]:
        """Verify every signature by one of ``verifiers`` (matched by name *and* key ID, others
        ignored); return the keys that signed. Raise ``SignatureError`` if one of them does not
        verify, or if none of them signed."""
        by_id = {(v.name, v.key_id): v for v in verifiers}
        text = self.text.encode()
        signed = []
        for line in self.signatures:
            verifier = by_id.get((line.name, line.key_id))
            if verifier is not None:
                verifier.verify(text, line.signature)
                signed.append(verifier)
        if not signed:
            names = ", ".join(f"{v.name}+{v.key_id.hex()}" for v in verifiers)
            raise SignatureError(f"no signature by a trusted key ({names})")
        return tuple(signed)


def cosignature_message(text: str, timestamp: int) -> bytes:
    """The message a ``cosignature/v1`` signs: header, time line, then the note text."""
    return f"{COSIGNATURE_V1}\ntime {timestamp}\n{text}".encode()


class Cosigner:
    """The witness's Ed25519 key under its name: signs ``cosignature/v1`` lines."""

    __slots__ = ("_key", "key_id", "name", "public_key")

    def __init__(self, name: str, key: ed25519.Ed25519PrivateKey) -> None:
        _check_key_name(name)
        self._key = key
        self.name = name
        self.public_key = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = _ed25519_id(name, ED25519_COSIGNATURE, self.public_key)

    @property
    def vkey(self) -> str:
        """The witness's vkey (type 0x04), which log clients configure to trust it."""
        material = base64.b64encode(bytes([ED25519_COSIGNATURE]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    def cosign(self, text: str, timestamp: int) -> str:
        """Return the signature line cosigning the checkpoint ``text`` at ``timestamp``.

        tlog-witness forbids a zero timestamp, and the u64 must stay below 2^63."""
        if not 0 < timestamp < 1 << 63:
            raise ValueError(f"cosignature timestamp {timestamp} is not in (0, 2^63)")
        signature = self._key.sign(cosignature_message(text, timestamp))
        raw = self.key_id + struct.pack(">Q", timestamp) + signature
        return f"{_EM_DASH} {self.name} {base64.b64encode(raw).decode()}\n"
