"""The TSA's key and certificate chain: generated on first start, or brought by the operator.

Every chain, generated or loaded, must pass ``validate_chain`` (fulcio.md §7.4: the rules
timestamp-authority enforces at start-up and sigstore clients rely on when verifying).
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.keys import load_private_key, write_private_key

__all__ = ["ChainError", "generate", "load", "load_or_create", "validate_chain"]


class ChainError(Exception):
    """The TSA key or chain is unusable; the message names the rule it breaks."""


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstead"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def generate(
    now: datetime.datetime, *, years: int = 10
) -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
    """Create a P-256 root CA and TSA leaf valid from ``now``: (root key, leaf key, chain)."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    start = now - datetime.timedelta(minutes=5)
    end = now + datetime.timedelta(days=365 * years)
    root = (
        x509.CertificateBuilder()
        .subject_name(_name("sigstead TSA root"))
        .issuer_name(_name("sigstead TSA root"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("sigstead TSA"))
        .issuer_name(root.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # Exactly one EKU, timeStamping, critical (RFC 3161 §2.3; sigstore clients check it).
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    return root_key, leaf_key, [leaf, root]


def validate_chain(key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate]) -> None:
    """Raise ``ChainError`` unless the chain is one timestamp-authority would accept."""
    if len(chain) < 2:
        raise ChainError(f"the chain has {len(chain)} certificate(s), want at least 2 (leaf..root)")
    leaf = chain[0]
    if leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise ChainError("the TSA key does not match the leaf certificate")
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        raise ChainError("the leaf has no extended key usage; want timeStamping") from None
    if list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise ChainError("the leaf must have exactly one extended key usage, timeStamping")
    if not eku.critical:
        raise ChainError("the leaf's extended key usage extension must be critical")
    for i, cert in enumerate(chain):
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            bc = None
        is_ca = bool(bc and bc.ca)
        if i == 0 and is_ca:
            raise ChainError("the leaf must not be a CA")
        if i > 0 and not is_ca:
            raise ChainError(f"certificate {i} of the chain is not a CA")
        issuer = chain[min(i + 1, len(chain) - 1)]
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ChainError(
                f"certificate {i} is not issued by certificate {i + 1}: {exc}"
            ) from None


def _pem_chain(chain: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def load(
    key_path: Path, chain_path: Path
) -> tuple[ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
    """Load an operator's key and PEM chain (leaf first), validated."""
    key = load_private_key(key_path)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ChainError(f"{key_path}: the TSA key must be ECDSA (sigstore-js requires it)")
    chain = x509.load_pem_x509_certificates(chain_path.read_bytes())
    validate_chain(key, chain)
    return key, chain


def load_or_create(
    directory: Path, now: datetime.datetime
) -> tuple[ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
    """Load ``DIR/tsa.key`` + ``DIR/tsa-chain.pem``, generating both on first start."""
    key_path, chain_path = directory / "tsa.key", directory / "tsa-chain.pem"
    if not key_path.exists():
        root_key, leaf_key, chain = generate(now)
        # The root key signs nothing after this; it is kept (0600) so the operator can reissue.
        write_private_key(directory / "tsa-root.key", root_key)
        write_private_key(key_path, leaf_key)
        chain_path.write_bytes(_pem_chain(chain))
    return load(key_path, chain_path)
