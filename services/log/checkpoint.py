"""Checkpoints as C2SP signed notes (rekor.md §4).

A checkpoint commits to a tree: ``origin``, ``size`` and ``root``. Its signed form is::

    <origin>\\n<size>\\n<base64 root>\\n[<extension line>\\n…]
    \\n
    — <key name> <base64(key_hint[4] ‖ signature)>\\n

The key hint is the first four bytes of the key ID. For ECDSA the key ID is SHA-256 over the DER
SubjectPublicKeyInfo (also the Rekor ``logID``, as Rekor v1 and rekor-tiles compute it); for
Ed25519 (a Rekor v2 option, the public 2025 log's key type) it is C2SP signed-note's
``SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)``, which depends on the key name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

__all__ = [
    "FROZEN_LINE_PREFIX",
    "Checkpoint",
    "CheckpointSigner",
    "LogPrivateKey",
    "LogPublicKey",
    "frozen_line",
    "is_frozen",
    "key_id",
    "note_key_id",
    "verify_checkpoint",
    "verify_note_signature",
]

_EM_DASH = "\u2014"
_ED25519_TYPE = b"\x01"

FROZEN_LINE_PREFIX = "Log frozen \u2014 "
"""A frozen log's final checkpoint carries one extension line starting with this, followed by
the time in Go's ``time.UnixDate`` (rekor-tiles' ``freeze-checkpoint``); no checkpoint follows."""

LogPublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
LogPrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def key_id(public_key: LogPublicKey) -> bytes:
    """Return SHA-256 of the DER SubjectPublicKeyInfo: Rekor's ``logID`` and the CT log ID."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def note_key_id(public_key: LogPublicKey, name: str) -> bytes:
    """The 32-byte signed-note key ID of ``public_key`` under key ``name``: its first four bytes
    are the hint in signature lines, and all of it is a Rekor v2 log's ``logId.keyId`` and
    ``checkpointKeyId``. ECDSA's ignores the name."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(name.encode() + b"\n" + _ED25519_TYPE + raw).digest()
    return key_id(public_key)


def frozen_line(now: float) -> str:
    """The extension line of a final checkpoint frozen at ``now`` (Unix seconds), as rekor-tiles
    writes it: ``Log frozen — Thu Dec  4 05:32:09 UTC 2026``."""
    return FROZEN_LINE_PREFIX + time.strftime("%a %b %e %H:%M:%S UTC %Y", time.gmtime(now))


def is_frozen(note: str) -> bool:
    """Whether a signed checkpoint is a frozen log's final one (an extension line says so)."""
    text = note.partition("\n\n")[0]
    return any(line.startswith(FROZEN_LINE_PREFIX) for line in text.split("\n")[3:])


def verify_checkpoint(note: str, public_key: LogPublicKey, name: str) -> Checkpoint:
    """Parse a signed checkpoint and check its signature by ``public_key`` under key ``name``;
    raise ``ValueError`` unless there is one and it verifies. Other signatures (witnesses')
    are ignored."""
    body, sep, signatures = note.rpartition("\n\n")
    if not sep:
        raise ValueError("not a signed note")
    hint = note_key_id(public_key, name)[:4]
    for line in signatures.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _EM_DASH or parts[1] != name:
            continue
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except ValueError:
            continue
        if raw[:4] != hint:
            continue
        try:
            verify_note_signature(public_key, raw[4:], (body + "\n").encode())
        except InvalidSignature:
            raise ValueError(f"the signature by {name} does not verify") from None
        return Checkpoint.from_text(body + "\n")
    raise ValueError(f"no signature by {name} with key ID {hint.hex()}")


def verify_note_signature(public_key: LogPublicKey, signature: bytes, text: bytes) -> None:
    """Check a log's signature (without its key hint) over note ``text``; raises
    ``cryptography.exceptions.InvalidSignature``."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, text)
    else:
        public_key.verify(signature, text, ec.ECDSA(hashes.SHA256()))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The unsigned body of a checkpoint."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise ValueError(f"invalid checkpoint origin {self.origin!r}")
        if self.size < 0:
            raise ValueError(f"negative tree size {self.size}")
        if len(self.root) != 32:
            raise ValueError(f"root hash has {len(self.root)} bytes, want 32")
        for line in self.extensions:
            if not line or "\n" in line:
                raise ValueError(f"invalid checkpoint extension line {line!r}")

    def to_text(self) -> str:
        """Return the note text that is signed (each line newline-terminated)."""
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root).decode(),
            *self.extensions,
        ]
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse note text produced by ``to_text``; raise ``ValueError`` on anything else."""
        if not text.endswith("\n"):
            raise ValueError("malformed checkpoint: text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise ValueError(f"malformed checkpoint: {len(lines)} lines, want at least 3")
        origin, size_text, root_text, *extensions = lines
        # isascii: str.isdigit also holds for U+0665 (which int() reads as 5) and U+00B9.
        if not (size_text.isascii() and size_text.isdigit()) or (
            size_text != "0" and size_text.startswith("0")
        ):
            raise ValueError(f"malformed checkpoint: tree size {size_text!r}")
        try:
            root = base64.b64decode(root_text, validate=True)
        except ValueError as exc:
            raise ValueError(f"malformed checkpoint: root {root_text!r}") from exc
        return cls(origin, int(size_text), root, tuple(extensions))


class CheckpointSigner:
    """Signs checkpoints with the log's key under a key name (the public URL's host).

    ECDSA for every log (Rekor v1's SETs and CT's SCTs need it); Ed25519 for Rekor v2 only.
    ``key_id`` is the signed-note key ID (``note_key_id``), ``spki_id`` the SHA-256 of the
    SubjectPublicKeyInfo, which does not change with the name; for ECDSA they are equal.
    """

    __slots__ = ("_key", "key_hint", "key_id", "name", "spki_id")

    def __init__(self, name: str, key: LogPrivateKey) -> None:
        if not name or any(c.isspace() for c in name) or "+" in name:
            raise ValueError(f"invalid signed-note key name {name!r}")
        self._key = key
        self.name = name
        self.key_id = note_key_id(key.public_key(), name)
        self.key_hint = self.key_id[:4]
        self.spki_id = key_id(key.public_key())

    @property
    def public_key(self) -> LogPublicKey:
        """The verification key."""
        return self._key.public_key()

    def sign(self, message: bytes) -> bytes:
        """Return a signature over ``message``: ASN.1 DER ECDSA-SHA256 (also used for SETs and
        SCTs), or pure Ed25519."""
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(message)
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))

    def derive_secret(self, label: bytes) -> bytes:
        """A secret only the holders of this private key can compute (HMAC-SHA256 keyed by the
        key's PKCS#8 bytes over ``label``): how the processes serving one log authenticate to
        each other without another file to distribute. Never log it."""
        der = self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return hmac.new(der, label, hashlib.sha256).digest()

    def ed25519_seed(self) -> bytes:
        """The Ed25519 private key's 32 bytes, for Ed25519ph (which ``cryptography`` lacks).
        Never log or store it."""
        if not isinstance(self._key, ed25519.Ed25519PrivateKey):
            raise TypeError("not an Ed25519 signer")
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign_checkpoint(self, checkpoint: Checkpoint) -> str:
        """Return the complete signed note for ``checkpoint``."""
        text = checkpoint.to_text()
        sig = base64.b64encode(self.key_hint + self.sign(text.encode())).decode()
        return f"{text}\n{_EM_DASH} {self.name} {sig}\n"
