"""intoto v0.0.1, as cosign's library (``cosign attest --rekor-entry-type intoto``) and Tekton
Chains upload it: the envelope as a JSON string and one public key."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
import rekor_types

from services.log.rekor.errors import (
    KeyUnparseable,
    MalformedEntry,
    NotInsertable,
    SignatureInvalid,
)
from services.log.rekor.kinds import canonicalize_proposed_entry
from tests.services.log.rekor import material as m

PAYLOAD_TYPE = "application/vnd.in-toto+json"
SUBJECT = "ab" * 32


def _envelope(key_type: str = "ecdsa-p256", *, signed_by: int = 0) -> str:
    payload = m.statement([SUBJECT])
    # private_key is cached by its arguments as written: slot 0 is spelt by leaving it out.
    signer = m.private_key(key_type, slot=signed_by) if signed_by else m.private_key(key_type)
    return m.envelope_json(
        payload, PAYLOAD_TYPE, [m.sign_message(signer, m.pae(PAYLOAD_TYPE, payload))]
    )


def _body(envelope: str | None, key_type: str = "ecdsa-p256", **content: Any) -> bytes:
    key = m.public_pem(m.private_key(key_type))
    if envelope is not None:
        content["envelope"] = envelope
    spec = {"content": content, "publicKey": m.b64(key)}
    return json.dumps({"apiVersion": "0.0.1", "kind": "intoto", "spec": spec}).encode()


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "rsa-2048", "ed25519"])
def test_cosign_shaped_entry_is_accepted_with_rekors_canonical_form(key_type: str) -> None:
    envelope = _envelope(key_type)
    entry = canonicalize_proposed_entry(_body(envelope, key_type))
    leaf = json.loads(entry.leaf)
    statement = base64.b64decode(json.loads(envelope)["payload"])
    assert leaf["apiVersion"] == "0.0.1"
    assert leaf["kind"] == "intoto"
    assert leaf["spec"]["content"] == {
        "hash": {"algorithm": "sha256", "value": hashlib.sha256(envelope.encode()).hexdigest()},
        "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(statement).hexdigest()},
    }
    key = m.public_pem(m.private_key(key_type))
    assert base64.b64decode(leaf["spec"]["publicKey"]) == key
    model = rekor_types.Intoto.model_validate_json(entry.leaf)
    assert isinstance(model.spec.root, rekor_types.intoto.IntotoV001Schema)
    # The auditor's query by image digest finds it through the in-toto subject.
    assert f"sha256:{SUBJECT}" in entry.search_keys
    assert entry.attestation == statement


def test_client_hashes_are_recomputed() -> None:
    envelope = _envelope()
    wrong = {"algorithm": "sha256", "value": "00" * 32}
    entry = canonicalize_proposed_entry(_body(envelope, hash=wrong, payloadHash=wrong))
    content = json.loads(entry.leaf)["spec"]["content"]
    assert content["hash"]["value"] == hashlib.sha256(envelope.encode()).hexdigest()
    assert content["payloadHash"]["value"] != wrong["value"]


def test_signature_by_another_key_is_rejected() -> None:
    with pytest.raises(SignatureInvalid):
        canonicalize_proposed_entry(_body(_envelope(signed_by=1)))


def test_one_verifying_signature_of_several_is_enough() -> None:
    """Rekor wraps the key as one DSSE verifier with threshold one."""
    payload = m.statement([SUBJECT])
    message = m.pae(PAYLOAD_TYPE, payload)
    other, own = m.private_key("ecdsa-p256", slot=1), m.private_key("ecdsa-p256")
    envelope = m.envelope_json(
        payload, PAYLOAD_TYPE, [m.sign_message(other, message), m.sign_message(own, message)]
    )
    canonicalize_proposed_entry(_body(envelope))


def test_without_an_envelope_it_is_not_insertable() -> None:
    digest = {"algorithm": "sha256", "value": "00" * 32}
    with pytest.raises(NotInsertable, match="missing envelope content"):
        canonicalize_proposed_entry(_body(None, hash=digest))


@pytest.mark.parametrize(
    "envelope",
    ["not json", "[]", '{"payload": 1, "payloadType": "x", "signatures": []}', '{"signatures": 7}'],
)
def test_malformed_envelope_is_a_client_error(envelope: str) -> None:
    with pytest.raises(MalformedEntry):
        canonicalize_proposed_entry(_body(envelope))


def test_public_key_that_does_not_parse_is_rejected() -> None:
    spec = {"content": {"envelope": _envelope()}, "publicKey": m.b64(b"not a key")}
    body = json.dumps({"apiVersion": "0.0.1", "kind": "intoto", "spec": spec}).encode()
    with pytest.raises(KeyUnparseable):
        canonicalize_proposed_entry(body)


def test_missing_public_key_is_a_schema_error() -> None:
    spec = {"content": {"envelope": _envelope()}}
    body = json.dumps({"apiVersion": "0.0.1", "kind": "intoto", "spec": spec}).encode()
    with pytest.raises(MalformedEntry, match="publicKey in body is required"):
        canonicalize_proposed_entry(body)
