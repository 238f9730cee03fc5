"""``intoto`` v0.0.2: a DSSE envelope with per-signature keys (what ``@sigstore/cli attest`` sends).

Proposed, as sigstore-js builds it (``payload`` and ``sig`` are base64 of the envelope's
already-base64 strings, ``publicKey`` is base64 of PEM; ``hash`` is the client's SHA-256 of a
JCS rendering of the envelope, ``payloadHash`` the client's SHA-256 of the raw payload)::

    {"apiVersion": "0.0.2", "kind": "intoto", "spec": {"content": {
      "envelope": {"payloadType": "...", "payload": "<b64(b64(payload))>",
                   "signatures": [{"sig": "<b64(b64(sig))>", "publicKey": "<b64 PEM>",
                                   "keyid": "<optional>"}]},
      "hash": {"algorithm": "sha256", "value": "<hex>"},
      "payloadHash": {"algorithm": "sha256", "value": "<hex>"}}}}

Canonical: the same without ``envelope.payload``; ``payloadHash`` recomputed by the server;
``hash`` kept as the client sent it (Rekor cannot recompute it and does not check it); each
signature's ``sig`` re-encoded and ``publicKey`` re-encoded as canonical PEM (the fix for
sigstore/rekor#1170; clients compare only ``sig`` and ``payloadHash``); ``keyid`` omitted when
empty; signature order as sent. The decoded payload is returned as the attestation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from services.log.rekor._dsse import (
    MAX_ENVELOPE_SIGNATURES,
    Envelope,
    EnvelopeSignature,
    verify_envelope,
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
from services.log.rekor.errors import MalformedEntry, NotInsertable
from services.log.rekor.searchkeys import digest_key, material_keys, statement_digest_keys

__all__ = ["API_VERSION", "KIND", "canonicalize"]

KIND = "intoto"
API_VERSION = "0.0.2"

_SHA256 = ("sha256",)


def _read_hash(
    reader: SpecReader, content: Mapping[str, JSONValue], name: str
) -> dict[str, str] | None:
    path = f"content.{name}"
    obj = reader.obj(content, name, path, required=False)
    if obj is None:
        return None
    algorithm = reader.enum(
        reader.string(obj, "algorithm", f"{path}.algorithm", required=True),
        f"{path}.algorithm",
        _SHA256,
    )
    value = reader.string(obj, "value", f"{path}.value", required=True)
    if algorithm is None or value is None:
        return None
    return {"algorithm": algorithm, "value": value}


def canonicalize(spec: JSONValue) -> CanonicalEntry:
    """Validate and verify an intoto v0.0.2 spec; return its canonical entry.

    Raises ``MalformedEntry``, ``NotInsertable``, ``KeyUnparseable`` or ``SignatureInvalid``.
    """
    if not isinstance(spec, dict):
        raise MalformedEntry(f"unsupported input type {go_type(spec)} for DecodeEntry")

    reader = SpecReader()
    content = reader.obj(spec, "content", "content", required=True)
    envelope_obj = None
    envelope_hash = None
    if content is not None:
        envelope_obj = reader.obj(content, "envelope", "content.envelope", required=True)
        envelope_hash = _read_hash(reader, content, "hash")
        _read_hash(reader, content, "payloadHash")  # validated, then replaced (Rekor ignores it)
    payload_text = payload_type = None
    raw_signatures: list[JSONValue] = []
    if envelope_obj is not None:
        payload_text = reader.string(
            envelope_obj, "payload", "content.envelope.payload", required=False
        )
        payload_type = reader.string(
            envelope_obj, "payloadType", "content.envelope.payloadType", required=True
        )
        raw_signatures = (
            reader.array(
                envelope_obj,
                "signatures",
                "content.envelope.signatures",
                required=True,
                min_items=1,
            )
            or []
        )
    entries: list[tuple[str, str, str] | None] = []
    for i, item in enumerate(raw_signatures):
        path = f"content.envelope.signatures.{i}"
        if item is None:
            entries.append(None)  # Rekor skips a null signature, then refuses the insert
            continue
        if not isinstance(item, dict):
            reader.errors.append(f'{path} in body must be of type object: "{go_type(item)}"')
            continue
        keyid = reader.string(item, "keyid", f"{path}.keyid", required=False)
        sig = reader.string(item, "sig", f"{path}.sig", required=True)
        public_key = reader.string(item, "publicKey", f"{path}.publicKey", required=True)
        if sig is not None and public_key is not None:
            entries.append((keyid or "", sig, public_key))
    reader.raise_if_any()
    if payload_type is None:  # pragma: no cover - the reader required it
        raise MalformedEntry("missing payloadType")

    payload = decode_b64_field(payload_text, "") if payload_text else b""
    decoded: list[tuple[str, bytes, bytes] | None] = [
        None if e is None else (e[0], decode_b64_field(e[1], ""), decode_b64_field(e[2], ""))
        for e in entries
    ]
    present = [d for d in decoded if d is not None]
    if len(present) > MAX_ENVELOPE_SIGNATURES:
        raise MalformedEntry(
            f"DSSE envelope has {len(present)} signatures; "
            f"at most {MAX_ENVELOPE_SIGNATURES} are accepted"
        )
    if not payload:
        raise NotInsertable("missing envelope content")

    envelope = Envelope(
        payload_type=payload_type,
        payload=payload,
        signatures=tuple(EnvelopeSignature(keyid, sig) for keyid, sig, _ in present),
    )
    _, materials = verify_envelope(
        [key for _, _, key in present], envelope, stop_when_all_verified=False
    )
    try:
        statement = b64decode_std(payload)
    except GoDecodeError as exc:
        raise MalformedEntry(f"could not decode envelope payload: {exc}") from None
    payload_hash = hashlib.sha256(statement).hexdigest()

    if not payload_type:
        raise NotInsertable("missing payloadType content")
    if len(present) != len(decoded):
        raise NotInsertable("missing signature entry")
    if envelope_hash is None:
        # Rekor fails Canonicalize here (a 500); it is the client's omission, so 400.
        raise MalformedEntry("missing envelope digest")

    signatures: list[dict[str, str]] = []
    for (key_id, raw_sig, _), material in zip(present, materials, strict=True):
        rendered = {
            "publicKey": b64encode_std(material.canonical_pem),
            "sig": b64encode_std(raw_sig),
        }
        if key_id:
            rendered["keyid"] = key_id
        signatures.append(rendered)
    canonical_spec = {
        "content": {
            "envelope": {"payloadType": payload_type, "signatures": signatures},
            "hash": envelope_hash,
            "payloadHash": {"algorithm": "sha256", "value": payload_hash},
        }
    }
    search_keys = {digest_key("sha256", payload_hash)}
    for material in materials:
        search_keys |= material_keys(material)
    search_keys |= statement_digest_keys(payload_type, statement)
    return CanonicalEntry(
        kind=KIND,
        api_version=API_VERSION,
        leaf=canonical_leaf(KIND, API_VERSION, canonical_spec),
        search_keys=frozenset(search_keys),
        attestation=statement,
        attestation_key=f"sha256:{payload_hash}",
    )
