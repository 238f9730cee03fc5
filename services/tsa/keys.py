"""The TSA's key and certificate chain: generated on first start, or brought by the operator.

Every chain, generated or loaded, passes ``validate_chain``: the start-up rules of
timestamp-authority (fulcio.md §7.4), which are also what sigstore clients rely on when they
verify a token.

Layout of a generated ``<data_dir>/tsa/`` (keys 0600, directory 0700)::

    tsa.key        the TSA leaf's P-256 private key (PKCS#8 PEM), the only key that signs
    tsa-chain.pem  leaf then root (PEM): what /api/v1/timestamp/certchain serves
    tsa-root.key   the root CA key; kept only so the operator can re-issue the leaf
"""

from __future__ import annotations

import datetime
import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.errors import OperatorError
from services.keys import load_private_key, write_private_key

__all__ = [
    "CHAIN_FILE",
    "KEY_FILE",
    "ROOT_KEY_FILE",
    "ChainError",
    "generate",
    "load",
    "load_or_create",
    "validate_chain",
]

_logger = logging.getLogger(__name__)

KEY_FILE = "tsa.key"
CHAIN_FILE = "tsa-chain.pem"
ROOT_KEY_FILE = "tsa-root.key"


class ChainError(OperatorError):
    """The TSA key or chain is unusable; the message names the rule it breaks."""


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstead"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def generate(
    now: datetime.datetime, *, years: int = 10
) -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
    """Create a P-256 root CA and a TSA leaf valid from ``now``: (root key, leaf key, chain).

    Validity starts five minutes early so that a verifier whose clock is slightly behind
    still accepts the first tokens.
    """
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
        .add_extension(_key_usage(cert_sign=True), critical=True)
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
        .add_extension(_key_usage(digital_signature=True), critical=True)
        # Exactly one EKU, timeStamping, critical: RFC 3161 §2.3, and rfc3161-client checks it.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    return root_key, leaf_key, [leaf, root]


def _eku(cert: x509.Certificate) -> x509.Extension[x509.ExtendedKeyUsage] | None:
    try:
        return cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def validate_chain(
    key: ec.EllipticCurvePrivateKey,
    chain: Sequence[x509.Certificate],
    now: datetime.datetime,
    *,
    enforce_intermediate_eku: bool = True,
) -> None:
    """Raise ``ChainError`` unless timestamp-authority would start with this key and chain.

    ``chain`` is leaf first. The rules: at least two certificates; the key is ECDSA and is the
    leaf's; the leaf has exactly one EKU, timeStamping, in a critical extension, and is not a
    CA; every other certificate is a CA, and intermediates carry timeStamping too (unless
    ``enforce_intermediate_eku`` is off); each certificate is signed by the next, the last
    being the trust anchor; and every certificate is valid at ``now``, since a token whose
    genTime lies outside its chain's validity verifies nowhere.
    """
    if len(chain) < 2:
        raise ChainError(
            f"the chain has {len(chain)} certificate(s), want at least 2 (leaf ... root); "
            "sigstore clients skip TSA chains without a root"
        )
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ChainError("the TSA key must be ECDSA: sigstore-js verifies no other signatures")
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ) != key.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise ChainError("the TSA key does not match the leaf certificate")
    eku = _eku(leaf)
    if eku is None:
        raise ChainError("the leaf has no extended key usage extension; want timeStamping")
    if list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        names = ", ".join(o.dotted_string for o in eku.value)
        raise ChainError(f"the leaf must have exactly one EKU, timeStamping; it has {names}")
    if not eku.critical:
        raise ChainError("the leaf's extended key usage extension must be critical")
    if _is_ca(leaf):
        raise ChainError("the leaf must not be a CA")
    for i, cert in enumerate(chain[1:], start=1):
        if not _is_ca(cert):
            raise ChainError(f"certificate {i} of the chain is not a CA")
        if enforce_intermediate_eku and i < len(chain) - 1:
            ca_eku = _eku(cert)
            if ca_eku is None or ExtendedKeyUsageOID.TIME_STAMPING not in ca_eku.value:
                raise ChainError(f"intermediate {i} lacks the timeStamping EKU")
    for i, cert in enumerate(chain):
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise ChainError(
                f"certificate {i} is valid {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} to "
                f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}, not at {now:%Y-%m-%dT%H:%M:%SZ}"
            )
        if i + 1 < len(chain):
            try:
                cert.verify_directly_issued_by(chain[i + 1])
            except (ValueError, TypeError, InvalidSignature) as exc:
                reason = str(exc) or "bad signature"
                raise ChainError(
                    f"certificate {i} is not issued by certificate {i + 1}: {reason}"
                ) from None


def pem_chain(chain: Sequence[x509.Certificate]) -> bytes:
    """The chain as concatenated PEM, in the given order."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def load(
    key_path: Path, chain_path: Path, now: datetime.datetime
) -> tuple[ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
    """Load an operator's key (PEM, mode 0600) and PEM chain (leaf first), validated at ``now``."""
    key = load_private_key(key_path)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ChainError(f"{key_path}: the TSA key must be ECDSA (sigstore-js requires it)")
    try:
        chain = x509.load_pem_x509_certificates(chain_path.read_bytes())
    except ValueError as exc:
        raise ChainError(f"{chain_path}: not a PEM certificate chain: {exc}") from None
    validate_chain(key, chain, now)
    return key, chain


def load_or_create(
    directory: Path, now: datetime.datetime
) -> tuple[ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
    """Load ``directory``'s key and chain, generating both on first start.

    First start builds everything in a hidden sibling directory and renames it into place,
    so ``directory`` either holds a complete set or does not exist: a crash mid-way leaves
    only a ``.<name>.partial-*`` sibling, which is ignored. Two processes racing on a first
    start (a worker pool) both build, one rename wins, and the loser loads the winner's keys.
    """
    if not (directory / CHAIN_FILE).exists():
        _create(directory, now)
    return load(directory / KEY_FILE, directory / CHAIN_FILE, now)


def _create(directory: Path, now: datetime.datetime) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = directory.parent / f".{directory.name}.partial-{secrets.token_hex(8)}"
    partial.mkdir(mode=0o700)
    try:
        root_key, leaf_key, chain = generate(now)
        write_private_key(partial / ROOT_KEY_FILE, root_key)
        write_private_key(partial / KEY_FILE, leaf_key)
        fd = os.open(partial / CHAIN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, pem_chain(chain))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # rename(2) is atomic and replaces at most an *empty* directory. From here on a
            # crash leaves either no directory or a complete one.
            partial.rename(directory)
        except OSError:
            if (directory / CHAIN_FILE).exists():
                # Lost a first-start race: another process's keys are in place; use them.
                _logger.info("another process created the TSA keys in %s first", directory)
                return
            raise ChainError(
                f"{directory} exists without {CHAIN_FILE}, so it is not a TSA key directory. "
                "Remove it to generate a new TSA, or give your own key and chain."
            ) from None
        _fsync_dir(directory.parent)
        _logger.info("generated a TSA root and leaf in %s", directory)
    finally:
        if partial.exists():
            shutil.rmtree(partial)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
