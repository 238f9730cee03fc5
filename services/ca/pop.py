"""Proof of possession: the client's public key and evidence it holds the private key (§2).

Two request forms:

- ``publicKeyRequest``: a public key plus a signature over a token-bound message. Fulcio requires
  the message to be ``Principal.name``; clients differ (email vs ``sub``), so every message in
  ``Principal.proof_messages`` is accepted. Hash by key: P-256 SHA-256, P-384 SHA-384, P-521
  SHA-512, RSA PKCS#1 v1.5 SHA-256, Ed25519 pure. ECDSA signatures may be DER or raw ``r||s``.
- ``certificateSigningRequest``: a PEM CSR; only its key and self-signature matter, and the
  (key, hash) pair of that signature must be in the client signing-algorithm allow-list.

Leaf key types are Fulcio's: ECDSA P-256/384/521, RSA 2048/3072/4096 (exact sizes), Ed25519.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from services.ca.errors import (
    CAError,
    InsecurePublicKey,
    InvalidCSR,
    InvalidProofOfPossession,
    InvalidPublicKey,
    SigningAlgorithmNotPermitted,
)
from services.ca.identity import Principal

__all__ = [
    "DEFAULT_CLIENT_SIGNING_ALGORITHMS",
    "LeafPublicKey",
    "check_leaf_key",
    "parse_csr",
    "parse_public_key",
    "verify_csr",
    "verify_proof_of_possession",
]

_logger = logging.getLogger(__name__)

LeafPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

# Fulcio's --client-signing-algorithms default.
DEFAULT_CLIENT_SIGNING_ALGORITHMS: frozenset[str] = frozenset(
    {
        "ecdsa-sha2-256-nistp256",
        "ecdsa-sha2-384-nistp384",
        "ecdsa-sha2-512-nistp521",
        "rsa-sign-pkcs1-2048-sha256",
        "rsa-sign-pkcs1-3072-sha256",
        "rsa-sign-pkcs1-4096-sha256",
        "ed25519",
    }
)

_CURVES: dict[str, tuple[str, hashes.HashAlgorithm]] = {
    "secp256r1": ("nistp256", hashes.SHA256()),
    "secp384r1": ("nistp384", hashes.SHA384()),
    "secp521r1": ("nistp521", hashes.SHA512()),
}
_RSA_SIZES = frozenset({2048, 3072, 4096})
_MAX_POP_SIGNATURE = 1024


def check_leaf_key(key: object) -> LeafPublicKey:
    """Return ``key`` if Fulcio would certify it, else raise ``InsecurePublicKey``."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            raise InsecurePublicKey(f"ECDSA curve {key.curve.name} is not allowed")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size not in _RSA_SIZES:
            raise InsecurePublicKey(f"RSA key size {key.key_size} is not 2048, 3072 or 4096")
        # Exponent 3 (or any below F4) invites forgeries against lax PKCS#1 v1.5 verifiers
        # of the certificate we would issue; the CA/Browser Forum asks for at least 65537.
        if key.public_numbers().e < 65537:
            raise InsecurePublicKey(f"RSA public exponent {key.public_numbers().e} is below 65537")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise InsecurePublicKey(f"key type {type(key).__name__} is not allowed")


def parse_public_key(content: str | bytes) -> LeafPublicKey:
    """Parse PEM ``PUBLIC KEY`` (PKIX), PEM ``RSA PUBLIC KEY`` (PKCS#1), or raw PKIX DER."""
    data = content.encode() if isinstance(content, str) else content
    if not data.strip():
        raise InvalidPublicKey("empty public key")
    key: object
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data.strip())
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidPublicKey(f"cannot parse public key: {exc}") from None
    return check_leaf_key(key)


def _algorithm_name(key: LeafPublicKey, hash_algorithm: hashes.HashAlgorithm | None) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519" if hash_algorithm is None else f"ed25519-with-{hash_algorithm.name}"
    assert hash_algorithm is not None
    bits = hash_algorithm.digest_size * 8
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ecdsa-sha2-{bits}-{_CURVES[key.curve.name][0]}"
    return f"rsa-sign-pkcs1-{key.key_size}-sha{bits}"


def _check_algorithm(
    key: LeafPublicKey, hash_algorithm: hashes.HashAlgorithm | None, allowed: Collection[str]
) -> None:
    name = _algorithm_name(key, hash_algorithm)
    if name not in allowed:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key_desc = "ECDSA P-" + _CURVES[key.curve.name][0].removeprefix("nistp")
        elif isinstance(key, rsa.RSAPublicKey):
            key_desc = f"RSA-{key.key_size}"
        else:
            key_desc = "Ed25519"
        hash_name = hash_algorithm.name if hash_algorithm is not None else "none"
        raise SigningAlgorithmNotPermitted(key_desc, hash_name)


def _ecdsa_candidates(signature: bytes) -> list[bytes]:
    # DER first; a raw IEEE P1363 r||s (even length, at most 2*66 bytes) as the fallback.
    out = [signature]
    if signature and len(signature) % 2 == 0 and len(signature) <= 132:
        half = len(signature) // 2
        r = int.from_bytes(signature[:half], "big")
        s = int.from_bytes(signature[half:], "big")
        out.append(encode_dss_signature(r, s))
    return out


def _verify_message(key: LeafPublicKey, signature: bytes, message: bytes) -> None:
    """Raise ``InvalidSignature`` unless ``signature`` by ``key`` covers ``message`` (for ECDSA,
    in DER or raw r||s form)."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
            return
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            return
        hash_algorithm = _CURVES[key.curve.name][1]
        for candidate in _ecdsa_candidates(signature):
            try:
                key.verify(candidate, message, ec.ECDSA(hash_algorithm))
                return
            except (InvalidSignature, ValueError):
                continue
    except ValueError:
        pass  # a malformed signature signs nothing
    raise InvalidSignature


def verify_proof_of_possession(
    key: LeafPublicKey,
    signature: bytes,
    principal: Principal,
    *,
    allowed: Collection[str] = DEFAULT_CLIENT_SIGNING_ALGORITHMS,
) -> None:
    """Raise unless ``signature`` is ``key``'s signature over one of the principal's messages."""
    try:
        if not signature or len(signature) > _MAX_POP_SIGNATURE:
            raise InvalidProofOfPossession(f"proof of possession is {len(signature)} bytes")
        for message in principal.proof_messages:
            try:
                _verify_message(key, signature, message.encode())
            except InvalidSignature:
                continue
            hash_algorithm = (
                None
                if isinstance(key, ed25519.Ed25519PublicKey)
                else hashes.SHA256()
                if isinstance(key, rsa.RSAPublicKey)
                else _CURVES[key.curve.name][1]
            )
            _check_algorithm(key, hash_algorithm, allowed)
            return
        raise InvalidProofOfPossession(
            f"proof of possession does not sign any of {list(principal.proof_messages)}"
        )
    except CAError as exc:
        _logger.debug("proof of possession refused: %s", exc.detail)
        raise


def parse_csr(pem: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM CSR (``CERTIFICATE REQUEST`` or ``NEW CERTIFICATE REQUEST``); DER is refused."""
    if b"-----BEGIN" not in pem:
        raise InvalidCSR("CSR is not PEM")
    try:
        return x509.load_pem_x509_csr(pem.strip())
    except ValueError as exc:
        raise InvalidCSR(f"cannot parse CSR: {exc}") from None


def verify_csr(
    csr: x509.CertificateSigningRequest,
    *,
    allowed: Collection[str] = DEFAULT_CLIENT_SIGNING_ALGORITHMS,
) -> LeafPublicKey:
    """Return the CSR's public key once its self-signature and algorithm pass; else raise.

    The subject and any requested extensions are ignored, as in Fulcio.
    """
    try:
        try:
            key = check_leaf_key(csr.public_key())
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise InvalidPublicKey(f"cannot parse the CSR's public key: {exc}") from None
        if csr.signature_algorithm_parameters is not None and isinstance(
            csr.signature_algorithm_parameters, padding.PSS
        ):
            raise InvalidProofOfPossession("RSA-PSS CSR signatures are not accepted")
        try:
            hash_algorithm = csr.signature_hash_algorithm
        except UnsupportedAlgorithm as exc:
            raise InvalidProofOfPossession(f"unrecognized signature algorithm: {exc}") from None
        if not csr.is_signature_valid:
            raise InvalidProofOfPossession("the CSR is not signed by its own key")
        _check_algorithm(key, hash_algorithm, allowed)
        return key
    except CAError as exc:
        _logger.debug("CSR refused: %s", exc.detail)
        raise
