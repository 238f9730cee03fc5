"""Ed25519ph signatures (RFC 8032 §5.1 with phflag = 1) over a SHA-512 digest.

Rekor's hashedrekord verifies an Ed25519 signature over the client's SHA-512 *digest* as
Ed25519ph (Go's ``ed25519.VerifyWithOptions`` with ``Hash: crypto.SHA512``), because the server
never sees the message. ``cryptography`` only implements pure Ed25519, so this uses PyCryptodome,
whose EdDSA implementation supports the pre-hash variant (its curve arithmetic is in C).
"""

from __future__ import annotations

from Crypto.Hash import SHA512
from Crypto.Signature import eddsa

__all__ = ["InvalidEd25519phSignature", "sign_ed25519ph", "verify_ed25519ph"]


class InvalidEd25519phSignature(ValueError):
    """The signature does not verify (message mirrors Go's ``ed25519: invalid signature``)."""


class _Prehash(SHA512.SHA512Hash):
    """A SHA-512 "hash object" that already holds its digest.

    PyCryptodome selects Ed25519ph when handed a ``SHA512Hash`` and only ever calls
    ``digest()`` on it; the server has the digest but not the message that produced it.
    """

    def __init__(self, digest: bytes) -> None:  # deliberately no super().__init__: no state
        self._prehash = digest

    def digest(self) -> bytes:
        return self._prehash


def verify_ed25519ph(public_key: bytes, signature: bytes, prehash: bytes) -> None:
    """Verify an Ed25519ph ``signature`` over ``prehash`` (= SHA-512 of the message).

    Preconditions checked first: a 32-byte key, a 64-byte signature, a 64-byte prehash.
    Raises ``InvalidEd25519phSignature`` on any failure; returns None when the signature holds.
    """
    if len(public_key) != 32:
        raise InvalidEd25519phSignature(f"ed25519: bad public key length: {len(public_key)}")
    if len(prehash) != 64:
        raise InvalidEd25519phSignature(
            f"ed25519: expected SHA-512 digest of 64 bytes, got {len(prehash)}"
        )
    if len(signature) != 64:
        raise InvalidEd25519phSignature("ed25519: invalid signature")
    try:
        key = eddsa.import_public_key(public_key)
    except ValueError:
        raise InvalidEd25519phSignature("ed25519: invalid public key") from None
    verifier = eddsa.new(key, "rfc8032")
    try:
        verifier.verify(_Prehash(prehash), signature)
    except ValueError:
        raise InvalidEd25519phSignature("ed25519: invalid signature") from None


def sign_ed25519ph(seed: bytes, message: bytes) -> bytes:
    """Sign ``message`` with Ed25519ph under the 32-byte private key ``seed``: what an Ed25519
    signer of a hashedrekord sends (a Rekor v2 log's genesis entry, when its key is Ed25519)."""
    signer = eddsa.new(eddsa.import_private_key(seed), "rfc8032")
    return bytes(signer.sign(SHA512.new(message)))
