"""Certificate chains (good, and breaking one rule each), a failing key and the refusal
messages for the TSA tests."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime(2026, 11, 22, 12, 34, 56, 789000, tzinfo=datetime.UTC)
TIME_STAMPING = ExtendedKeyUsageOID.TIME_STAMPING

# timestamp-authority's refusal messages (fulcio.md §7.1)
GENERATE = "Error generating timestamp response"
WEAK = "Weak hash algorithm in timestamp request"
LENGTH = "Message digest has incorrect length for specified algorithm"
POLICY = "unaccepted policy: requested TSA policy is not supported by the TSA"
EXTENSION = "unaccepted extension: requested extensions are not supported by the TSA"
OID_LONG = "OID should be comprised of at most 128 components"
TOO_LARGE = "timestamp request is too large"


@dataclass(frozen=True, slots=True)
class ChainSpec:
    """How to build a chain; the defaults make one that ``validate_chain`` accepts."""

    leaf_ekus: tuple[x509.ObjectIdentifier, ...] | None = (TIME_STAMPING,)
    leaf_eku_critical: bool = True
    leaf_ca: bool = False
    intermediate: bool = False
    intermediate_ekus: tuple[x509.ObjectIdentifier, ...] | None = (TIME_STAMPING,)
    root_ca: bool = True
    curve: ec.EllipticCurve = field(default_factory=ec.SECP256R1)
    not_before: datetime.datetime = NOW - datetime.timedelta(days=1)
    not_after: datetime.datetime = NOW + datetime.timedelta(days=30)


def _cert(
    subject: str,
    issuer: str,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    spec: ChainSpec,
    *,
    ca: bool,
    ekus: tuple[x509.ObjectIdentifier, ...] | None,
    eku_critical: bool = True,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(spec.not_before)
        .not_valid_after(spec.not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
    )
    if ekus is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=eku_critical)
    return builder.sign(signer, hashes.SHA256())


def build_chain(
    spec: ChainSpec | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
    """(leaf key, [leaf, (intermediate,) root]) as ``spec`` says."""
    spec = spec or ChainSpec()
    root_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(spec.curve)
    root = _cert("root", "root", root_key, root_key, spec, ca=spec.root_ca, ekus=None)
    issuer_name, issuer_key, chain = "root", root_key, [root]
    if spec.intermediate:
        mid_key = ec.generate_private_key(ec.SECP256R1())
        mid = _cert(
            "intermediate", "root", mid_key, root_key, spec, ca=True, ekus=spec.intermediate_ekus
        )
        issuer_name, issuer_key, chain = "intermediate", mid_key, [mid, root]
    leaf = _cert(
        "leaf",
        issuer_name,
        leaf_key,
        issuer_key,
        spec,
        ca=spec.leaf_ca,
        ekus=spec.leaf_ekus,
        eku_critical=spec.leaf_eku_critical,
    )
    return leaf_key, [leaf, *chain]


class FailingKey(ec.EllipticCurvePrivateKey):
    """A key that cannot sign, as an HSM or KMS may fail; everything else is the real key's."""

    def __init__(self, real: ec.EllipticCurvePrivateKey) -> None:
        self._real = real

    def sign(
        self,
        data: bytes | bytearray | memoryview,
        signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
    ) -> bytes:
        raise OSError("HSM unavailable")

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise NotImplementedError

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._real.public_key()

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._real.curve

    @property
    def key_size(self) -> int:
        return self._real.key_size

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise NotImplementedError

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise NotImplementedError

    def __copy__(self) -> FailingKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> FailingKey:
        return self
