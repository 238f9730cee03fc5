"""dsse v0.0.1: sigstore-python's own request, multi-signature envelopes, every rejection path."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
import rekor_types
from cryptography.hazmat.primitives.asymmetric import ec
from sigstore import dsse as sigstore_dsse
from sigstore._internal.rekor.client import RekorClient
from sigstore._utils import base64_encode_pem_cert
from sigstore.errors import VerificationError
from sigstore.verify.verifier import _validate_dsse_v001_entry_body

from services.log.rekor.errors import (
    CertificateChainInvalid,
    KeyUnparseable,
    MalformedEntry,
    NotInsertable,
    SignatureInvalid,
)
from services.log.rekor.kinds import canonicalize_proposed_entry
from tests.services.log.rekor import material as m

INTOTO = "application/vnd.in-toto+json"
IMAGE = "c0ffee" + "00" * 29


def _signed(
    payload: bytes, keys: list[m.PrivateKey], payload_type: str = INTOTO
) -> tuple[str, list[bytes]]:
    sigs = [m.sign_message(k, m.pae(payload_type, payload)) for k in keys]
    return m.envelope_json(payload, payload_type, sigs), sigs


def test_sigstore_python_attest_request_is_accepted_and_matches_its_body_check() -> None:
    chain = m.chain()
    key = chain.leaf_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    stmt = sigstore_dsse.StatementBuilder(
        subjects=[
            sigstore_dsse.Subject(name="img", digest=sigstore_dsse.DigestSet({"sha256": IMAGE}))
        ],
        predicate_type="https://slsa.dev/provenance/v1",
        predicate={"buildDefinition": {}},
    ).build()
    envelope = sigstore_dsse._sign(key, stmt)
    request = RekorClient("http://rekor.invalid")._build_dsse_request(
        envelope=envelope, certificate=chain.leaf
    )
    entry = canonicalize_proposed_entry(json.dumps(request).encode())

    # What sigstore-python's verify (_validate_dsse_v001_entry_body) compares:
    body = rekor_types.Dsse.model_validate_json(entry.leaf)
    spec = body.spec.root
    assert isinstance(spec, rekor_types.dsse.DsseV001Schema2)
    assert spec.proposed_content is None
    assert spec.payload_hash.value == hashlib.sha256(envelope._inner.payload).hexdigest()
    assert spec.signatures == [
        rekor_types.dsse.Signature(
            signature=base64.b64encode(envelope.signature).decode(),
            verifier=base64_encode_pem_cert(chain.leaf),
        )
    ]
    assert spec.envelope_hash.value == hashlib.sha256(envelope.to_json().encode()).hexdigest()
    # sigstore-python's own check, on our leaf: passes; with another signature it fails.
    _validate_dsse_v001_entry_body(
        m.sigstore_bundle_view(entry.leaf, chain.leaf, envelope=envelope)
    )
    other = sigstore_dsse._sign(key, stmt)  # ECDSA is randomized: a different signature
    with pytest.raises(VerificationError, match="signatures do not match"):
        _validate_dsse_v001_entry_body(
            m.sigstore_bundle_view(entry.leaf, chain.leaf, envelope=other)
        )
    # SLSA provenance is found by the image digest it describes.
    assert f"sha256:{IMAGE}" in entry.search_keys
    assert f"sha256:{spec.payload_hash.value}" in entry.search_keys
    assert f"sha256:{spec.envelope_hash.value}" in entry.search_keys


def test_canonical_leaf_has_exactly_hashes_and_signatures() -> None:
    key = m.private_key("ecdsa-p256")
    payload = m.statement([IMAGE])
    envelope, sigs = _signed(payload, [key])
    entry = canonicalize_proposed_entry(m.dsse_body(envelope, [m.public_pem(key)]))
    expected = {
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "envelopeHash": {
                "algorithm": "sha256",
                "value": hashlib.sha256(envelope.encode()).hexdigest(),
            },
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "signatures": [{"signature": m.b64(sigs[0]), "verifier": m.b64(m.public_pem(key))}],
        },
    }
    assert entry.leaf == m.jcs(expected)
    assert b"proposedContent" not in entry.leaf


@pytest.mark.parametrize("key_type", ["rsa-2048", "ecdsa-p384", "ecdsa-p521", "ed25519"])
def test_every_key_type_signs_the_pae(key_type: str) -> None:
    key = m.private_key(key_type)
    envelope, _ = _signed(b'{"hello": "world"}', [key], "application/json")
    entry = canonicalize_proposed_entry(m.dsse_body(envelope, [m.public_pem(key)]))
    assert entry.kind == "dsse"


def test_multi_signature_envelope_sorted_by_signature() -> None:
    keys = [m.private_key("ecdsa-p256"), m.private_key("rsa-2048"), m.private_key("ed25519")]
    envelope, sigs = _signed(m.statement([IMAGE]), keys)
    entry = canonicalize_proposed_entry(m.dsse_body(envelope, [m.public_pem(k) for k in keys]))
    stored = json.loads(entry.leaf)["spec"]["signatures"]
    assert [s["signature"] for s in stored] == sorted(m.b64(s) for s in sigs)
    by_sig = {m.b64(s): m.b64(m.public_pem(k)) for s, k in zip(sigs, keys, strict=True)}
    assert all(by_sig[s["signature"]] == s["verifier"] for s in stored)


def test_verifier_order_does_not_change_the_leaf() -> None:
    keys = [m.private_key("ecdsa-p256"), m.private_key("ed25519")]
    envelope, _ = _signed(m.statement([IMAGE]), keys)
    pems = [m.public_pem(k) for k in keys]
    a = canonicalize_proposed_entry(m.dsse_body(envelope, pems))
    b = canonicalize_proposed_entry(m.dsse_body(envelope, pems[::-1]))
    assert a.leaf == b.leaf


def test_url_safe_base64_in_the_envelope_is_accepted() -> None:
    key = m.private_key("ecdsa-p256")
    payload = b"\xfb\xff" * 40  # encodes with '+' and '/' in standard base64
    sig = m.sign_message(key, m.pae("application/octet-stream", payload))
    envelope = json.dumps(
        {
            "payload": base64.urlsafe_b64encode(payload).decode(),
            "payloadType": "application/octet-stream",
            "signatures": [{"sig": base64.urlsafe_b64encode(sig).decode()}],
        }
    )
    entry = canonicalize_proposed_entry(m.dsse_body(envelope, [m.public_pem(key)]))
    spec = json.loads(entry.leaf)["spec"]
    assert spec["payloadHash"]["value"] == hashlib.sha256(payload).hexdigest()


def test_leaf_round_trips_through_sigstore_rekor_types() -> None:
    key = m.private_key("ecdsa-p256")
    envelope, _ = _signed(m.statement([IMAGE]), [key])
    entry = canonicalize_proposed_entry(m.dsse_body(envelope, [m.public_pem(key)]))
    model = rekor_types.Dsse.model_validate_json(entry.leaf)
    dumped = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert m.jcs(dumped) == entry.leaf


# --- rejections --------------------------------------------------------------------------------


def test_bad_signature_is_rejected() -> None:
    key = m.private_key("ecdsa-p256")
    payload = m.statement([IMAGE])
    sig = m.sign_message(key, m.pae(INTOTO, payload + b" "))
    envelope = m.envelope_json(payload, INTOTO, [sig])
    with pytest.raises(SignatureInvalid) as info:
        canonicalize_proposed_entry(m.dsse_body(envelope, [m.public_pem(key)]))
    assert info.value.message == (
        "error processing entry: could not verify envelope: "
        "Accepted signatures do not match threshold, Found: 0, Expected 1"
    )


def test_mismatched_key_is_rejected() -> None:
    envelope, _ = _signed(m.statement([IMAGE]), [m.private_key("ecdsa-p256")])
    other = m.public_pem(m.private_key("ecdsa-p256", 1))
    with pytest.raises(SignatureInvalid, match="do not match threshold"):
        canonicalize_proposed_entry(m.dsse_body(envelope, [other]))


def test_two_signatures_but_one_verifier_is_rejected() -> None:
    keys = [m.private_key("ecdsa-p256"), m.private_key("ed25519")]
    envelope, _ = _signed(m.statement([IMAGE]), keys)
    with pytest.raises(SignatureInvalid) as info:
        canonicalize_proposed_entry(m.dsse_body(envelope, [m.public_pem(keys[0])]))
    assert info.value.detail == "all signatures must have a key that verifies it"


def test_extra_verifier_that_verifies_nothing_is_rejected_when_tried() -> None:
    # Rekor stops trying verifiers once every signature is verified, so an unused key placed
    # before the signing key is tried, verifies nothing, and fails the threshold.
    signer, stranger = m.private_key("ecdsa-p256"), m.private_key("ecdsa-p256", 1)
    envelope, _ = _signed(m.statement([IMAGE]), [signer])
    with pytest.raises(SignatureInvalid, match="threshold"):
        canonicalize_proposed_entry(
            m.dsse_body(envelope, [m.public_pem(stranger), m.public_pem(signer)])
        )
    entry = canonicalize_proposed_entry(
        m.dsse_body(envelope, [m.public_pem(signer), m.public_pem(stranger)])
    )
    assert len(json.loads(entry.leaf)["spec"]["signatures"]) == 1


def test_canonical_fields_instead_of_proposed_content_are_not_insertable() -> None:
    key = m.private_key("ecdsa-p256")
    envelope, _ = _signed(m.statement([IMAGE]), [key])
    entry = canonicalize_proposed_entry(m.dsse_body(envelope, [m.public_pem(key)]))
    with pytest.raises(NotInsertable) as info:
        canonicalize_proposed_entry(entry.leaf)
    assert info.value.to_json() == {
        "code": 400,
        "message": "error processing entry: entry not insertable into log: "
        "missing proposed content",
    }


def _with_spec(spec: dict[str, Any]) -> bytes:
    return json.dumps({"apiVersion": "0.0.1", "kind": "dsse", "spec": spec}).encode()


def test_proposed_content_with_canonical_fields_is_rejected() -> None:
    key = m.private_key("ecdsa-p256")
    envelope, _ = _signed(m.statement([IMAGE]), [key])
    spec = json.loads(m.dsse_body(envelope, [m.public_pem(key)]))["spec"]
    spec["payloadHash"] = {"algorithm": "sha256", "value": "00" * 32}
    with pytest.raises(MalformedEntry) as info:
        canonicalize_proposed_entry(_with_spec(spec))
    assert info.value.detail.endswith("must be present but not both")


@pytest.mark.parametrize(
    ("spec", "detail"),
    [
        (
            {},
            "either proposedContent or envelopeHash, payloadHash, and signatures must be present",
        ),
        (
            {"proposedContent": {"envelope": "{}"}},
            "validation failure list:\nproposedContent.verifiers in body is required",
        ),
        (
            {"proposedContent": {"envelope": "{}", "verifiers": []}},
            "validation failure list:\nproposedContent.verifiers in body should have at least "
            "1 items",
        ),
        (
            {"proposedContent": {"envelope": "{}", "verifiers": ["eA=="]}},
            "DSSE envelope must contain 1 or more signatures",
        ),
        (
            {"proposedContent": {"envelope": "not json", "verifiers": ["eA=="]}},
            "invalid DSSE envelope JSON: Expecting value: line 1 column 1 (char 0)",
        ),
        (
            {"proposedContent": {"envelope": '{"payload": 1}', "verifiers": ["eA=="]}},
            "json: cannot unmarshal number into Go struct field Envelope.payload of type string",
        ),
        (
            {"proposedContent": {"envelope": '{"signatures": [{"sig": "eA=="}]}',
                                 "verifiers": [None]}},
            "an invalid null verifier was provided in ProposedContent",
        ),
        (
            {"proposedContent": {"envelope": "{}", "verifiers": ["%%%"]}},
            "failed parsing base64 data: illegal base64 data at input byte 0",
        ),
    ],
)  # fmt: skip
def test_malformed_spec(spec: dict[str, Any], detail: str) -> None:
    with pytest.raises(MalformedEntry) as info:
        canonicalize_proposed_entry(_with_spec(spec))
    assert info.value.detail == detail


def test_verifier_that_is_not_a_key_is_rejected() -> None:
    key = m.private_key("ecdsa-p256")
    envelope, _ = _signed(m.statement([IMAGE]), [key])
    with pytest.raises(KeyUnparseable) as info:
        canonicalize_proposed_entry(m.dsse_body(envelope, [b"garbage"]))
    assert info.value.detail == (
        "could not parse public key as x509: invalid public key: failure decoding PEM"
    )


def test_oversized_verifier_chain_is_rejected() -> None:
    chain = m.chain()
    envelope, _ = _signed(m.statement([IMAGE]), [chain.leaf_key])
    eleven = chain.pem(chain.leaf, *([chain.intermediate] * 9), chain.root)
    with pytest.raises(CertificateChainInvalid, match="too many certificates"):
        canonicalize_proposed_entry(m.dsse_body(envelope, [eleven]))


def test_payload_that_is_not_base64_is_rejected() -> None:
    key = m.private_key("ecdsa-p256")
    envelope = json.dumps({"payload": "%%", "payloadType": INTOTO, "signatures": [{"sig": "AA=="}]})
    with pytest.raises(MalformedEntry, match="unable to base64 decode payload"):
        canonicalize_proposed_entry(m.dsse_body(envelope, [m.public_pem(key)]))


def test_too_many_signatures_are_refused_before_any_verification() -> None:
    key = m.private_key("ecdsa-p256")
    envelope = m.envelope_json(b"x", "t", [b"s%d" % i for i in range(17)])
    with pytest.raises(MalformedEntry, match="at most 16"):
        canonicalize_proposed_entry(m.dsse_body(envelope, [m.public_pem(key)]))


def test_subject_digests_are_search_keys_only_for_in_toto_payloads() -> None:
    key = m.private_key("ecdsa-p256")
    payload = m.statement([IMAGE])
    as_json, _ = _signed(payload, [key], "application/json")
    entry = canonicalize_proposed_entry(m.dsse_body(as_json, [m.public_pem(key)]))
    assert f"sha256:{IMAGE}" not in entry.search_keys


def test_verifier_chain_is_not_verified_as_in_rekor() -> None:
    # Rekor's dsse type uses the leaf key of a chain and never verifies the chain itself.
    chain = m.chain()
    stranger = m.make_ca("Unrelated Root", m.private_key("ecdsa-p256", 5))
    envelope, _ = _signed(m.statement([IMAGE]), [chain.leaf_key])
    entry = canonicalize_proposed_entry(m.dsse_body(envelope, [chain.pem(chain.leaf, stranger)]))
    verifier = json.loads(entry.leaf)["spec"]["signatures"][0]["verifier"]
    assert base64.b64decode(verifier) == chain.pem(chain.leaf, stranger)
