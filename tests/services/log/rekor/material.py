"""Real keys, certificates, signatures and the request bodies real clients send, for the tests.

Keys are generated once per process (RSA 4096 is slow) and reused. Signing follows what each
client does: hashedrekord signs the artifact digest (RSA PKCS#1 v1.5 / ECDSA prehashed,
Ed25519ph via pycryptodome, an implementation independent of ours); DSSE signs the PAE with
SHA-256 (pure Ed25519).
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import rekor_types
import rfc8785
from Crypto.Hash import SHA512
from Crypto.Signature import eddsa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

T0 = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)
"""Fixed issuance time: certificates are deterministic in time (time is an argument)."""

KEY_TYPES = (
    "ecdsa-p256",
    "ecdsa-p384",
    "ecdsa-p521",
    "rsa-2048",
    "rsa-3072",
    "rsa-4096",
    "ed25519",
)
# The digest each key type pairs with under Rekor's default policy.
POLICY_HASH = {
    "ecdsa-p256": "sha256",
    "ecdsa-p384": "sha384",
    "ecdsa-p521": "sha512",
    "rsa-2048": "sha256",
    "rsa-3072": "sha256",
    "rsa-4096": "sha256",
    "ed25519": "sha512",
}
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}


@functools.cache
def private_key(key_type: str, slot: int = 0) -> PrivateKey:
    """A private key of ``key_type``; ``slot`` gives independent keys of the same type."""
    del slot  # part of the cache key only
    if key_type.startswith("ecdsa-"):
        curves: dict[str, ec.EllipticCurve] = {
            "p256": ec.SECP256R1(),
            "p384": ec.SECP384R1(),
            "p521": ec.SECP521R1(),
        }
        return ec.generate_private_key(curves[key_type.removeprefix("ecdsa-")])
    if key_type.startswith("rsa-"):
        return rsa.generate_private_key(65537, int(key_type.removeprefix("rsa-")))
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(key_type)


def public_pem(key: PrivateKey) -> bytes:
    """PEM SubjectPublicKeyInfo of ``key`` (cryptography writes Go's PEM layout)."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign_digest(key: PrivateKey, data: bytes, hash_name: str) -> tuple[bytes, bytes]:
    """Sign ``data`` as a hashedrekord client does; return ``(digest, signature)``."""
    digest = hashlib.new(hash_name, data).digest()
    if isinstance(key, rsa.RSAPrivateKey):
        prehashed = Prehashed(_HASHES[hash_name])
        return digest, key.sign(digest, padding.PKCS1v15(), prehashed)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return digest, key.sign(digest, ec.ECDSA(Prehashed(_HASHES[hash_name])))
    signer = eddsa.new(eddsa.import_private_key(key.private_bytes_raw()), "rfc8032")
    return digest, signer.sign(SHA512.new(data))


def sign_message(key: PrivateKey, message: bytes) -> bytes:
    """Sign ``message`` as a DSSE signer does (SHA-256; Ed25519 pure)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    return key.sign(message)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE PAE, written independently of the code under test."""
    t = payload_type.encode()
    return (
        b"DSSEv1 "
        + str(len(t)).encode()
        + b" "
        + t
        + b" "
        + str(len(payload)).encode()
        + (b" " + payload)
    )


# --- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """Root, intermediate and leaf certificates plus the leaf's private key."""

    root: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate
    leaf_key: PrivateKey

    def pem(self, *certs: x509.Certificate) -> bytes:
        """Concatenated PEM of ``certs`` (default: leaf, intermediate, root)."""
        chosen = certs or (self.leaf, self.intermediate, self.root)
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chosen)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(
    name: str,
    key: CertificateIssuerPrivateKeyTypes,
    issuer: tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes] | None = None,
    *,
    path_length: int | None = None,
    ca: bool = True,
    not_before: datetime.datetime = T0 - datetime.timedelta(days=365),
    not_after: datetime.datetime = T0 + datetime.timedelta(days=3650),
    key_cert_sign: bool = True,
) -> x509.Certificate:
    """A CA certificate for ``key``, self-signed unless ``issuer`` is given."""
    issuer_name = issuer[0].subject if issuer else _name(name)
    signing_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    algorithm = None if isinstance(signing_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signing_key, algorithm)


def make_leaf(
    key: PrivateKey,
    issuer: tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes],
    *,
    emails: Sequence[str] = ("Alice@Example.COM",),
    uris: Sequence[str] = (
        "https://github.com/Org/Repo/.github/workflows/release.yml@refs/tags/v1",
    ),
    other_name: str | None = None,
    not_before: datetime.datetime = T0,
    lifetime: datetime.timedelta = datetime.timedelta(minutes=10),
    critical_unknown: bool = False,
) -> x509.Certificate:
    """A Fulcio-like code-signing leaf with email/URI SANs (and optional sigstore otherName)."""
    names: list[x509.GeneralName] = [x509.RFC822Name(e) for e in emails]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    if other_name is not None:
        value = b"\x0c" + bytes([len(other_name)]) + other_name.encode()
        names.append(x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7"), value))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + lifetime)
        .add_extension(x509.SubjectAlternativeName(names), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    )
    if critical_unknown:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"),
            critical=True,
        )
    signing_key = issuer[1]
    algorithm = None if isinstance(signing_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signing_key, algorithm)


@functools.cache
def chain(leaf_type: str = "ecdsa-p256") -> Chain:
    """A three-certificate chain (root -> intermediate -> leaf) with a leaf key of ``leaf_type``."""
    root_key = private_key("ecdsa-p384", 90)
    inter_key = private_key("ecdsa-p256", 91)
    root = make_ca("Test Root", root_key, path_length=1)
    inter = make_ca("Test Intermediate", inter_key, (root, root_key), path_length=0)
    leaf_key = private_key(leaf_type, 92)
    leaf = make_leaf(leaf_key, (inter, inter_key), other_name="bob")
    return Chain(root, inter, leaf, leaf_key)


# --- request bodies ----------------------------------------------------------------------------


def jcs(document: object) -> bytes:
    """RFC 8785 encoding of a JSON-like value (typed loosely for the tests' dict literals)."""
    return rfc8785.dumps(cast(Any, document))


def b64(data: bytes) -> str:
    """Standard padded base64 as text."""
    return base64.b64encode(data).decode()


def hashedrekord_body(
    key_pem: bytes, signature: bytes, digest_hex: str, algorithm: str = "sha256"
) -> bytes:
    """A hashedrekord proposed entry built with ``sigstore_rekor_types`` (as sigstore-python)."""
    entry = rekor_types.Hashedrekord(
        spec=rekor_types.hashedrekord.HashedrekordSchema(
            rekor_types.hashedrekord.HashedrekordV001Schema(
                signature=rekor_types.hashedrekord.Signature(
                    content=b64(signature),
                    publicKey=rekor_types.hashedrekord.PublicKey(content=b64(key_pem)),
                ),
                data=rekor_types.hashedrekord.Data(
                    hash=rekor_types.hashedrekord.Hash(
                        algorithm=rekor_types.hashedrekord.Algorithm(algorithm), value=digest_hex
                    )
                ),
            )
        )
    )
    return json.dumps(entry.model_dump(mode="json", by_alias=True)).encode()


def envelope_json(
    payload: bytes, payload_type: str, signatures: Sequence[bytes], keyid: str = ""
) -> str:
    """A DSSE envelope as JSON text (field order as sigstore-js writes it)."""
    return json.dumps(
        {
            "payload": b64(payload),
            "payloadType": payload_type,
            "signatures": [{"keyid": keyid, "sig": b64(s)} for s in signatures],
        }
    )


def dsse_body(envelope: str, verifiers: Sequence[bytes]) -> bytes:
    """A dsse proposed entry built with ``sigstore_rekor_types`` (as sigstore-python/-js)."""
    entry = rekor_types.Dsse(
        spec=rekor_types.dsse.DsseSchema(
            rekor_types.dsse.DsseV001Schema1(
                proposedContent=rekor_types.dsse.ProposedContent(
                    envelope=envelope, verifiers=[b64(v) for v in verifiers]
                )
            )
        )
    )
    return json.dumps(entry.model_dump(mode="json", by_alias=True, exclude_none=True)).encode()


def intoto_body(
    payload: bytes,
    payload_type: str,
    signature: bytes,
    key_pem: bytes,
    keyid: str = "",
) -> bytes:
    """An intoto v0.0.2 proposed entry exactly as sigstore-js ``toProposedIntotoEntry`` builds it.

    ``payload`` and ``sig`` are base64 of the envelope's base64 strings; ``hash`` is SHA-256
    of the JCS of ``{payloadType, payload: b64, signatures: [{sig: b64, publicKey: PEM}]}``.
    """
    sig_entry: dict[str, str] = {"sig": b64(signature), "publicKey": key_pem.decode()}
    if keyid:
        sig_entry["keyid"] = keyid
    hashed = {"payloadType": payload_type, "payload": b64(payload), "signatures": [sig_entry]}
    envelope_hash = hashlib.sha256(jcs(hashed)).hexdigest()
    signature_item: dict[str, str] = {
        "sig": b64(b64(signature).encode()),
        "publicKey": b64(key_pem),
    }
    if keyid:
        signature_item["keyid"] = keyid
    body = {
        "apiVersion": "0.0.2",
        "kind": "intoto",
        "spec": {
            "content": {
                "envelope": {
                    "payloadType": payload_type,
                    "payload": b64(b64(payload).encode()),
                    "signatures": [signature_item],
                },
                "hash": {"algorithm": "sha256", "value": envelope_hash},
                "payloadHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(payload).hexdigest(),
                },
            }
        },
    }
    return json.dumps(body).encode()


def statement(subject_digests: Sequence[str], *, version: str = "v1") -> bytes:
    """An in-toto statement (v0.1 or v1) with one subject per sha256 digest, SLSA provenance."""
    materials = [{"uri": "git+https://example.com/repo", "digest": {"sha1": "AB" * 20}}]
    predicate: dict[str, object] = (
        {"builder": {"id": "https://example.com/builder"}, "materials": materials}
        if version == "v0.1"
        else {"buildDefinition": {"buildType": "https://example.com/t"}, "runDetails": {}}
    )
    doc = {
        "_type": f"https://in-toto.io/Statement/{version}",
        "subject": [
            {"name": f"artifact-{i}", "digest": {"sha256": d}}
            for i, d in enumerate(subject_digests)
        ],
        "predicateType": "https://slsa.dev/provenance/v0.2"
        if version == "v0.1"
        else "https://slsa.dev/provenance/v1",
        "predicate": predicate,
    }
    return json.dumps(doc).encode()


def sigstore_bundle_view(
    leaf: bytes,
    certificate: x509.Certificate,
    *,
    signature: bytes | None = None,
    envelope: object | None = None,
) -> Any:
    """The attributes of a ``sigstore.models.Bundle`` that sigstore-python's body checks read.

    ``verify/verifier.py::_validate_hashedrekord_v001_entry_body`` and
    ``_validate_dsse_v001_entry_body`` only touch ``log_entry._inner.canonicalized_body``,
    ``signing_certificate``, ``_inner.message_signature.signature`` and ``_dsse_envelope``;
    building a whole bundle would need an inclusion proof this layer does not produce.
    """
    from types import SimpleNamespace

    return SimpleNamespace(
        log_entry=SimpleNamespace(_inner=SimpleNamespace(canonicalized_body=leaf)),
        signing_certificate=certificate,
        _inner=SimpleNamespace(message_signature=SimpleNamespace(signature=signature)),
        _dsse_envelope=envelope,
    )
