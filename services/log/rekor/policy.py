"""The client signing-algorithm policy Rekor applies to hashedrekord entries.

Rekor's ``--client-signing-algorithms`` lists the (key type, digest) pairs a hashedrekord may
use; anything else is refused with ``entry algorithms are not allowed`` *after* the signature
has verified. The names are sigstore's algorithm-registry names. DSSE and intoto entries are not
subject to the policy (Rekor only checks hashedrekord).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from services.log.rekor.errors import AlgorithmNotAllowed

__all__ = ["DEFAULT_ALGORITHM_POLICY", "AlgorithmPolicy", "SigningAlgorithm", "classify"]


class SigningAlgorithm(enum.Enum):
    """A (key type, digest) pair, named as sigstore's algorithm registry names it."""

    RSA_PKCS1_2048_SHA256 = "rsa-sign-pkcs1-2048-sha256"
    RSA_PKCS1_3072_SHA256 = "rsa-sign-pkcs1-3072-sha256"
    RSA_PKCS1_4096_SHA256 = "rsa-sign-pkcs1-4096-sha256"
    ECDSA_P256_SHA256 = "ecdsa-sha2-256-nistp256"
    ECDSA_P384_SHA384 = "ecdsa-sha2-384-nistp384"
    ECDSA_P521_SHA512 = "ecdsa-sha2-512-nistp521"
    ED25519 = "ed25519"
    ED25519_PH = "ed25519-ph"


_RSA_SIZES = {
    2048: SigningAlgorithm.RSA_PKCS1_2048_SHA256,
    3072: SigningAlgorithm.RSA_PKCS1_3072_SHA256,
    4096: SigningAlgorithm.RSA_PKCS1_4096_SHA256,
}
_EC = {
    ("secp256r1", "sha256"): SigningAlgorithm.ECDSA_P256_SHA256,
    ("secp384r1", "sha384"): SigningAlgorithm.ECDSA_P384_SHA384,
    ("secp521r1", "sha512"): SigningAlgorithm.ECDSA_P521_SHA512,
}


def classify(key: PublicKeyTypes, hash_name: str) -> SigningAlgorithm | None:
    """Name the algorithm a (key, digest name) pair is, or None when the registry has no name."""
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_SIZES.get(key.key_size) if hash_name == "sha256" else None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _EC.get((key.curve.name, hash_name))
    if isinstance(key, ed25519.Ed25519PublicKey):
        # hashedrekord always carries a digest, so Ed25519 there is the pre-hashed variant.
        return SigningAlgorithm.ED25519_PH if hash_name == "sha512" else None
    return None


@dataclass(frozen=True, slots=True)
class AlgorithmPolicy:
    """The set of permitted algorithms; ``require`` enforces it for one key and digest name."""

    allowed: frozenset[SigningAlgorithm]

    @classmethod
    def from_names(cls, names: Iterable[str]) -> AlgorithmPolicy:
        """Build a policy from registry names such as ``ecdsa-sha2-256-nistp256``.

        Raises ValueError naming the first unknown name (a configuration mistake must not be
        silently ignored).
        """
        allowed: set[SigningAlgorithm] = set()
        for name in names:
            try:
                allowed.add(SigningAlgorithm(name))
            except ValueError:
                known = ", ".join(a.value for a in SigningAlgorithm)
                raise ValueError(f"unknown signing algorithm {name!r}; known: {known}") from None
        return cls(frozenset(allowed))

    def require(self, key: PublicKeyTypes, hash_name: str) -> None:
        """Return None when the (key, digest) pair is allowed; raise ``AlgorithmNotAllowed``."""
        algorithm = classify(key, hash_name)
        if algorithm is None or algorithm not in self.allowed:
            raise AlgorithmNotAllowed()


DEFAULT_ALGORITHM_POLICY = AlgorithmPolicy(frozenset(SigningAlgorithm))
"""Rekor's default ``--client-signing-algorithms``: every algorithm listed above."""
