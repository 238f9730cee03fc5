"""Binding and dispatch of a proposed entry: the errors Rekor answers before any kind code runs."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.log.rekor.errors import (
    MalformedJSON,
    RekorError,
    SchemaViolation,
    UnknownKind,
    UnsupportedKind,
    UnsupportedVersion,
)
from services.log.rekor.kinds import (
    canonicalize_proposed_entry,
    canonicalize_proposed_value,
)
from tests.services.log.rekor import material as m


def _valid_hashedrekord() -> bytes:
    key = m.private_key("ecdsa-p256")
    digest, sig = m.sign_digest(key, b"artifact", "sha256")
    return m.hashedrekord_body(m.public_pem(key), sig, digest.hex())


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        (b"", 422, 602, "proposedEntry in body is required"),
        (b"  \n", 422, 602, "proposedEntry in body is required"),
        (b"{}", 422, 602, "kind in body is required"),
        (b"null", 422, 602, "kind in body is required"),
        (b'{"kind": ""}', 422, 602, "kind in body is required"),
        (b'{"kind": "banana"}', 422, 422, 'invalid kind value: "banana"'),
        (b'{"kind": "hashedrekord"}', 422, 602, "apiVersion in body is required"),
        (b'{"kind": "hashedrekord", "apiVersion": "0.0.1"}', 422, 602, "spec in body is required"),
        (b'{"kind": "hashedrekord", "apiVersion": "0.0.1", "spec": null}', 422, 602,
         "spec in body is required"),
        (b"[1, 2]", 400, 400, 'parsing proposedEntry body from "" failed, because json: cannot '
         "unmarshal array into Go value of type models.ProposedEntry"),
        (b'{"kind": 5}', 400, 400, 'parsing proposedEntry body from "" failed, because json: '
         "cannot unmarshal number into Go struct field .kind of type string"),
        (b'{"kind": "dsse", "apiVersion": 1}', 400, 400, 'parsing proposedEntry body from "" '
         "failed, because json: cannot unmarshal number into Go struct field .apiVersion of type "
         "string"),
    ],
)  # fmt: skip
def test_binding_errors(body: bytes, status: int, code: int, message: str) -> None:
    with pytest.raises(RekorError) as info:
        canonicalize_proposed_entry(body)
    assert (info.value.status, info.value.to_json()) == (status, {"code": code, "message": message})


def test_malformed_json_is_400() -> None:
    with pytest.raises(MalformedJSON) as info:
        canonicalize_proposed_entry(b'{"kind": ')
    assert info.value.status == 400
    assert info.value.message.startswith('parsing proposedEntry body from "" failed, because ')


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_numbers_are_rejected_like_go(constant: bytes) -> None:
    with pytest.raises(MalformedJSON):
        canonicalize_proposed_entry(b'{"kind": "dsse", "x": ' + constant + b"}")


def test_api_version_must_be_semver() -> None:
    with pytest.raises(SchemaViolation) as info:
        canonicalize_proposed_entry(b'{"kind": "dsse", "apiVersion": "v1", "spec": {}}')
    assert info.value.code == 605
    assert info.value.message.startswith("apiVersion in body should match '^(0|[1-9]\\d*)")


def test_api_version_with_trailing_newline_is_not_semver() -> None:
    with pytest.raises(SchemaViolation):
        canonicalize_proposed_entry(b'{"kind": "dsse", "apiVersion": "0.0.1\\n", "spec": {}}')


@pytest.mark.parametrize("kind", ["rekord", "rpm", "tuf", "alpine", "helm", "cose", "jar"])
def test_known_rekor_kinds_this_log_does_not_accept(kind: str) -> None:
    body = json.dumps({"kind": kind, "apiVersion": "0.0.1", "spec": {}}).encode()
    with pytest.raises(UnsupportedKind) as info:
        canonicalize_proposed_entry(body)
    assert info.value.to_json() == {
        "code": 400,
        "message": f"error processing entry: could not unmarshal entry for kind '{kind}'",
    }


@pytest.mark.parametrize(
    ("kind", "version", "message"),
    [
        ("hashedrekord", "0.0.2", "hashedrekord implementation for version '0.0.2' not found: "
         "unable to locate entry for version 0.0.2"),
        ("dsse", "0.0.2", "dsse implementation for version '0.0.2' not found: unable to locate "
         "entry for version 0.0.2"),
        ("intoto", "0.0.3", "intoto implementation for version '0.0.3' not found: unable to "
         "locate entry for version 0.0.3"),
    ],
)  # fmt: skip
def test_unsupported_versions(kind: str, version: str, message: str) -> None:
    body = json.dumps({"kind": kind, "apiVersion": version, "spec": {}}).encode()
    with pytest.raises(UnsupportedVersion) as info:
        canonicalize_proposed_entry(body)
    assert info.value.message == "error processing entry: " + message


def test_parsed_value_entry_point_matches_bytes_entry_point() -> None:
    body = _valid_hashedrekord()
    assert (
        canonicalize_proposed_value(json.loads(body)).leaf == canonicalize_proposed_entry(body).leaf
    )


def test_invalid_utf8_and_lone_surrogates_do_not_crash() -> None:
    body = b'{"kind": "dsse", "apiVersion": "0.0.1", "spec": {"proposedContent": {"envelope": '
    body += (
        b'"{\\"payloadType\\": \\"\\ud800\xff\\", \\"signatures\\": []}", "verifiers": ["eA=="]}}}'
    )
    with pytest.raises(RekorError) as info:
        canonicalize_proposed_entry(body)
    assert info.value.status == 400


# --- robustness --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_never_crash(body: bytes) -> None:
    # Every outcome is a RekorError with a client-error status; anything else propagates.
    with pytest.raises(RekorError) as info:
        canonicalize_proposed_entry(body)
    assert info.value.status in (400, 422)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["hashedrekord", "dsse", "intoto"]),
    st.sampled_from(["0.0.1", "0.0.2"]),
    _json_values,
)
def test_random_specs_of_supported_kinds_never_crash(kind: str, version: str, spec: object) -> None:
    body = json.dumps({"kind": kind, "apiVersion": version, "spec": spec}).encode()
    with pytest.raises(RekorError):
        canonicalize_proposed_entry(body)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutating_any_string_of_a_valid_entry_never_crashes(data: st.DataObject) -> None:
    doc = json.loads(_valid_hashedrekord())
    paths = [
        ("spec", "signature", "content"),
        ("spec", "signature", "publicKey", "content"),
        ("spec", "data", "hash", "value"),
        ("spec", "data", "hash", "algorithm"),
        ("apiVersion",),
        ("kind",),
    ]
    path = data.draw(st.sampled_from(paths))
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = data.draw(st.text(max_size=100) | st.none() | st.integers())
    with contextlib.suppress(RekorError):
        canonicalize_proposed_entry(json.dumps(doc).encode())


def test_unknown_kind_error_quotes_like_go() -> None:
    with pytest.raises(UnknownKind) as info:
        canonicalize_proposed_entry(b'{"kind": "a\\"b\\n"}')
    assert info.value.message == 'invalid kind value: "a\\"b\\n"'
