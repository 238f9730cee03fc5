"""``dsse`` v0.0.1: a DSSE envelope, of which only hashes and signatures are logged.

Proposed (what sigstore-python ``attest`` and sigstore-js send)::

    {"apiVersion": "0.0.1", "kind": "dsse", "spec": {"proposedContent": {
      "envelope": "<the DSSE envelope as a JSON *string*>",
      "verifiers": ["<b64 PEM key | cert | chain>", ...]}}}

Canonical (the leaf; ``proposedContent`` is never stored)::

    {"apiVersion": "0.0.1", "kind": "dsse", "spec": {
      "envelopeHash": {"algorithm": "sha256", "value": "<hex sha256 of the envelope string>"},
      "payloadHash": {"algorithm": "sha256", "value": "<hex sha256 of the decoded payload>"},
      "signatures": [{"signature": "<sig string from the envelope>",
                      "verifier": "<b64 canonical PEM>"}, ...]}}   # sorted by signature

Every envelope signature must be verified by one of the verifiers; each verifier must verify at
least one signature until all are verified. Sending the canonical fields instead of
``proposedContent`` is refused as not insertable, as Rekor does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from services.log.rekor._dsse import (
    MAX_ENVELOPE_SIGNATURES,
    MAX_VERIFIERS,
    Envelope,
    EnvelopeSignature,
    dsse_b64decode,
    verify_envelope,
)
from services.log.rekor._go import b64encode_std
from services.log.rekor.entry import (
    CanonicalEntry,
    JSONValue,
    SpecReader,
    canonical_leaf,
    decode_b64_field,
    go_json_loads,
    go_type,
    json_kind,
)
from services.log.rekor.errors import MalformedEntry, NotInsertable
from services.log.rekor.searchkeys import digest_key, material_keys, statement_digest_keys

__all__ = ["API_VERSION", "KIND", "canonicalize"]

KIND = "dsse"
API_VERSION = "0.0.1"

_SHA256 = ("sha256",)


def _read_hash(reader: SpecReader, spec: Mapping[str, JSONValue], name: str) -> bool:
    obj = reader.obj(spec, name, name, required=False)
    if obj is None:
        return name in spec and spec[name] is not None
    reader.enum(
        reader.string(obj, "algorithm", f"{name}.algorithm", required=True),
        f"{name}.algorithm",
        _SHA256,
    )
    reader.string(obj, "value", f"{name}.value", required=True)
    return True


def _read_canonical_signatures(reader: SpecReader, spec: Mapping[str, JSONValue]) -> bool:
    items = reader.array(spec, "signatures", "signatures", required=False, min_items=1)
    if items is None:
        return False
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            reader.errors.append(
                f'signatures.{i} in body must be of type object: "{go_type(item)}"'
            )
            continue
        reader.string(item, "signature", f"signatures.{i}.signature", required=True)
        reader.string(item, "verifier", f"signatures.{i}.verifier", required=True)
    return True


def _parse_envelope(text: str) -> Envelope:
    # Go: json.Unmarshal into go-securesystemslib's dsse.Envelope. Unknown fields are ignored,
    # JSON null leaves a field at its zero value, a wrong type is an error.
    try:
        doc = go_json_loads(text)
    except ValueError as exc:
        raise MalformedEntry(f"invalid DSSE envelope JSON: {exc}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise MalformedEntry(
            f"json: cannot unmarshal {json_kind(doc)} into Go value of type dsse.Envelope"
        )
    payload_type = _string_field(doc, "payloadType", "Envelope.payloadType")
    payload = _string_field(doc, "payload", "Envelope.payload")
    raw_signatures = doc.get("signatures")
    signatures: list[EnvelopeSignature] = []
    if raw_signatures is not None:
        if not isinstance(raw_signatures, list):
            raise MalformedEntry(
                f"json: cannot unmarshal {json_kind(raw_signatures)} into Go struct field "
                "Envelope.signatures of type []dsse.Signature"
            )
        for item in raw_signatures:
            if item is None:
                item = {}
            if not isinstance(item, dict):
                raise MalformedEntry(
                    f"json: cannot unmarshal {json_kind(item)} into Go struct field "
                    "Envelope.signatures of type dsse.Signature"
                )
            signatures.append(
                EnvelopeSignature(
                    keyid=_string_field(item, "keyid", "Envelope.signatures.keyid"),
                    sig=_string_field(item, "sig", "Envelope.signatures.sig").encode("utf-8"),
                )
            )
    return Envelope(payload_type, payload.encode("utf-8"), tuple(signatures))


def _string_field(doc: Mapping[str, object], name: str, go_field: str) -> str:
    value = doc.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedEntry(
            f"json: cannot unmarshal {json_kind(value)} into Go struct field {go_field} "
            "of type string"
        )
    return value


def canonicalize(spec: JSONValue) -> CanonicalEntry:
    """Validate and verify a dsse spec; return its canonical entry.

    Raises ``MalformedEntry``, ``NotInsertable``, ``KeyUnparseable`` or ``SignatureInvalid``.
    """
    if not isinstance(spec, dict):
        raise MalformedEntry(f"unsupported input type {go_type(spec)} for DecodeEntry")

    reader = SpecReader()
    has_envelope_hash = _read_hash(reader, spec, "envelopeHash")
    has_payload_hash = _read_hash(reader, spec, "payloadHash")
    proposed = reader.obj(spec, "proposedContent", "proposedContent", required=False)
    envelope_text: str | None = None
    verifier_values: list[JSONValue] = []
    if proposed is not None:
        envelope_text = reader.string(
            proposed, "envelope", "proposedContent.envelope", required=True
        )
        verifier_values = (
            reader.array(
                proposed, "verifiers", "proposedContent.verifiers", required=True, min_items=1
            )
            or []
        )
        for i, item in enumerate(verifier_values):
            if item is not None and not isinstance(item, str):
                path = f"proposedContent.verifiers.{i}"
                reader.errors.append(f'{path} in body must be of type string: "{go_type(item)}"')
    has_signatures = _read_canonical_signatures(reader, spec)
    reader.raise_if_any()

    if proposed is None:
        if has_envelope_hash and has_payload_hash and has_signatures:
            raise NotInsertable("missing proposed content")
        raise MalformedEntry(
            "either proposedContent or envelopeHash, payloadHash, and signatures must be present"
        )
    if has_envelope_hash or has_payload_hash or has_signatures:
        raise MalformedEntry(
            "either proposedContent or envelopeHash, payloadHash, and signatures must be "
            "present but not both"
        )
    if envelope_text is None:  # pragma: no cover - the reader required it
        raise MalformedEntry("missing proposed DSSE envelope")

    verifiers: list[bytes | None] = [
        None if v is None else decode_b64_field(str(v), "") for v in verifier_values
    ]
    envelope = _parse_envelope(envelope_text)
    if not envelope.signatures:
        raise MalformedEntry("DSSE envelope must contain 1 or more signatures")
    if len(envelope.signatures) > MAX_ENVELOPE_SIGNATURES:
        raise MalformedEntry(
            f"DSSE envelope has {len(envelope.signatures)} signatures; "
            f"at most {MAX_ENVELOPE_SIGNATURES} are accepted"
        )
    keys: list[bytes] = []
    for verifier in verifiers:
        if verifier is None:
            raise MalformedEntry("an invalid null verifier was provided in ProposedContent")
        keys.append(verifier)
    if len(keys) > MAX_VERIFIERS:
        raise MalformedEntry(
            f"{len(keys)} verifiers were provided; at most {MAX_VERIFIERS} are accepted"
        )

    by_signature, _ = verify_envelope(keys, envelope, stop_when_all_verified=True)

    payload = dsse_b64decode(envelope.payload)  # cannot fail: verification decoded it
    payload_hash = hashlib.sha256(payload).hexdigest()
    envelope_hash = hashlib.sha256(envelope_text.encode("utf-8")).hexdigest()
    signatures = [
        {"signature": sig.decode("utf-8"), "verifier": b64encode_std(material.canonical_pem)}
        for sig, material in sorted(by_signature.items())
    ]
    canonical_spec = {
        "envelopeHash": {"algorithm": "sha256", "value": envelope_hash},
        "payloadHash": {"algorithm": "sha256", "value": payload_hash},
        "signatures": signatures,
    }
    search_keys = {digest_key("sha256", payload_hash), digest_key("sha256", envelope_hash)}
    for material in by_signature.values():
        search_keys |= material_keys(material)
    search_keys |= statement_digest_keys(envelope.payload_type, payload)
    return CanonicalEntry(
        kind=KIND,
        api_version=API_VERSION,
        leaf=canonical_leaf(KIND, API_VERSION, canonical_spec),
        search_keys=frozenset(search_keys),
    )
