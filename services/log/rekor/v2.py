"""Rekor v2 entries (rekor-tiles' ``CreateEntryRequest`` → ``Entry``, rekor.md §6.1 and 6.2).

A request is protojson: field names in lowerCamel or the proto's snake_case, unknown fields
refused, bytes as base64 (standard or URL-safe, padding optional), enums by name or number, a
``null`` message field the same as an absent one. Only ``hashedRekordRequestV002`` is accepted,
and ``dsseRequestV002`` (sigstore-js 4.x attestations; rekor-tiles accepted it from October 2025
to June 2026, so real v2 logs hold such leaves). An operator can refuse DSSE as rekor-tiles v2.3
does (``invalid type, must be hashedrekord``).

The leaf is ``JCS(protojson(Entry))`` with ``Entry = {kind: "hashedrekord", apiVersion: "0.0.2",
spec: {hashedRekordV002: {data: {algorithm, digest}, signature}}}``: ``signature`` is the
request's, re-encoded the way protojson writes it (standard padded base64, enum names, zero values
omitted), so clients that rebuild the leaf from a bundle (sigstore-go's ``ToEntryHash``) get the
same bytes. The (key, hash) pairs are rekor-tiles' default algorithm registry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from services import jcs
from services.log.checkpoint import CheckpointSigner
from services.log.rekor.ed25519ph import sign_ed25519ph
from services.log.rekor.keys import (
    ChainError,
    MaterialError,
    SignatureError,
    UnsupportedKeyType,
    VerificationMaterial,
    parse_material,
    verify_digest_signature,
)
from services.log.rekor.searchkeys import digest_key, material_keys, statement_digest_keys
from services.log.sequencer import Genesis

__all__ = [
    "API_VERSION",
    "HASH_ALGORITHMS",
    "KIND",
    "InvalidRequest",
    "V2Entry",
    "canonicalize_request",
    "genesis_entry",
    "genesis_statement",
    "verifier_search_keys",
]

KIND = "hashedrekord"
API_VERSION = "0.0.2"

# PublicKeyDetails (protobuf-specs common/v1): name → number, and the hash rekor-tiles derives.
_KEY_DETAILS: dict[str, tuple[int, str | None]] = {
    "PUBLIC_KEY_DETAILS_UNSPECIFIED": (0, None),
    "PKCS1_RSA_PKCS1V5": (1, None),
    "PKCS1_RSA_PSS": (2, None),
    "PKIX_RSA_PKCS1V5": (3, None),
    "PKIX_RSA_PSS": (4, None),
    "PKIX_ECDSA_P256_SHA_256": (5, "sha256"),
    "PKIX_ECDSA_P256_HMAC_SHA_256": (6, None),
    "PKIX_ED25519": (7, None),
    "PKIX_ED25519_PH": (8, "sha512"),
    "PKIX_RSA_PKCS1V15_2048_SHA256": (9, "sha256"),
    "PKIX_RSA_PKCS1V15_3072_SHA256": (10, "sha256"),
    "PKIX_RSA_PKCS1V15_4096_SHA256": (11, "sha256"),
    "PKIX_ECDSA_P384_SHA_384": (12, "sha384"),
    "PKIX_ECDSA_P521_SHA_512": (13, "sha512"),
    "LMS_SHA256": (14, None),
    "LMOTS_SHA256": (15, None),
    "PKIX_RSA_PSS_2048_SHA256": (16, None),
    "PKIX_RSA_PSS_3072_SHA256": (17, None),
    "PKIX_RSA_PSS_4096_SHA256": (18, None),
    "PKIX_ECDSA_P384_SHA_256": (19, "sha256"),
    "PKIX_ECDSA_P521_SHA_256": (20, "sha256"),
    "ML_DSA_65": (21, None),
    "ML_DSA_87": (22, None),
}
_BY_NUMBER = {number: name for name, (number, _) in _KEY_DETAILS.items()}
_HASH_OUTPUT = {"sha256": "SHA2_256", "sha384": "SHA2_384", "sha512": "SHA2_512"}
HASH_ALGORITHMS = {proto: name for name, proto in _HASH_OUTPUT.items()}
"""A stored ``HashAlgorithm`` name -> the hash's name in index keys (``SHA2_256`` -> ``sha256``)."""
_HASH_SIZE = {"sha256": 32, "sha384": 48, "sha512": 64}
_CURVE_HASH = {"secp256r1": "sha256", "secp384r1": "sha384", "secp521r1": "sha512"}


class InvalidRequest(ValueError):
    """A request rekor-tiles answers with gRPC InvalidArgument (400). ``message`` is its text."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(f"{message}: {detail}" if detail else message)
        self.message = str(self)


@dataclass(frozen=True, slots=True)
class V2Entry:
    """A verified request: the leaf to append and its search keys."""

    leaf: bytes
    search_keys: frozenset[str]
    kind: str = KIND


# --- protojson ------------------------------------------------------------------------------


def _fields(value: Any, what: str, names: Mapping[str, str]) -> dict[str, Any]:
    """A message's fields by JSON name; ``names`` maps every accepted spelling to it."""
    if not isinstance(value, dict):
        raise InvalidRequest("invalid hashedrekord request", f"{what} is not a JSON object")
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = names.get(key)
        if name is None:
            raise InvalidRequest("invalid hashedrekord request", f'unknown field "{key}" in {what}')
        if name in out:
            raise InvalidRequest(
                "invalid hashedrekord request", f"duplicate field {name} in {what}"
            )
        if item is not None:  # protojson: null is the default value
            out[name] = item
    return out


def _names(*fields: str) -> dict[str, str]:
    out = {}
    for camel in fields:
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
        out[camel] = camel
        out[snake] = camel
    return out


def _bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequest("invalid hashedrekord request", f"{what} is not a base64 string")
    text = value.rstrip("=")
    alphabet = "-_" if ("-" in text or "_" in text) else "+/"
    try:
        return base64.b64decode(
            text + "=" * (-len(text) % 4), altchars=alphabet.encode(), validate=True
        )
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            "invalid hashedrekord request", f"{what} is not valid base64"
        ) from None


def _enum(value: Any) -> str:
    if isinstance(value, bool):
        raise InvalidRequest("invalid hashedrekord request", "keyDetails is not an enum value")
    if isinstance(value, int):
        if value not in _BY_NUMBER:
            raise InvalidRequest("invalid hashedrekord request", f"unknown keyDetails {value}")
        return _BY_NUMBER[value]
    if not isinstance(value, str) or value not in _KEY_DETAILS:
        raise InvalidRequest("invalid hashedrekord request", f"unknown keyDetails {value!r}")
    return value


_REQUEST = _names("hashedRekordRequestV002", "dsseRequestV002")
_DSSE_REQUEST = _names("envelope", "verifiers")
_ENVELOPE = _names("payload", "payloadType", "signatures")
_ENVELOPE_SIGNATURE = _names("sig", "keyid")
MAX_DSSE_VERIFIERS = 10
MAX_DSSE_SIGNATURES = 10
_HASHED_REKORD = _names("digest", "signature")
_SIGNATURE = _names("content", "verifier")
_VERIFIER = _names("publicKey", "x509Certificate", "keyDetails")
_RAW = _names("rawBytes")


def _b64(data: bytes) -> str:
    """protojson's bytes: standard base64 with padding."""
    return base64.b64encode(data).decode()


# --- verification ---------------------------------------------------------------------------


def _public_key(verifier: Mapping[str, Any]) -> tuple[str, bytes, Any]:
    """(``publicKey`` | ``x509Certificate``, raw DER, the key). Only a certificate's own key is
    used: rekor-tiles neither builds nor checks a chain, nor the validity period."""
    if "publicKey" in verifier and "x509Certificate" in verifier:
        raise InvalidRequest(
            "invalid hashedrekord request", "verifier has both publicKey and x509Certificate"
        )
    for field in ("publicKey", "x509Certificate"):
        if field not in verifier:
            continue
        raw = _bytes(_fields(verifier[field], field, _RAW).get("rawBytes", ""), f"{field}.rawBytes")
        if not raw:
            detail = "public key" if field == "publicKey" else "X.509 certificate"
            raise InvalidRequest(
                "invalid hashedrekord request", f"invalid verifier: missing {detail} raw bytes"
            )
        try:
            if field == "publicKey":
                return field, raw, serialization.load_der_public_key(raw)
            return field, raw, x509.load_der_x509_certificate(raw).public_key()
        except ValueError as exc:
            raise InvalidRequest(
                "invalid hashedrekord request", f"parsing verifier: {exc}"
            ) from None
    raise InvalidRequest(
        "invalid hashedrekord request",
        "invalid verifier: missing signature public key or X.509 certificate",
    )


def _check_algorithm(key: Any, hash_name: str, message: str) -> None:
    """rekor-tiles' default registry: RSA PKCS#1 v1.5 2048/3072/4096 + SHA-256, ECDSA P-256 +
    SHA-256, P-384 + SHA-384, P-521 + SHA-512, Ed25519ph (SHA-512). Pure Ed25519 cannot sign a
    digest, so it is not offered."""
    ok = False
    if isinstance(key, rsa.RSAPublicKey):
        ok = key.key_size in (2048, 3072, 4096) and hash_name == "sha256"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        ok = _CURVE_HASH.get(key.curve.name) == hash_name
    elif isinstance(key, ed25519.Ed25519PublicKey):
        ok = hash_name == "sha512"
    if not ok:
        raise InvalidRequest(
            message, f"signing algorithm not permitted: {type(key).__name__} with {hash_name}"
        )


def _read_verifier(document: Any, what: str, message: str) -> tuple[str, bytes, Any, str, str]:
    """A ``Verifier``: (``publicKey`` or ``x509Certificate``, its DER, the key, the keyDetails
    name, the hash that names), with the (key, hash) pair checked against the registry."""
    verifier = _fields(document, what, _VERIFIER)
    field, raw, key = _public_key(verifier)
    key_details = _enum(verifier.get("keyDetails", 0))
    hash_name = _KEY_DETAILS[key_details][1]
    if hash_name is None:
        raise InvalidRequest(
            message, f"getting key algorithm details: unsupported key details {key_details}"
        )
    _check_algorithm(key, hash_name, message)
    return field, raw, key, key_details, hash_name


def canonicalize_request(document: Any, *, dsse: bool = True) -> V2Entry:
    """Validate and verify a parsed ``CreateEntryRequest``; return the leaf to append.

    ``dsse`` False refuses ``dsseRequestV002`` as rekor-tiles v2.3 does. Raises
    ``InvalidRequest`` with rekor-tiles' message (its detail appended after a colon)."""
    request = _fields(document, "the request", _REQUEST)
    if len(request) > 1:
        raise InvalidRequest("invalid hashedrekord request", "more than one entry type")
    if dsse and "dsseRequestV002" in request:
        return _dsse(request["dsseRequestV002"])
    if "hashedRekordRequestV002" not in request:
        raise InvalidRequest("invalid type, must be hashedrekord")
    spec = _fields(request["hashedRekordRequestV002"], "hashedRekordRequestV002", _HASHED_REKORD)
    signature = _fields(spec.get("signature", {}), "signature", _SIGNATURE)
    content = _bytes(signature.get("content", ""), "signature.content")
    if not content:
        raise InvalidRequest("invalid hashedrekord request", "missing signature")
    if "verifier" not in signature:
        raise InvalidRequest("invalid hashedrekord request", "missing verifier")
    digest = _bytes(spec.get("digest", ""), "digest")
    if not digest:
        raise InvalidRequest("invalid hashedrekord request", "missing digest")
    field, raw, key, key_details, hash_name = _read_verifier(
        signature["verifier"], "verifier", "invalid hashedrekord request"
    )
    if len(digest) != _HASH_SIZE[hash_name]:
        raise InvalidRequest(
            "invalid hashedrekord request",
            f"digest length ({len(digest)}) does not match expected size "
            f"({_HASH_SIZE[hash_name]}) for algorithm {hash_name.upper()}",
        )
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        material = parse_material(pem)
        verify_digest_signature(material, content, digest, hash_name)
    except (MaterialError, UnsupportedKeyType, ChainError, SignatureError) as exc:
        raise InvalidRequest(
            "invalid hashedrekord request", f"verifying signature: {exc}"
        ) from None

    entry = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "spec": {
            "hashedRekordV002": {
                "data": {"algorithm": _HASH_OUTPUT[hash_name], "digest": _b64(digest)},
                "signature": {
                    "content": _b64(content),
                    "verifier": {field: {"rawBytes": _b64(raw)}, "keyDetails": key_details},
                },
            }
        },
    }
    search_keys = {digest_key(hash_name, digest.hex())} | _material_keys(field, raw, material)
    return V2Entry(jcs.dumps(entry), frozenset(search_keys))


def _material_keys(field: str, raw: bytes, key_material: VerificationMaterial) -> set[str]:
    if field == "x509Certificate":
        # The identities of the certificate, as v1 indexes them, so auditors can search v2 too.
        try:
            cert_pem = x509.load_der_x509_certificate(raw).public_bytes(serialization.Encoding.PEM)
            return material_keys(parse_material(cert_pem))
        except (ValueError, MaterialError):
            pass
    return material_keys(key_material)


def verifier_search_keys(document: Any) -> set[str]:
    """The index keys of a ``Verifier`` (the key; for a certificate also the certificate and its
    identities). The same function files a new entry and lets ``sigstead fsck`` replay the
    index from stored leaves; raises ``InvalidRequest`` for a verifier it cannot read."""
    field, raw, key, _, _ = _read_verifier(document, "verifier", "invalid verifier")
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        material = parse_material(pem)
    except MaterialError as exc:
        raise InvalidRequest("invalid verifier", str(exc)) from None
    return _material_keys(field, raw, material)


def _verifier_key(document: Any, what: str) -> tuple[dict[str, Any], Any, str, Any]:
    """A ``Verifier``: (its protojson rendering, the key, the hash its keyDetails name, the
    material for search keys)."""
    field, raw, key, key_details, hash_name = _read_verifier(document, what, "invalid dsse request")
    rendered = {field: {"rawBytes": _b64(raw)}, "keyDetails": key_details}
    if field == "x509Certificate":
        material = parse_material(
            x509.load_der_x509_certificate(raw).public_bytes(serialization.Encoding.PEM)
        )
    else:
        material = parse_material(
            key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return rendered, key, hash_name, material


def _verifies(key: Any, hash_name: str, signature: bytes, message: bytes) -> bool:
    """sigstore's ``LoadVerifier(key, hash)`` over a DSSE PAE: RSA PKCS#1 v1.5 and ECDSA with
    that hash, Ed25519 pure (DSSE signs the message, not a digest)."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
            return True
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest = hashlib.new(hash_name, message).digest()
        verify_digest_signature(parse_material(pem), signature, digest, hash_name)
        return True
    except (InvalidSignature, SignatureError, MaterialError, UnsupportedKeyType, ChainError):
        return False


def _dsse(document: Any) -> V2Entry:
    """``dsseRequestV002``: every envelope signature must be verified by one of the verifiers
    over the DSSE PAE. The leaf keeps the payload's SHA-256 and the signatures, sorted by their
    raw bytes, each with the verifier that verified it; the envelope is not stored."""
    request = _fields(document, "dsseRequestV002", _DSSE_REQUEST)
    if "envelope" not in request:
        raise InvalidRequest("invalid dsse request", "missing envelope")
    envelope = _fields(request["envelope"], "envelope", _ENVELOPE)
    raw_verifiers = request.get("verifiers") or []
    if not isinstance(raw_verifiers, list) or not raw_verifiers:
        raise InvalidRequest("invalid dsse request", "missing verifiers")
    if len(raw_verifiers) > MAX_DSSE_VERIFIERS:
        raise InvalidRequest("invalid dsse request", f"more than {MAX_DSSE_VERIFIERS} verifiers")
    raw_signatures = envelope.get("signatures") or []
    if not isinstance(raw_signatures, list) or not raw_signatures:
        raise InvalidRequest("invalid dsse request", "envelope missing signatures")
    if len(raw_signatures) > MAX_DSSE_SIGNATURES:
        raise InvalidRequest("invalid dsse request", f"more than {MAX_DSSE_SIGNATURES} signatures")
    payload = _bytes(envelope.get("payload", ""), "envelope.payload")
    payload_type = envelope.get("payloadType", "")
    if not isinstance(payload_type, str):
        raise InvalidRequest("invalid dsse request", "envelope.payloadType is not a string")
    signatures = []
    for i, item in enumerate(raw_signatures):
        sig = _bytes(_fields(item, f"signatures[{i}]", _ENVELOPE_SIGNATURE).get("sig", ""), "sig")
        if not sig:
            raise InvalidRequest("invalid dsse request", "envelope signature empty")
        signatures.append(sig)
    verifiers = [_verifier_key(v, f"verifiers[{i}]") for i, v in enumerate(raw_verifiers)]
    type_bytes = payload_type.encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)
    # As go-securesystemslib's EnvelopeVerifier with one key at a time: each verifier accepts
    # the first signature it verifies; every signature must be accepted by some verifier.
    accepted: dict[bytes, dict[str, Any]] = {}
    for rendered, key, hash_name, _ in verifiers:
        for sig in signatures:
            if sig not in accepted and _verifies(key, hash_name, sig, pae):
                accepted[sig] = rendered
                break
    if len(accepted) != len(set(signatures)):
        raise InvalidRequest(
            "invalid dsse request", "all signatures must have a key that verifies it"
        )
    payload_hash = hashlib.sha256(payload).digest()
    entry = {
        "apiVersion": API_VERSION,
        "kind": "dsse",
        "spec": {
            "dsseV002": {
                "payloadHash": {"algorithm": "SHA2_256", "digest": _b64(payload_hash)},
                "signatures": [
                    {"content": _b64(sig), "verifier": accepted[sig]} for sig in sorted(accepted)
                ],
            }
        },
    }
    search_keys = {digest_key("sha256", payload_hash.hex())}
    # Only the verifiers the entry keeps (one per signature): a verifier that verified nothing
    # is not in the leaf, so filing the entry under it would be a key no replay could justify.
    for rendered, _, _, material in verifiers:
        if any(kept is rendered for kept in accepted.values()):
            search_keys |= material_keys(material)
    search_keys |= statement_digest_keys(payload_type, payload)
    return V2Entry(jcs.dumps(entry), frozenset(search_keys), "dsse")


# --- the log's own first entry ----------------------------------------------------------------


def genesis_statement(origin: str) -> bytes:
    """What the v2 genesis entry's digest covers (as v1's: ``services.log.rekor.genesis``)."""
    return f"sigstead genesis\n{origin}\n".encode()


def genesis_entry(signer: CheckpointSigner, origin: str) -> Genesis:
    """Entry 0 of a v2 log: a hashedrekord 0.0.2 by the log's own key over the genesis statement,
    through the same validation as a client's entry, so a client's first bundle is never at
    index 0 (sigstore-js omits a zero ``logIndex``; why v1 logs have one too)."""
    statement = genesis_statement(origin)
    spki = signer.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if isinstance(signer.public_key, ed25519.Ed25519PublicKey):
        # Pure Ed25519 cannot sign a digest: hashedrekord takes Ed25519ph over SHA-512.
        details, digest = "PKIX_ED25519_PH", hashlib.sha512(statement).digest()
        signature = sign_ed25519ph(signer.ed25519_seed(), statement)
    else:
        details, digest = "PKIX_ECDSA_P256_SHA_256", hashlib.sha256(statement).digest()
        signature = signer.sign(statement)
    request = {
        "hashedRekordRequestV002": {
            "digest": base64.b64encode(digest).decode(),
            "signature": {
                "content": base64.b64encode(signature).decode(),
                "verifier": {
                    "publicKey": {"rawBytes": base64.b64encode(spki).decode()},
                    "keyDetails": details,
                },
            },
        }
    }
    entry = canonicalize_request(request)
    return Genesis(entry.leaf, entry.search_keys)
