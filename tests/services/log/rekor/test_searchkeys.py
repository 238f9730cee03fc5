"""Search keys: what entries are filed under equals what queries look up."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization

from services.log.rekor.errors import MalformedSearchQuery, SchemaViolation, UnsupportedPKIFormat
from services.log.rekor.kinds import canonicalize_proposed_entry
from services.log.rekor.searchkeys import (
    MAX_KEY_LENGTH,
    index_keys_for_email,
    index_keys_for_hash,
    index_keys_for_public_key,
    index_keys_for_subject,
    keys_for_query,
    statement_digest_keys,
)
from tests.services.log.rekor import material as m

INTOTO = "application/vnd.in-toto+json"
ARTIFACT = b"release.tar.gz contents"


def _cert_entry_keys() -> frozenset[str]:
    chain = m.chain()
    digest, sig = m.sign_digest(chain.leaf_key, ARTIFACT, "sha256")
    return canonicalize_proposed_entry(
        m.hashedrekord_body(chain.pem(chain.leaf), sig, digest.hex())
    ).search_keys


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("AB" * 32, "sha256:" + "ab" * 32),
        ("sha256:" + "Ab" * 32, "sha256:" + "ab" * 32),
        ("cd" * 20, "sha1:" + "cd" * 20),
        ("sha384:" + "ef" * 48, "sha384:" + "ef" * 48),
        ("01" * 64, "sha512:" + "01" * 64),
    ],
)
def test_hash_queries(query: str, key: str) -> None:
    assert index_keys_for_hash(query) == frozenset({key})


@pytest.mark.parametrize(
    "query",
    ["", "ab" * 31, "sha256:" + "ab" * 20, "SHA256:" + "ab" * 32, "md5:" + "ab" * 16,
     "ab" * 32 + "\n", "zz" * 32],
)  # fmt: skip
def test_bad_hash_queries_are_422_pattern_failures(query: str) -> None:
    with pytest.raises(SchemaViolation) as info:
        index_keys_for_hash(query)
    assert (info.value.status, info.value.code) == (422, 605)


def test_artifact_digest_search_finds_hashedrekord_in_any_hex_case() -> None:
    keys = _cert_entry_keys()
    digest = hashlib.sha256(ARTIFACT).hexdigest()
    assert index_keys_for_hash(digest.upper()) <= keys


def test_key_search_finds_entries_signed_by_a_certificate_for_that_key() -> None:
    chain = m.chain()
    keys = _cert_entry_keys()
    assert index_keys_for_public_key(m.public_pem(chain.leaf_key)) <= keys
    assert index_keys_for_public_key(chain.pem(chain.leaf)) <= keys
    # A different certificate for the same key is a different cert key.
    assert index_keys_for_public_key(chain.pem(chain.leaf)) != index_keys_for_public_key(
        m.public_pem(chain.leaf_key)
    )


def test_der_public_key_and_der_certificate_are_accepted() -> None:
    chain = m.chain()
    spki_der = chain.leaf_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cert_der = chain.leaf.public_bytes(serialization.Encoding.DER)
    assert index_keys_for_public_key(spki_der) == index_keys_for_public_key(
        m.public_pem(chain.leaf_key)
    )
    assert index_keys_for_public_key(cert_der) == index_keys_for_public_key(chain.pem(chain.leaf))


def test_unparseable_or_unsupported_public_key_queries() -> None:
    with pytest.raises(MalformedSearchQuery) as info:
        index_keys_for_public_key(b"nonsense")
    assert info.value.to_json() == {
        "code": 400,
        "message": "public key provided could not be parsed",
    }
    with pytest.raises(UnsupportedPKIFormat) as unsupported:
        index_keys_for_public_key(b"whatever", "pgp")
    assert unsupported.value.status == 400


def test_identity_searches_are_case_insensitive() -> None:
    keys = _cert_entry_keys()
    assert index_keys_for_email("alice@EXAMPLE.com") <= keys
    assert index_keys_for_subject("ALICE@example.com") <= keys
    uri = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1"
    assert index_keys_for_subject(uri.upper()) <= keys
    assert index_keys_for_subject("bob") <= keys  # sigstore otherName SAN


def test_long_identities_are_hashed_into_the_key_on_both_sides() -> None:
    long_uri = "https://example.com/" + "x" * 600
    root_key = m.private_key("ecdsa-p256", 10)
    root = m.make_ca("R", root_key)
    leaf_key = m.private_key("ecdsa-p256", 11)
    leaf = m.make_leaf(leaf_key, (root, root_key), uris=[long_uri])
    digest, sig = m.sign_digest(leaf_key, ARTIFACT, "sha256")
    pem = leaf.public_bytes(serialization.Encoding.PEM)
    entry = canonicalize_proposed_entry(m.hashedrekord_body(pem, sig, digest.hex()))
    assert all(len(k) <= MAX_KEY_LENGTH for k in entry.search_keys)
    (query_key,) = index_keys_for_subject(long_uri.upper())
    assert query_key.startswith("subject-sha256:")
    assert query_key in entry.search_keys


@pytest.mark.parametrize("version", ["v0.1", "v1"])
def test_every_in_toto_subject_digest_is_a_key(version: str) -> None:
    digests = ["aa" * 32, "BB" * 32, "cc" * 32]
    keys = statement_digest_keys(INTOTO, m.statement(digests, version=version))
    assert {f"sha256:{d.lower()}" for d in digests} <= keys


def test_statement_keys_tolerate_junk() -> None:
    assert statement_digest_keys(INTOTO, b"not json") == set()
    assert statement_digest_keys(INTOTO, b"[1, 2]") == set()
    assert statement_digest_keys("text/plain", m.statement(["aa" * 32])) == set()
    odd = {
        "subject": [
            {"digest": {"sha256": "ab", "email": "x@y", "gitCommit": "ABC"}},
            {"digest": ["not", "a", "map"]},
            "not an object",
            {"digest": {"sha512": 5}},
        ]
    }
    assert statement_digest_keys(INTOTO, json.dumps(odd).encode()) == {"sha256:ab", "gitcommit:abc"}


def test_slsa_provenance_in_dsse_is_found_by_the_image_digest() -> None:
    image = "0123456789abcdef" * 4
    key = m.private_key("ecdsa-p256")
    payload = m.statement([image])
    sig = m.sign_message(key, m.pae(INTOTO, payload))
    envelope = m.envelope_json(payload, INTOTO, [sig])
    entry = canonicalize_proposed_entry(m.dsse_body(envelope, [m.public_pem(key)]))
    assert index_keys_for_hash(image) <= entry.search_keys
    assert index_keys_for_hash(f"sha256:{hashlib.sha256(payload).hexdigest()}") <= entry.search_keys


# --- SearchIndex bodies ------------------------------------------------------------------------


def test_keys_for_query_one_set_per_field_in_rekor_order() -> None:
    chain = m.chain()
    query = {
        "subject": "bob",
        "email": "Alice@Example.com",
        "publicKey": {
            "format": "x509",
            "content": base64.b64encode(chain.pem(chain.leaf)).decode(),
        },
        "hash": "sha256:" + "ab" * 32,
        "operator": "and",
    }
    fields = keys_for_query(query)
    assert fields == [
        {"sha256:" + "ab" * 32},
        set(index_keys_for_public_key(chain.pem(chain.leaf))),
        {"email:alice@example.com"},
        {"subject:bob"},
    ]
    assert all(f <= _cert_entry_keys() for f in fields[1:])


def test_empty_query_has_no_fields() -> None:
    assert keys_for_query({}) == []
    assert keys_for_query({"operator": "or"}) == []


@pytest.mark.parametrize(
    ("query", "error", "code"),
    [
        ({"hash": 5}, MalformedSearchQuery, 400),
        ({"hash": "xyz"}, SchemaViolation, 605),
        ({"publicKey": {"content": "eA=="}}, SchemaViolation, 602),
        ({"publicKey": {"format": "gpg", "content": "eA=="}}, SchemaViolation, 606),
        ({"publicKey": {"format": "ssh", "content": "eA=="}}, UnsupportedPKIFormat, 400),
        ({"publicKey": {"format": "x509", "content": "%%"}}, MalformedSearchQuery, 400),
        ({"publicKey": {"format": "x509"}}, MalformedSearchQuery, 400),
        ({"publicKey": "x509"}, MalformedSearchQuery, 400),
        ({"email": "not an email"}, SchemaViolation, 601),
        ({"subject": ""}, SchemaViolation, 604),
        ({"subject": "x" * 513}, SchemaViolation, 603),
    ],
)
def test_bad_search_queries(query: dict[str, object], error: type[Exception], code: int) -> None:
    with pytest.raises(error) as info:
        keys_for_query(query)
    assert getattr(info.value, "code", None) == code
