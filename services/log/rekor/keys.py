"""Verification material (PEM key, certificate or chain), Go-style chains and signature checks.

This is the Python side of Rekor's ``pkg/pki/x509``: ``parse_material`` is ``NewPublicKey``
(trim, first PEM block, a chain when more follows, at most 10 certificates), ``canonical_pem`` is
``CanonicalValue`` (the key re-marshalled as ``PUBLIC KEY``, certificates as their original DER),
``verify_chain`` is ``verifyCertChain`` (leaf to last element, evaluated at the leaf's
``notBefore``, any EKU), and the two ``verify_*`` functions are sigstore's verifiers as Rekor
loads them: over a client-supplied digest for hashedrekord (Ed25519 as Ed25519ph), over a message
hashed with SHA-256 for DSSE (Ed25519 pure).

Every failure raises a ``ValueError`` subclass whose ``str()`` is the Go error text; the
entry-kind modules wrap them into the ``RekorError`` that fits where the failure happened.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto.core import UTF8String
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa, x448
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import ExtensionOID

from services.log.rekor._go import pem_decode, pem_encode
from services.log.rekor.ed25519ph import InvalidEd25519phSignature, verify_ed25519ph

__all__ = [
    "MAX_CHAIN_LENGTH",
    "ChainError",
    "ChainTooLong",
    "Identities",
    "MaterialError",
    "MaterialKind",
    "MessageVerifier",
    "SignatureError",
    "UnsupportedKeyType",
    "VerificationMaterial",
    "message_verifier",
    "parse_material",
    "verify_chain",
    "verify_digest_signature",
]

_logger = logging.getLogger(__name__)

MAX_CHAIN_LENGTH = 10
"""Rekor parses at most this many certificates (``UnmarshalCertificatesFromPEMLimited(.., 10)``)."""

_SUPPORTED_CURVES = (ec.SECP224R1, ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_MIN_RSA_BITS = 1024  # Go >= 1.24 crypto/rsa refuses smaller keys
_MAX_RSA_BITS = 16384  # Go's crypto/rsa upper bound for verification
_SIGSTORE_OTHERNAME_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")
# Critical extensions Go's crypto/x509 understands; any other critical extension fails Verify.
_HANDLED_CRITICAL = frozenset(
    {
        ExtensionOID.KEY_USAGE,
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.NAME_CONSTRAINTS,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.POLICY_CONSTRAINTS,
        ExtensionOID.POLICY_MAPPINGS,
        ExtensionOID.INHIBIT_ANY_POLICY,
    }
)
_INSECURE_CERT_HASHES = (hashes.SHA1, hashes.MD5)


class MaterialError(ValueError):
    """The bytes are not a parseable PEM public key, certificate or certificate chain."""


class ChainTooLong(MaterialError):
    """More than ``MAX_CHAIN_LENGTH`` certificates were given."""


class UnsupportedKeyType(MaterialError):
    """The key parses but no verifier exists for its type (Go: ``unsupported public key type``)."""


class ChainError(ValueError):
    """The certificate chain does not verify."""


class SignatureError(ValueError):
    """A signature does not verify with the given key."""


class MaterialKind(enum.Enum):
    """What the PEM input contained, which decides how it is canonicalized."""

    PUBLIC_KEY = "public key"
    CERTIFICATE = "certificate"
    CHAIN = "certificate chain"


@dataclass(frozen=True, slots=True)
class Identities:
    """Subject alternative names of a leaf certificate, as Rekor's ``Subjects()`` lists them."""

    emails: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    other_names: tuple[str, ...] = ()

    def all(self) -> tuple[str, ...]:
        """Every SAN value, in ``GetSubjectAlternateNames`` order (DNS, email, IP, URI, other)."""
        return self.dns_names + self.emails + self.ip_addresses + self.uris + self.other_names


@dataclass(frozen=True, slots=True)
class VerificationMaterial:
    """A parsed public key, certificate or chain (leaf first), with its canonical PEM."""

    kind: MaterialKind
    public_key: PublicKeyTypes
    certificates: tuple[x509.Certificate, ...]
    certificate_ders: tuple[bytes, ...]
    spki_der: bytes

    @property
    def canonical_pem(self) -> bytes:
        """Rekor's ``CanonicalValue``: Go-style PEM of the SPKI, or of each certificate's DER."""
        if self.kind is MaterialKind.PUBLIC_KEY:
            return pem_encode("PUBLIC KEY", self.spki_der)
        return b"".join(pem_encode("CERTIFICATE", der) for der in self.certificate_ders)

    @property
    def spki_sha256(self) -> str:
        """Lowercase hex SHA-256 of the (leaf) key's DER SubjectPublicKeyInfo."""
        return hashlib.sha256(self.spki_der).hexdigest()

    @property
    def leaf_certificate_sha256(self) -> str | None:
        """Lowercase hex SHA-256 of the leaf certificate's DER, or None for a bare key."""
        if not self.certificate_ders:
            return None
        return hashlib.sha256(self.certificate_ders[0]).hexdigest()

    def identities(self) -> Identities:
        """SANs of the leaf certificate (empty for a bare key); malformed SANs yield nothing."""
        if not self.certificates:
            return Identities()
        return _identities(self.certificates[0])


def _trim_space(data: bytes) -> bytes:
    return data.strip(b" \t\n\r\v\f")


def _parse_public_key(der: bytes) -> PublicKeyTypes:
    try:
        key = serialization.load_der_public_key(der)
    except UnsupportedAlgorithm:
        raise MaterialError("x509: unknown public key algorithm") from None
    except ValueError as exc:
        raise MaterialError(f"x509: failed to parse public key: {exc}") from None
    return _check_key_type(key)


def _check_key_type(key: PublicKeyTypes) -> PublicKeyTypes:
    if isinstance(key, ed448.Ed448PublicKey | x448.X448PublicKey):
        raise MaterialError("x509: unknown public key algorithm")
    if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, _SUPPORTED_CURVES):
        raise MaterialError("x509: unsupported elliptic curve")
    return key


def _parse_certificate(der: bytes) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
        # Go parses every extension it knows eagerly; touching them here surfaces the same
        # malformed-certificate failures at parse time instead of during chain building.
        _ = cert.extensions
        _check_key_type(cert.public_key())
    except MaterialError:
        raise
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise MaterialError(f"x509: malformed certificate: {exc}") from None
    return cert


def _spki(key: PublicKeyTypes) -> bytes:
    try:
        return key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except ValueError as exc:  # pragma: no cover - every key type accepted above marshals
        raise MaterialError(f"x509: cannot marshal public key: {exc}") from None


def parse_material(raw: bytes) -> VerificationMaterial:
    """Parse PEM verification material exactly as Rekor's ``x509.NewPublicKey`` does.

    One ``PUBLIC KEY`` block, one ``CERTIFICATE`` block, or (when anything follows the first
    block) a chain of up to ``MAX_CHAIN_LENGTH`` certificates, leaf first. Raises
    ``MaterialError`` with Go's message otherwise.
    """
    trimmed = _trim_space(raw)
    block, rest = pem_decode(trimmed)
    if block is None:
        raise MaterialError("invalid public key: failure decoding PEM")
    if rest:
        ders = _split_chain(trimmed)
        certs = tuple(_parse_certificate(der) for der in ders)
        leaf_key = certs[0].public_key()
        return VerificationMaterial(MaterialKind.CHAIN, leaf_key, certs, ders, _spki(leaf_key))
    if block.type == "PUBLIC KEY":
        key = _parse_public_key(block.der)
        return VerificationMaterial(MaterialKind.PUBLIC_KEY, key, (), (), _spki(key))
    if block.type == "CERTIFICATE":
        cert = _parse_certificate(block.der)
        key = cert.public_key()
        return VerificationMaterial(
            MaterialKind.CERTIFICATE, key, (cert,), (block.der,), _spki(key)
        )
    raise MaterialError(f"invalid public key: cannot handle type {block.type}")


def _split_chain(trimmed: bytes) -> tuple[bytes, ...]:
    # cryptoutils.UnmarshalCertificatesFromPEMLimited: the block type is not checked, so a
    # PUBLIC KEY block inside a chain fails later as a malformed certificate.
    ders: list[bytes] = []
    remaining = _trim_space(trimmed)
    while remaining:
        if len(ders) == MAX_CHAIN_LENGTH:
            raise ChainTooLong("too many certificates specified in PEM block")
        block, remaining = pem_decode(remaining)
        if block is None:
            raise MaterialError("error during PEM decoding")
        ders.append(block.der)
        remaining = _trim_space(remaining)
    return tuple(ders)


def _identities(cert: x509.Certificate) -> Identities:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return Identities()
    except ValueError:  # pragma: no cover - extensions were parsed in parse_material
        return Identities()
    others: list[str] = []
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id != _SIGSTORE_OTHERNAME_OID:
            continue
        try:
            value = UTF8String.load(other.value).native
        except (ValueError, TypeError):
            _logger.debug("ignoring otherName SAN that is not a UTF8String")
            continue
        if isinstance(value, str) and value:
            others.append(value)
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return Identities(
        emails=tuple(san.get_values_for_type(x509.RFC822Name)),
        uris=tuple(san.get_values_for_type(x509.UniformResourceIdentifier)),
        dns_names=tuple(san.get_values_for_type(x509.DNSName)),
        ip_addresses=tuple(_go_ip(ip) for ip in ips),
        other_names=tuple(others),
    )


def _go_ip(text: str) -> str:
    # Go prints IPv4-in-IPv6 and networks the way net.IP.String does; plain addresses match.
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


# --- certificate chains ------------------------------------------------------------------------


def _not_before(cert: x509.Certificate) -> datetime:
    return cert.not_valid_before_utc


def _check_valid(cert: x509.Certificate, at: datetime) -> None:
    if at < cert.not_valid_before_utc or at > cert.not_valid_after_utc:
        raise ChainError(
            "x509: certificate has expired or is not yet valid: "
            f"current time {at:%Y-%m-%dT%H:%M:%SZ} is outside "
            f"{cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}.."
            f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
        )
    for ext in cert.extensions:
        if ext.critical and ext.oid not in _HANDLED_CRITICAL:
            raise ChainError("x509: unhandled critical extension")


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _check_parent(child: x509.Certificate, parent: x509.Certificate) -> None:
    # Go's CheckSignatureFrom: a v3 parent needs basicConstraints CA, a keyUsage (if present)
    # needs keyCertSign, and SHA-1/MD5 signatures are refused.
    bc = _basic_constraints(parent)
    if (parent.version is x509.Version.v3 and bc is None) or (bc is not None and not bc.ca):
        raise ChainError("x509: invalid signature: parent certificate cannot sign this kind")
    try:
        ku = parent.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None and not ku.key_cert_sign:
        raise ChainError("x509: invalid signature: parent certificate cannot sign this kind")
    if isinstance(child.signature_hash_algorithm, _INSECURE_CERT_HASHES):
        raise ChainError("x509: cannot verify signature: insecure algorithm")
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        raise ChainError(f"x509: certificate signature does not verify: {exc}") from None


def _check_intermediate(cert: x509.Certificate, intermediates_below: int) -> None:
    bc = _basic_constraints(cert)
    if bc is None or not bc.ca:
        raise ChainError("x509: certificate is not authorized to sign other certificates")
    if bc.path_length is not None and intermediates_below > bc.path_length:
        raise ChainError("x509: too many intermediates for path length constraint")


def _check_path_length(cert: x509.Certificate, intermediates_below: int) -> None:
    bc = _basic_constraints(cert)
    if bc is not None and bc.path_length is not None and intermediates_below > bc.path_length:
        raise ChainError("x509: too many intermediates for path length constraint")


_MAX_SIGNATURE_CHECKS = 100  # Go's maxChainSignatureChecks


def _identity(cert: x509.Certificate) -> tuple[bytes, bytes, bytes | None]:
    # Go's alreadyInChain: same subject, same key and same SAN extension is "the same cert".
    try:
        san: bytes | None = cert.extensions.get_extension_for_oid(
            ExtensionOID.SUBJECT_ALTERNATIVE_NAME
        ).value.public_bytes()
    except x509.ExtensionNotFound:
        san = None
    return cert.subject.public_bytes(), _spki(cert.public_key()), san


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def verify_chain(certificates: Sequence[x509.Certificate], ders: Sequence[bytes]) -> None:
    """Verify a chain the way Rekor's ``verifyCertChain`` asks Go's ``x509.Verify`` to.

    ``certificates[0]`` is the leaf, the last element the only trust anchor, everything between
    an untrusted intermediate pool. Validity is evaluated at the leaf's ``notBefore`` (expired
    uploads stay acceptable), any EKU is allowed. A single certificate needs no verification.
    Candidate parents are those whose subject equals the child's issuer; at most 100 signature
    checks are spent, as in Go. Raises ``ChainError`` when no path reaches the anchor.
    """
    if len(certificates) != len(ders) or not certificates:
        raise ChainError("no certificate chain provided")
    if len(certificates) == 1:
        return
    leaf, anchor = certificates[0], certificates[-1]
    at = _not_before(leaf)
    _check_valid(leaf, at)
    if ders[0] == ders[-1]:
        return  # Go: a leaf that is itself in the root pool is its own chain
    candidates = [(anchor, True)] + [(c, False) for c in certificates[1:-1]]
    identities = {id(c): _identity(c) for c, _ in candidates} | {id(leaf): _identity(leaf)}
    hint: tuple[ChainError, x509.Certificate] | None = None
    checks = 0

    def extend(path: list[x509.Certificate]) -> bool:
        nonlocal hint, checks
        child = path[-1]
        issuer = child.issuer.public_bytes()
        for cert, is_anchor in candidates:
            if cert.subject.public_bytes() != issuer:
                continue
            if identities[id(cert)] in {identities[id(p)] for p in path}:
                continue
            checks += 1
            if checks > _MAX_SIGNATURE_CHECKS:
                raise ChainError(
                    "x509: signature check attempts limit reached while verifying certificate chain"
                )
            try:
                _check_parent(child, cert)
                _check_valid(cert, at)
                if is_anchor:
                    _check_path_length(cert, len(path) - 1)
                else:
                    _check_intermediate(cert, len(path) - 1)
            except ChainError as exc:
                hint = hint or (exc, cert)
                continue
            if is_anchor or extend([*path, cert]):
                return True
        return False

    if not extend([leaf]):
        message = "x509: certificate signed by unknown authority"
        if hint is not None:
            message += (
                f' (possibly because of "{hint[0]}" while trying to verify candidate '
                f'authority certificate "{_common_name(hint[1])}")'
            )
        raise ChainError(message)


# --- signatures --------------------------------------------------------------------------------

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_GO_HASH_NAMES = {"sha256": "SHA-256", "sha384": "SHA-384", "sha512": "SHA-512"}


MIN_RSA_EXPONENT = 65537


def _check_rsa_size(key: rsa.RSAPublicKey) -> None:
    # Exponent 3 (or any below F4) invites signature forgeries against lax PKCS#1 v1.5
    # verifiers (Bleichenbacher 2006); the CA/Browser Forum asks for at least 65537.
    if key.public_numbers().e < MIN_RSA_EXPONENT:
        raise SignatureError(
            f"RSA public exponent {key.public_numbers().e} is below {MIN_RSA_EXPONENT}"
        )
    if key.key_size < _MIN_RSA_BITS:
        raise SignatureError(f"crypto/rsa: {key.key_size}-bit keys are insecure")
    if key.key_size > _MAX_RSA_BITS:
        raise SignatureError("crypto/rsa: public modulus too large")


def _verify_ecdsa(
    key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes, algorithm: ec.ECDSA
) -> None:
    # sigstore's ECDSAVerifier: ASN.1 DER when it parses as such, else IEEE P1363 r||s.
    try:
        decode_dss_signature(signature)
    except ValueError:
        if not signature or len(signature) > 132 or len(signature) % 2:
            raise SignatureError("ecdsa: Invalid IEEE_P1363 encoded bytes") from None
        half = len(signature) // 2
        der = encode_dss_signature(
            int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
        )
        try:
            key.verify(der, data, algorithm)
        except InvalidSignature:
            raise SignatureError(
                "invalid signature when validating IEEE_P1363 encoded signature"
            ) from None
        return
    try:
        key.verify(signature, data, algorithm)
    except InvalidSignature:
        raise SignatureError("invalid signature when validating ASN.1 encoded signature") from None


def verify_digest_signature(
    material: VerificationMaterial, signature: bytes, digest: bytes, hash_name: str
) -> None:
    """Verify a hashedrekord signature over a client-supplied ``digest``.

    Mirrors Rekor's ``x509.Signature.Verify`` with ``WithED25519ph``: an empty signature is an
    error, a chain is verified first, then RSA PKCS#1 v1.5 / ECDSA (DER or P1363) over the digest
    with ``hash_name`` (``sha256``/``sha384``/``sha512``), or Ed25519ph (SHA-512 only).
    Raises ``ChainError``, ``UnsupportedKeyType`` or ``SignatureError``.
    """
    if not signature:
        raise SignatureError("X509 signature has not been initialized")
    if material.kind is MaterialKind.CHAIN:
        verify_chain(material.certificates, material.certificate_ders)
    key = material.public_key
    algorithm = _HASHES[hash_name]()
    if isinstance(key, rsa.RSAPublicKey):
        _check_rsa_size(key)
        try:
            key.verify(signature, digest, padding.PKCS1v15(), Prehashed(algorithm))
        except InvalidSignature:
            raise SignatureError("crypto/rsa: verification error") from None
    elif isinstance(key, ec.EllipticCurvePublicKey):
        _verify_ecdsa(key, signature, digest, ec.ECDSA(Prehashed(algorithm)))
    elif isinstance(key, ed25519.Ed25519PublicKey):
        if hash_name != "sha512":
            raise SignatureError(
                f'unsupported hash algorithm: "{_GO_HASH_NAMES[hash_name]}" not in [SHA-512]'
            )
        try:
            verify_ed25519ph(key.public_bytes_raw(), signature, digest)
        except InvalidEd25519phSignature as exc:
            raise SignatureError(f"failed to verify signature: {exc}") from None
    else:
        raise UnsupportedKeyType("unsupported public key type")


MessageVerifier = Callable[[bytes, bytes], None]
"""``verify(signature, message)``: returns None or raises ``SignatureError``."""


def message_verifier(material: VerificationMaterial) -> MessageVerifier:
    """Return a verifier as Rekor's ``signature.LoadVerifier(key, crypto.SHA256)`` builds it.

    Used for DSSE PAE signatures: RSA PKCS#1 v1.5 with SHA-256, ECDSA with SHA-256 on every curve
    (DER or P1363), pure Ed25519. The leaf key of a chain is used and the chain is *not*
    verified (Rekor's DSSE and intoto types do not). Raises ``UnsupportedKeyType`` for other keys.
    """
    key = material.public_key
    if isinstance(key, rsa.RSAPublicKey):
        rsa_key = key

        def verify_rsa(signature: bytes, message: bytes) -> None:
            _check_rsa_size(rsa_key)
            try:
                rsa_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                raise SignatureError("crypto/rsa: verification error") from None

        return verify_rsa
    if isinstance(key, ec.EllipticCurvePublicKey):
        ec_key = key

        def verify_ec(signature: bytes, message: bytes) -> None:
            _verify_ecdsa(ec_key, signature, message, ec.ECDSA(hashes.SHA256()))

        return verify_ec
    if isinstance(key, ed25519.Ed25519PublicKey):
        ed_key = key

        def verify_ed(signature: bytes, message: bytes) -> None:
            try:
                ed_key.verify(signature, message)
            except InvalidSignature:
                raise SignatureError(
                    "failed to verify signature: ed25519: invalid signature"
                ) from None

        return verify_ed
    raise UnsupportedKeyType("unsupported public key type")
