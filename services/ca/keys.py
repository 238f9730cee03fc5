"""The CA's key and chain: generated on first start into ``<data_dir>/ca/``, or brought from files.

Generated layout (fulcio.md §4.4's documented profile): a root (KU certSign+crlSign, BC CA critical,
SKID, CN+O, no EKU) and an intermediate that signs leaves (certSign+crlSign, EKU codeSigning,
pathlen 0, SKID, AKI). Files: ``ca.key`` (the intermediate's key, 0600), ``root.key`` (0600, kept
only so the operator can reissue), ``chain.pem`` (intermediate, then root).

First start is crash-safe: everything is written into a fresh sibling directory which is then
renamed to ``ca/`` in one step, so a crash leaves either no CA or a complete one.

Every chain, generated or loaded, passes ``validate_chain``: the rules Fulcio enforces at start-up
(``ca.VerifyCertChain``) plus what sigstore clients need to verify leaves (clients.md §3).
A key held in a PKCS#11 token (``services.ca.pkcs11``) plugs in as a ``CertificateSigner``: it
passes the same ``validate_chain`` and signs through ``CAKeyMaterial.sign`` like an in-process key.
"""

from __future__ import annotations

import datetime
import enum
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.errors import OperatorError
from services.keys import write_private_key

__all__ = [
    "CAHash",
    "CAKey",
    "CAKeyError",
    "CAKeyMaterial",
    "CAKeyType",
    "CAPrivateKey",
    "CAPublicKey",
    "CertificateSigner",
    "generate",
    "load",
    "load_chain",
    "load_or_create",
    "read_secret",
    "validate_chain",
]

CAPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
CAPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

CAHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512

_EC_HASHES: dict[str, CAHash] = {
    "secp256r1": hashes.SHA256(),
    "secp384r1": hashes.SHA384(),
    "secp521r1": hashes.SHA512(),
}


class CAKeyError(OperatorError):
    """The CA key or chain is unusable; the message names the rule it breaks."""

    label = "CA key"


class CertificateSigner(Protocol):
    """A CA key held outside this process (a PKCS#11 token).

    pyca/cryptography signs only with keys it holds itself, so such a key signs whole certificate
    builders instead; ``services.ca.pkcs11.Pkcs11Signer`` is the implementation.
    """

    def public_key(self) -> CAPublicKey:
        """The key's public half (what the signing certificate must carry)."""
        ...

    def sign_certificate(
        self, builder: x509.CertificateBuilder, algorithm: CAHash
    ) -> x509.Certificate:
        """``builder`` signed with this key and ``algorithm``; verified before it is returned."""
        ...

    def close(self) -> None:
        """Release the token session; the signer cannot sign afterwards."""
        ...


CAKey = CAPrivateKey | CertificateSigner

# The generated CA's files under ``<data_dir>/ca/``. The root key is written for the operator
# (to reissue the intermediate) and read by nothing: it can live offline.
KEY_FILE = "ca.key"
CHAIN_FILE = "chain.pem"
ROOT_KEY_FILE = "root.key"


class CAKeyType(enum.StrEnum):
    """Key types for a generated CA. Ed25519 is not offered: sigstore clients reject such CAs."""

    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    def generate(self) -> CAPrivateKey:
        """A fresh private key of this type."""
        if self is CAKeyType.ECDSA_P256:
            return ec.generate_private_key(ec.SECP256R1())
        if self is CAKeyType.ECDSA_P384:
            return ec.generate_private_key(ec.SECP384R1())
        return rsa.generate_private_key(65537, 3072 if self is CAKeyType.RSA_3072 else 4096)


def _spki(key: CAKey | x509.Certificate) -> bytes:
    public = key.public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def signature_hash(key: CAKey) -> CAHash:
    """The hash Fulcio pairs with a CA key: by curve for ECDSA, SHA-256 for RSA."""
    public = key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return _EC_HASHES[public.curve.name]
    return hashes.SHA256()


@dataclass(frozen=True, slots=True)
class CAKeyMaterial:
    """A validated signing key and its chain (signing certificate first, root last)."""

    key: CAKey
    chain: tuple[x509.Certificate, ...]

    def __repr__(self) -> str:
        # Never let a stray log line or traceback print key material.
        return f"CAKeyMaterial(signing={self.signing_certificate.subject.rfc4514_string()!r})"

    @property
    def signing_certificate(self) -> x509.Certificate:
        """The certificate whose key signs leaves (the leaves' issuer)."""
        return self.chain[0]

    @property
    def root(self) -> x509.Certificate:
        """The self-signed root."""
        return self.chain[-1]

    @property
    def in_process(self) -> bool:
        """Whether pyca/cryptography holds the key here (else a token signs, see ``sign``)."""
        return isinstance(self.key, CAPrivateKey)

    @property
    def signature_hash(self) -> CAHash:
        """The hash used when this CA signs (ecdsa-with-SHA256/384/512 or sha256WithRSA)."""
        return signature_hash(self.key)

    def sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        """``builder`` signed by this CA with ``signature_hash``, in process or in the token."""
        if isinstance(self.key, CAPrivateKey):
            return builder.sign(self.key, self.signature_hash)
        return self.key.sign_certificate(builder, self.signature_hash)

    def close(self) -> None:
        """Release an external key's token session; nothing to do for an in-process key."""
        if not isinstance(self.key, CAPrivateKey):
            self.key.close()

    def chain_pem(self) -> list[str]:
        """Each chain certificate as PEM text (with its trailing newline), signing cert first."""
        return [c.public_bytes(serialization.Encoding.PEM).decode() for c in self.chain]


def _check_key_type(public: object, where: str) -> None:
    """Judge a key by its public half, which in-process and token keys alike can show."""
    if isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        raise CAKeyError(
            f"{where}: EdDSA CA keys are refused (sigstore clients cannot verify SCTs under them)"
        )
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.name not in _EC_HASHES:
            raise CAKeyError(f"{where}: curve {public.curve.name} is not P-256, P-384 or P-521")
        return
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise CAKeyError(f"{where}: RSA key of {public.key_size} bits, want at least 2048")
        return
    raise CAKeyError(f"{where}: key type {type(public).__name__} cannot be a CA key")


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def generate(
    now: datetime.datetime,
    *,
    key_type: CAKeyType = CAKeyType.ECDSA_P384,
    organization: str = "sigstead",
    years: int = 10,
) -> tuple[CAPrivateKey, CAPrivateKey, tuple[x509.Certificate, x509.Certificate]]:
    """Create a root and an intermediate: (root key, intermediate key, (intermediate, root))."""
    root_key, ca_key = key_type.generate(), key_type.generate()
    # Backdated a little so a client whose clock lags ours still sees a valid chain.
    start = now.replace(microsecond=0) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=365 * years)
    root_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} root"),
        ]
    )
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} intermediate"),
        ]
    )
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(root_ski, critical=False)
        .sign(root_key, signature_hash(root_key))
    )
    intermediate = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(root_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(_ca_key_usage(), critical=True)
        # codeSigning here is what lets Go's EKU chaining, and the CT log, accept the leaves.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), False
        )
        .sign(root_key, signature_hash(root_key))
    )
    return root_key, ca_key, (intermediate, root)


def validate_chain(key: CAKey, chain: tuple[x509.Certificate, ...], now: datetime.datetime) -> None:
    """Raise ``CAKeyError`` unless ``key`` and ``chain`` (signing cert first) can issue leaves."""
    if not chain:
        raise CAKeyError("the chain is empty; want signing certificate ... root")
    _check_key_type(key.public_key(), "CA key")
    if _spki(key) != _spki(chain[0]):
        raise CAKeyError("the CA key does not match the first certificate of the chain")
    for i, cert in enumerate(chain):
        where = f"certificate {i} ({cert.subject.rfc4514_string()})"
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            raise CAKeyError(f"{where}: no basicConstraints; a CA needs CA:TRUE") from None
        if not bc.value.ca or not bc.critical:
            raise CAKeyError(f"{where}: basicConstraints must be critical with CA:TRUE")
        # Path length counts the CA certificates below this one (chain[:i]).
        if bc.value.path_length is not None and bc.value.path_length < i:
            raise CAKeyError(f"{where}: pathlen {bc.value.path_length} forbids {i} CA(s) below")
        try:
            ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            raise CAKeyError(f"{where}: no keyUsage; want keyCertSign") from None
        if not ku.key_cert_sign:
            raise CAKeyError(f"{where}: keyUsage lacks keyCertSign")
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            eku = None
        if eku is not None and not {
            ExtendedKeyUsageOID.CODE_SIGNING,
            ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
        } & set(eku):
            raise CAKeyError(f"{where}: extendedKeyUsage without codeSigning breaks EKU chaining")
        if i == 0 and len(chain) > 1 and eku is None:
            raise CAKeyError(f"{where}: an intermediate that signs leaves needs EKU codeSigning")
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise CAKeyError(
                f"{where}: valid {cert.not_valid_before_utc} to {cert.not_valid_after_utc}, "
                f"not at {now}"
            )
        issuer = chain[min(i + 1, len(chain) - 1)]
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
            what = "self-signed" if issuer is cert else f"issued by certificate {i + 1}"
            raise CAKeyError(f"{where}: not {what}: {exc}") from None
    try:
        chain[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        # Leaves need an AKI (sigstore-python refuses leaves without one), which needs this SKID.
        raise CAKeyError("the signing certificate has no subjectKeyIdentifier") from None


def _load_key(path: Path, password: bytes | None) -> CAPrivateKey:
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        raise CAKeyError(f"{path}: {exc.strerror}") from None
    if mode & 0o077:
        raise CAKeyError(f"{path}: permissions {mode:o} are too open, want 600")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # The exception text says whether a password was missing or wrong; never the key.
        raise CAKeyError(f"{path}: cannot load the private key: {exc}") from None
    _check_key_type(key.public_key(), str(path))
    assert isinstance(key, CAPrivateKey)
    return key


def load_chain(chain_path: Path) -> tuple[x509.Certificate, ...]:
    """The PEM certificates of ``chain_path`` in file order (signing certificate first)."""
    try:
        return tuple(x509.load_pem_x509_certificates(chain_path.read_bytes()))
    except OSError as exc:
        raise CAKeyError(f"{chain_path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CAKeyError(f"{chain_path}: not a PEM certificate chain: {exc}") from None


def read_secret(
    path: Path | None, env_var: str, environ: Mapping[str, str] | None = None
) -> bytes | None:
    """A PIN or password from ``path`` (0600 or stricter) or else the ``env_var`` variable.

    Never from the command line, where every local user can read it in ``ps``. One trailing
    newline is dropped from the file (``echo PIN > file``). ``None`` when neither is given.
    Error messages name the file or variable, never the secret.
    """
    if path is not None:
        try:
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise CAKeyError(f"{path}: permissions {mode:o} are too open, want 600")
            data = path.read_bytes()
        except OSError as exc:
            raise CAKeyError(f"{path}: {exc.strerror}") from None
        secret = data.removesuffix(b"\n").removesuffix(b"\r")
        if not secret:
            raise CAKeyError(f"{path}: the file is empty")
        return secret
    value = (os.environ if environ is None else environ).get(env_var)
    if value is None:
        return None
    if not value:
        raise CAKeyError(f"{env_var} is set but empty")
    return value.encode()


def load(
    key_path: Path,
    chain_path: Path,
    now: datetime.datetime,
    *,
    password: bytes | None = None,
) -> CAKeyMaterial:
    """Load an operator's PEM key (optionally encrypted, like fileca) and PEM chain, validated."""
    key = _load_key(key_path, password)
    chain = load_chain(chain_path)
    validate_chain(key, chain, now)
    return CAKeyMaterial(key, chain)


def load_or_create(
    data_dir: Path,
    now: datetime.datetime,
    *,
    key_type: CAKeyType = CAKeyType.ECDSA_P384,
    organization: str = "sigstead",
) -> CAKeyMaterial:
    """Load ``<data_dir>/ca/{ca.key,chain.pem}``; generate root and intermediate on first start."""
    ca_dir = data_dir / "ca"
    if not ca_dir.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        staging = data_dir / f".ca-{secrets.token_hex(8)}"
        staging.mkdir(mode=0o700)
        try:
            root_key, ca_key, chain = generate(now, key_type=key_type, organization=organization)
            write_private_key(staging / ROOT_KEY_FILE, root_key)
            write_private_key(staging / KEY_FILE, ca_key)
            pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
            fd = os.open(staging / CHAIN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, pem)
                os.fsync(fd)
            finally:
                os.close(fd)
            # From here on a crash leaves a complete CA (rename is atomic) or none at all.
            try:
                os.rename(staging, ca_dir)
            except OSError:
                # Lost a first-start race if another process's CA is in place: use it.
                if not (ca_dir / CHAIN_FILE).exists():
                    raise
            else:
                dir_fd = os.open(data_dir, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already after a rename
    return load(ca_dir / KEY_FILE, ca_dir / CHAIN_FILE, now)
