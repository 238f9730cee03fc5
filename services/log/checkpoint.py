"""Checkpoints as C2SP signed notes (rekor.md §4).

A checkpoint commits to a tree: ``origin``, ``size`` and ``root``. Its signed form is::

    <origin>\\n<size>\\n<base64 root>\\n[<extension line>\\n…]
    \\n
    — <key name> <base64(key_hint[4] ‖ signature)>\\n

The key hint is the first four bytes of SHA-256 over the DER SubjectPublicKeyInfo (which is also
the Rekor ``logID``), for every key type, as Rekor v1 does.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["Checkpoint", "CheckpointSigner", "key_id"]

_EM_DASH = "\u2014"


def key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """Return SHA-256 of the DER SubjectPublicKeyInfo: Rekor's ``logID`` and the CT log ID."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


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
    """Signs checkpoints with the log's ECDSA key under a key name (the public URL's host)."""

    __slots__ = ("_key", "key_hint", "key_id", "name")

    def __init__(self, name: str, key: ec.EllipticCurvePrivateKey) -> None:
        if not name or any(c.isspace() for c in name) or "+" in name:
            raise ValueError(f"invalid signed-note key name {name!r}")
        self._key = key
        self.name = name
        self.key_id = key_id(key.public_key())
        self.key_hint = self.key_id[:4]

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The verification key."""
        return self._key.public_key()

    def sign(self, message: bytes) -> bytes:
        """Return an ASN.1 DER ECDSA-SHA256 signature over ``message`` (also used for SETs)."""
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))

    def sign_checkpoint(self, checkpoint: Checkpoint) -> str:
        """Return the complete signed note for ``checkpoint``."""
        text = checkpoint.to_text()
        sig = base64.b64encode(self.key_hint + self.sign(text.encode())).decode()
        return f"{text}\n{_EM_DASH} {self.name} {sig}\n"
