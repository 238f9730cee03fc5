"""``intoto`` v0.0.1: a DSSE envelope as a JSON *string*, verified with one public key. This is
what cosign's library uploads for ``cosign attest --rekor-entry-type intoto`` and what Tekton
Chains records for its provenance (``cosign.TLogUploadInTotoAttestation``); Rekor v1.5 still
inserts it beside v0.0.2.

Proposed (``publicKey`` is base64 of a PEM key or certificate; ``hash``/``payloadHash`` may be
sent and are recomputed)::

    {"apiVersion": "0.0.1", "kind": "intoto", "spec": {
      "content": {"envelope": "{\"payloadType\":...,\"payload\":...,\"signatures\":[...]}"},
      "publicKey": "<b64 PEM>"}}

Verified as Rekor's ``dsse.WrapVerifier`` does: one verifier, threshold one, so at least one of
the envelope's signatures must verify with the key. Canonical: ``content.hash`` = SHA-256 of the
envelope string exactly as sent, ``content.payloadHash`` = SHA-256 of the decoded payload,
``publicKey`` re-encoded as canonical PEM; the envelope itself is not stored in the leaf (the
decoded payload is kept as the entry's attestation, as Rekor's attestation storage does).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from services.log.rekor._dsse import (
    MAX_ENVELOPE_SIGNATURES,
    Envelope,
    EnvelopeSignature,
    accepted_signature,
    pae_message,
)
from services.log.rekor._go import GoDecodeError, b64decode_std, b64encode_std
from services.log.rekor.entry import (
    CanonicalEntry,
    JSONValue,
    SpecReader,
    canonical_leaf,
    decode_b64_field,
    go_type,
)
from services.log.rekor.errors import KeyUnparseable, MalformedEntry, NotInsertable
from services.log.rekor.keys import (
    MaterialError,
    UnsupportedKeyType,
    message_verifier,
    parse_material,
)
from services.log.rekor.searchkeys import digest_key, material_keys, statement_digest_keys

__all__ = ["API_VERSION", "KIND", "canonicalize"]

KIND = "intoto"
API_VERSION = "0.0.1"

_SHA256 = ("sha256",)


def _check_hash(reader: SpecReader, content: Mapping[str, JSONValue], name: str) -> None:
    # Validated as Rekor's schema does, then ignored: the server computes both hashes.
    path = f"content.{name}"
    obj = reader.obj(content, name, path, required=False)
    if obj is None:
        return
    reader.enum(
        reader.string(obj, "algorithm", f"{path}.algorithm", required=True), f"{path}.algorithm",
        _SHA256,
    )  # fmt: skip
    reader.string(obj, "value", f"{path}.value", required=True)


def _envelope(text: str) -> Envelope:
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MalformedEntry(f"could not verify envelope: invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise MalformedEntry(
            f"could not verify envelope: json: cannot unmarshal {go_type(document)} into Go "
            "value of type dsse.Envelope"
        )
    payload, payload_type = document.get("payload", ""), document.get("payloadType", "")
    raw_signatures = document.get("signatures") or []
    if not isinstance(payload, str) or not isinstance(payload_type, str):
        raise MalformedEntry("could not verify envelope: payload and payloadType must be strings")
    if not isinstance(raw_signatures, list):
        raise MalformedEntry("could not verify envelope: signatures must be an array")
    if len(raw_signatures) > MAX_ENVELOPE_SIGNATURES:
        raise MalformedEntry(
            f"DSSE envelope has {len(raw_signatures)} signatures; "
            f"at most {MAX_ENVELOPE_SIGNATURES} are accepted"
        )
    signatures = []
    for item in raw_signatures:
        if not isinstance(item, dict) or not isinstance(item.get("sig", ""), str):
            raise MalformedEntry("could not verify envelope: a signature is not an object")
        keyid = item.get("keyid", "")
        signatures.append(
            EnvelopeSignature(keyid if isinstance(keyid, str) else "", item.get("sig", "").encode())
        )
    return Envelope(
        payload_type=payload_type, payload=payload.encode(), signatures=tuple(signatures)
    )


def canonicalize(spec: JSONValue) -> CanonicalEntry:
    """Validate and verify an intoto v0.0.1 spec; return its canonical entry.

    Raises ``MalformedEntry``, ``NotInsertable``, ``KeyUnparseable`` or ``SignatureInvalid``.
    """
    if not isinstance(spec, dict):
        raise MalformedEntry(f"unsupported input type {go_type(spec)} for DecodeEntry")
    reader = SpecReader()
    content = reader.obj(spec, "content", "content", required=True)
    public_key_text = reader.string(spec, "publicKey", "publicKey", required=True)
    envelope_text = None
    if content is not None:
        envelope_text = reader.string(content, "envelope", "content.envelope", required=False)
        _check_hash(reader, content, "hash")
        _check_hash(reader, content, "payloadHash")
    reader.raise_if_any()
    if content is None or public_key_text is None:  # pragma: no cover - the reader required them
        raise MalformedEntry("missing content or publicKey")

    try:
        material = parse_material(decode_b64_field(public_key_text, "publicKey"))
        verify_key = message_verifier(material)
    except (MaterialError, UnsupportedKeyType) as exc:
        raise KeyUnparseable(f"invalid public key: {exc}") from None
    if not envelope_text:
        raise NotInsertable("missing envelope content")

    envelope = _envelope(envelope_text)
    accepted_signature(verify_key, envelope, pae_message(envelope))
    try:
        statement = b64decode_std(envelope.payload)
    except GoDecodeError as exc:
        raise MalformedEntry(f"could not decode envelope payload: {exc}") from None
    if not envelope.payload or not envelope.payload_type:
        raise NotInsertable("invalid DSSE envelope")

    envelope_hash = hashlib.sha256(envelope_text.encode()).hexdigest()
    payload_hash = hashlib.sha256(statement).hexdigest()
    canonical_spec = {
        "content": {
            "hash": {"algorithm": "sha256", "value": envelope_hash},
            "payloadHash": {"algorithm": "sha256", "value": payload_hash},
        },
        "publicKey": b64encode_std(material.canonical_pem),
    }
    search_keys = {digest_key("sha256", envelope_hash), digest_key("sha256", payload_hash)}
    search_keys |= material_keys(material)
    search_keys |= statement_digest_keys(envelope.payload_type, statement)
    return CanonicalEntry(
        kind=KIND,
        api_version=API_VERSION,
        leaf=canonical_leaf(KIND, API_VERSION, canonical_spec),
        search_keys=frozenset(search_keys),
        attestation=statement,
        attestation_key=f"sha256:{payload_hash}",
    )
