"""``hashedrekord`` v0.0.1: a signature over a client-supplied artifact digest.

Proposed and canonical shapes (the canonical one is what the leaf stores)::

    {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
      "data": {"hash": {"algorithm": "sha256|sha384|sha512", "value": "<hex, kept verbatim>"}},
      "signature": {"content": "<b64 signature>",
                    "publicKey": {"content": "<b64 PEM key | cert | chain>"}}}}

Validation follows Rekor's ``V001Entry.validate``: the digest length must match the algorithm,
the hex must decode, a chain must verify, and the signature must verify over the digest
(Ed25519 as Ed25519ph). Then the algorithm policy applies. The canonical spec re-encodes the
signature (standard base64) and the key (Go PEM); the digest is kept exactly as sent, so
upper-case hex is a *different* leaf, as in Rekor.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.log.rekor._go import GoDecodeError, b64encode_std, hex_decode
from services.log.rekor.entry import (
    CanonicalEntry,
    JSONValue,
    SpecReader,
    canonical_leaf,
    decode_b64_field,
    go_type,
)
from services.log.rekor.errors import (
    CertificateChainInvalid,
    KeyUnparseable,
    MalformedEntry,
    SignatureInvalid,
)
from services.log.rekor.keys import (
    ChainError,
    ChainTooLong,
    MaterialError,
    SignatureError,
    UnsupportedKeyType,
    parse_material,
    verify_digest_signature,
)
from services.log.rekor.policy import AlgorithmPolicy
from services.log.rekor.searchkeys import digest_key, material_keys

__all__ = ["API_VERSION", "KIND", "canonicalize"]

KIND = "hashedrekord"
API_VERSION = "0.0.1"

_ALGORITHMS = ("sha256", "sha384", "sha512")
_DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}


def _content(parent: Mapping[str, JSONValue], what: str) -> bytes:
    # Rekor's DecodeEntry only decodes a non-empty string; anything else reads as absent.
    value = parent.get("content")
    if isinstance(value, str) and value:
        return decode_b64_field(value, f" for {what} content")
    return b""


def canonicalize(spec: JSONValue, policy: AlgorithmPolicy) -> CanonicalEntry:
    """Validate and verify a hashedrekord spec; return its canonical entry.

    Raises ``MalformedEntry``, ``KeyUnparseable``, ``CertificateChainInvalid``,
    ``SignatureInvalid`` or ``AlgorithmNotAllowed`` (all 400, Rekor's messages).
    """
    if not isinstance(spec, dict):
        raise MalformedEntry(f"unsupported input type {go_type(spec)} for DecodeEntry")

    reader = SpecReader()
    signature_raw = spec.get("signature")
    signature_obj = signature_raw if isinstance(signature_raw, dict) else None
    data_raw = spec.get("data")
    hash_raw = data_raw.get("hash") if isinstance(data_raw, dict) else None
    hash_obj = hash_raw if isinstance(hash_raw, dict) else None

    signature = b""
    key_content: bytes | None = None
    if signature_obj is not None:
        signature = _content(signature_obj, "signature")
        public_key_raw = signature_obj.get("publicKey")
        if isinstance(public_key_raw, dict):
            key_content = _content(public_key_raw, "public key")

    algorithm = value = None
    if hash_obj is None:
        # Rekor only builds `data` when `data.hash` is an object, so `{}` is "data required".
        reader.errors.append("data in body is required")
    else:
        algorithm = reader.enum(
            reader.string(hash_obj, "algorithm", "data.hash.algorithm", required=True),
            "data.hash.algorithm",
            _ALGORITHMS,
        )
        value = reader.string(hash_obj, "value", "data.hash.value", required=True)
    if signature_obj is None:
        reader.errors.append("signature in body is required")
    reader.raise_if_any()
    if algorithm is None or value is None:  # pragma: no cover - raise_if_any covered both
        raise MalformedEntry("missing hash")

    if key_content is None:
        raise MalformedEntry("missing public key")
    try:
        material = parse_material(key_content)
    except ChainTooLong as exc:
        raise CertificateChainInvalid(str(exc)) from None
    except MaterialError as exc:
        raise KeyUnparseable(str(exc)) from None

    # Go compares len() of the string, i.e. its UTF-8 byte length.
    if len(value.encode("utf-8")) != 2 * _DIGEST_SIZES[algorithm]:
        raise MalformedEntry("invalid value for hash")
    try:
        digest = hex_decode(value)
    except GoDecodeError as exc:
        raise MalformedEntry(str(exc)) from None

    try:
        verify_digest_signature(material, signature, digest, algorithm)
    except ChainError as exc:
        raise CertificateChainInvalid(f"verifying signature: {exc}") from None
    except UnsupportedKeyType as exc:
        raise KeyUnparseable(f"verifying signature: {exc}") from None
    except SignatureError as exc:
        raise SignatureInvalid(f"verifying signature: {exc}") from None

    policy.require(material.public_key, algorithm)

    canonical_spec = {
        "data": {"hash": {"algorithm": algorithm, "value": value}},
        "signature": {
            "content": b64encode_std(signature),
            "publicKey": {"content": b64encode_std(material.canonical_pem)},
        },
    }
    keys = {digest_key(algorithm, value)} | material_keys(material)
    return CanonicalEntry(
        kind=KIND,
        api_version=API_VERSION,
        leaf=canonical_leaf(KIND, API_VERSION, canonical_spec),
        search_keys=frozenset(keys),
    )
