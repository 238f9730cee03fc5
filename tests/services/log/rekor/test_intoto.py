"""intoto v0.0.2: the body ``@sigstore/cli attest`` sends, its canonical form, rejections."""

from __future__ import annotations

import base64
import hashlib
import json
import textwrap
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

INTOTO = "application/vnd.in-toto+json"
IMAGE = "feed" * 16


def _body(key_type: str = "ecdsa-p256", keyid: str = "", payload: bytes | None = None) -> bytes:
    key = m.private_key(key_type)
    payload = m.statement([IMAGE], version="v0.1") if payload is None else payload
    sig = m.sign_message(key, m.pae(INTOTO, payload))
    return m.intoto_body(payload, INTOTO, sig, m.public_pem(key), keyid)


def _doc(body: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(body)
    return doc


def test_sigstore_js_body_is_accepted_with_the_canonical_form() -> None:
    key = m.private_key("ecdsa-p256")
    payload = m.statement([IMAGE], version="v0.1")
    sig = m.sign_message(key, m.pae(INTOTO, payload))
    body = m.intoto_body(payload, INTOTO, sig, m.public_pem(key), keyid="kid-1")
    entry = canonicalize_proposed_entry(body)
    proposed = _doc(body)["spec"]["content"]
    expected = {
        "apiVersion": "0.0.2",
        "kind": "intoto",
        "spec": {
            "content": {
                "envelope": {
                    "payloadType": INTOTO,
                    "signatures": [
                        {
                            "keyid": "kid-1",
                            "publicKey": m.b64(m.public_pem(key)),
                            "sig": m.b64(m.b64(sig).encode()),
                        }
                    ],
                },
                "hash": proposed["hash"],
                "payloadHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(payload).hexdigest(),
                },
            }
        },
    }
    assert entry.leaf == m.jcs(expected)
    assert entry.attestation == payload
    assert entry.attestation_key == f"sha256:{hashlib.sha256(payload).hexdigest()}"
    assert f"sha256:{IMAGE}" in entry.search_keys
    assert "sha1:" + "ab" * 20 in entry.search_keys  # SLSA 0.2 material digest, lowercased


def test_what_sigstore_js_verifies_in_the_body_holds() -> None:
    # @sigstore/verify checks payloadHash and envelope.signatures[0].sig (base64 twice).
    key = m.private_key("ed25519")
    payload = m.statement([IMAGE])
    sig = m.sign_message(key, m.pae(INTOTO, payload))
    entry = canonicalize_proposed_entry(m.intoto_body(payload, INTOTO, sig, m.public_pem(key)))
    content = json.loads(entry.leaf)["spec"]["content"]
    assert base64.b64decode(base64.b64decode(content["envelope"]["signatures"][0]["sig"])) == sig
    assert content["payloadHash"]["value"] == hashlib.sha256(payload).hexdigest()
    assert "keyid" not in content["envelope"]["signatures"][0]
    assert "payload" not in content["envelope"]


def test_leaf_validates_as_sigstore_rekor_types_intoto_v002() -> None:
    entry = canonicalize_proposed_entry(_body("rsa-2048"))
    model = rekor_types.Intoto.model_validate_json(entry.leaf)
    assert isinstance(model.spec.root, rekor_types.intoto.IntotoV002Schema)


def test_client_payload_hash_is_ignored_and_recomputed() -> None:
    doc = _doc(_body())
    doc["spec"]["content"]["payloadHash"]["value"] = "00" * 32
    entry = canonicalize_proposed_entry(json.dumps(doc).encode())
    assert json.loads(entry.leaf)["spec"]["content"]["payloadHash"]["value"] != "00" * 32


def test_public_key_is_canonicalized_so_pem_wrapping_does_not_change_the_leaf() -> None:
    key = m.private_key("ecdsa-p256")
    payload = m.statement([IMAGE])
    sig = m.sign_message(key, m.pae(INTOTO, payload))
    reference = canonicalize_proposed_entry(m.intoto_body(payload, INTOTO, sig, m.public_pem(key)))
    doc = _doc(m.intoto_body(payload, INTOTO, sig, m.public_pem(key)))
    lines = m.public_pem(key).decode().strip().splitlines()
    wrapped = "\n".join([lines[0], *textwrap.wrap("".join(lines[1:-1]), 40), lines[-1]])
    doc["spec"]["content"]["envelope"]["signatures"][0]["publicKey"] = m.b64(wrapped.encode())
    assert canonicalize_proposed_entry(json.dumps(doc).encode()).leaf == reference.leaf


# --- rejections --------------------------------------------------------------------------------


def test_bad_signature_is_rejected() -> None:
    key = m.private_key("ecdsa-p256")
    payload = m.statement([IMAGE])
    sig = m.sign_message(key, m.pae("text/plain", payload))  # signed under another type
    with pytest.raises(SignatureInvalid, match="threshold"):
        canonicalize_proposed_entry(m.intoto_body(payload, INTOTO, sig, m.public_pem(key)))


def test_signature_verified_only_with_its_own_public_key() -> None:
    doc = _doc(_body())
    other = m.public_pem(m.private_key("ecdsa-p256", 1))
    doc["spec"]["content"]["envelope"]["signatures"][0]["publicKey"] = m.b64(other)
    with pytest.raises(SignatureInvalid):
        canonicalize_proposed_entry(json.dumps(doc).encode())


def test_missing_payload_is_not_insertable() -> None:
    doc = _doc(_body())
    del doc["spec"]["content"]["envelope"]["payload"]
    with pytest.raises(NotInsertable) as info:
        canonicalize_proposed_entry(json.dumps(doc).encode())
    assert info.value.message == (
        "error processing entry: entry not insertable into log: missing envelope content"
    )


def test_missing_envelope_hash_is_a_client_error() -> None:
    doc = _doc(_body())
    del doc["spec"]["content"]["hash"]
    with pytest.raises(MalformedEntry) as info:
        canonicalize_proposed_entry(json.dumps(doc).encode())
    assert info.value.detail == "missing envelope digest"


def test_null_signature_entry_is_not_insertable() -> None:
    doc = _doc(_body())
    doc["spec"]["content"]["envelope"]["signatures"].append(None)
    with pytest.raises(NotInsertable, match="missing signature entry"):
        canonicalize_proposed_entry(json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("mutate", "detail"),
    [
        (
            lambda c: c.pop("envelope"),
            "validation failure list:\ncontent.envelope in body is required",
        ),
        (
            lambda c: c["envelope"].pop("signatures"),
            "validation failure list:\ncontent.envelope.signatures in body is required",
        ),
        (
            lambda c: c["envelope"]["signatures"][0].pop("publicKey"),
            "validation failure list:\ncontent.envelope.signatures.0.publicKey in body is required",
        ),
        (
            lambda c: c["hash"].update(algorithm="sha512"),
            "validation failure list:\ncontent.hash.algorithm in body should be one of [sha256]",
        ),
        (
            lambda c: c["envelope"].update(payload="not-base64"),
            "failed parsing base64 data: illegal base64 data at input byte 3",
        ),
    ],
)  # fmt: skip
def test_malformed_spec(mutate: Any, detail: str) -> None:
    doc = _doc(_body())
    mutate(doc["spec"]["content"])
    with pytest.raises(MalformedEntry) as info:
        canonicalize_proposed_entry(json.dumps(doc).encode())
    assert info.value.detail == detail


def test_public_key_that_does_not_parse_is_rejected() -> None:
    doc = _doc(_body())
    doc["spec"]["content"]["envelope"]["signatures"][0]["publicKey"] = m.b64(b"nope")
    with pytest.raises(KeyUnparseable, match="could not parse public key as x509"):
        canonicalize_proposed_entry(json.dumps(doc).encode())


def test_single_base64_payload_is_rejected() -> None:
    # A client that forgets the double encoding sends base64(payload): the server decodes it
    # once and then cannot base64-decode the JSON statement.
    doc = _doc(_body())
    envelope = doc["spec"]["content"]["envelope"]
    envelope["payload"] = base64.b64decode(envelope["payload"]).decode()
    envelope["payload"] = m.b64(base64.b64decode(envelope["payload"]))
    with pytest.raises(MalformedEntry, match="unable to base64 decode payload"):
        canonicalize_proposed_entry(json.dumps(doc).encode())
