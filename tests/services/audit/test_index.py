"""The index keys replayed from a stored leaf agree with the keys filed when it was written, for
every kind each log writes; what a leaf cannot justify is exactly the payload's subjects."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec

from services.audit.index import (
    Expected,
    NotAdmissible,
    UnreadableEntry,
    ct_keys,
    readmit_v1,
    readmit_v2,
    rekor_v1_keys,
    rekor_v2_keys,
)
from services.log.ct.log import dedup_key
from services.log.ct.rfc6962 import (
    EntryType,
    TimestampedEntry,
    certificate_chain,
    precert_chain_entry,
)
from services.log.rekor import v2
from services.log.rekor.entry import CanonicalEntry
from services.log.rekor.kinds import canonicalize_proposed_entry
from services.log.rekor.searchkeys import digest_key, is_material_key
from tests.services.log.rekor import material as m
from tests.services.log.rekor import test_intoto, test_intoto_v001
from tests.services.log.rekor.test_api import Signer
from tests.services.log.rekor.test_api_v2 import _dsse_request, _key_request, _python_request

IMAGE = "c0ffee" * 10 + "abcd"


def _v1(body: dict[str, Any] | bytes) -> CanonicalEntry:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return canonicalize_proposed_entry(raw)


def _agree(expected: Expected, filed: frozenset[str]) -> None:
    assert expected.judge(set(filed)) == (set(), set())
    assert expected.keys <= filed


@pytest.mark.parametrize("email", ["dev@example.com", "Other@Example.org"])
def test_hashedrekord_v1_replays_exactly(email: str) -> None:
    entry = _v1(Signer(email).hashedrekord(b"artifact"))
    expected = rekor_v1_keys(entry.leaf)
    assert not expected.open_digests
    assert expected.keys == entry.search_keys
    assert "email:" + email.lower() in expected.keys


def test_dsse_v1_replays_all_but_the_subject_digests() -> None:
    entry = _v1(Signer().dsse(IMAGE))
    expected = rekor_v1_keys(entry.leaf)
    _agree(expected, entry.search_keys)
    assert expected.open_digests
    # The image digest comes from the payload, which the canonical body does not keep.
    assert entry.search_keys - expected.keys == {digest_key("sha256", IMAGE)}


def test_intoto_v002_and_v001_replay_all_but_the_subject_digests() -> None:
    for body in (test_intoto._body(), test_intoto_v001._body(test_intoto_v001._envelope())):
        entry = _v1(body)
        expected = rekor_v1_keys(entry.leaf)
        _agree(expected, entry.search_keys)
        assert expected.open_digests
        assert all(not is_material_key(k) for k in entry.search_keys - expected.keys)


def test_hashedrekord_v2_with_a_key_and_with_a_certificate() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    for request in (
        _key_request(key, b"a", "PKIX_ECDSA_P256_SHA_256"),
        _python_request(Signer(), b"b"),
    ):
        entry = v2.canonicalize_request(request)
        expected = rekor_v2_keys(entry.leaf)
        assert not expected.open_digests
        assert expected.keys == entry.search_keys


def test_dsse_v2_files_only_the_verifiers_it_keeps() -> None:
    used, unused = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    payload = m.statement([IMAGE])
    entry = v2.canonicalize_request(_dsse_request([used, unused], payload, sign_with=[used]))
    expected = rekor_v2_keys(entry.leaf)
    _agree(expected, entry.search_keys)
    assert entry.search_keys - expected.keys == {digest_key("sha256", IMAGE)}


def test_a_material_key_the_leaf_does_not_hold_is_unjustified_even_for_dsse() -> None:
    entry = _v1(Signer().dsse(IMAGE))
    expected = rekor_v1_keys(entry.leaf)
    forged = set(entry.search_keys) | {"email:mallory@example.com", "sha256:" + "ab" * 32}
    assert expected.judge(forged) == (set(), {"email:mallory@example.com"})
    lost = set(entry.search_keys) - {min(expected.keys)}
    assert expected.judge(lost) == ({min(expected.keys)}, set())


def test_ct_entries_are_keyed_by_their_certificate() -> None:
    cert, precert = b"\x30\x03cert", b"\x30\x06precert"
    x509_leaf = TimestampedEntry(5, EntryType.X509, cert).merkle_tree_leaf()
    assert ct_keys(x509_leaf, certificate_chain([b"ca"])).keys == {dedup_key(cert)}
    pre_leaf = TimestampedEntry(5, EntryType.PRECERT, b"TBS", b"\xaa" * 32).merkle_tree_leaf()
    extra = precert_chain_entry(precert, [b"ca"])
    assert ct_keys(pre_leaf, extra).keys == {dedup_key(precert)}
    with pytest.raises(UnreadableEntry, match="without its extra data"):
        ct_keys(pre_leaf, None)


@pytest.mark.parametrize(
    "leaf",
    [b"not json", b'{"kind": "rekord", "apiVersion": "0.0.1", "spec": {}}', b'{"spec": []}'],
)
def test_unreadable_leaves_raise(leaf: bytes) -> None:
    with pytest.raises(UnreadableEntry):
        rekor_v1_keys(leaf)
    with pytest.raises(UnreadableEntry):
        rekor_v2_keys(leaf)


def test_the_digest_of_a_hashedrekord_is_its_artifact_hash() -> None:
    entry = _v1(Signer().hashedrekord(b"artifact"))
    assert digest_key("sha256", hashlib.sha256(b"artifact").hexdigest()) in (
        rekor_v1_keys(entry.leaf).keys
    )


def _flip_signature(leaf: bytes, path: tuple[str, ...]) -> bytes:
    document = json.loads(leaf)
    node = document["spec"]
    for name in path[:-1]:
        node = node[name]
    raw = bytearray(base64.b64decode(node[path[-1]]))
    raw[-1] ^= 1
    node[path[-1]] = base64.b64encode(bytes(raw)).decode()
    return rfc8785.dumps(document)


def test_readmission_verifies_signature_and_canonical_form() -> None:
    entry = _v1(Signer().hashedrekord(b"artifact"))
    assert readmit_v1(entry.leaf) is True
    assert readmit_v1(_v1(Signer().dsse(IMAGE)).leaf) is False  # no envelope to verify
    with pytest.raises(NotAdmissible, match=r"re-admitting it fails: .*signature"):
        readmit_v1(_flip_signature(entry.leaf, ("signature", "content")))
    spaced = json.dumps(json.loads(entry.leaf), indent=1).encode()
    with pytest.raises(NotAdmissible, match="another canonical leaf"):
        readmit_v1(spaced)

    key = ec.generate_private_key(ec.SECP256R1())
    leaf = v2.canonicalize_request(_key_request(key, b"a", "PKIX_ECDSA_P256_SHA_256")).leaf
    assert readmit_v2(leaf) is True
    dsse_leaf = v2.canonicalize_request(_dsse_request([key], m.statement([IMAGE]))).leaf
    assert readmit_v2(dsse_leaf) is False
    with pytest.raises(NotAdmissible, match=r"re-admitting it fails: .*signature"):
        readmit_v2(_flip_signature(leaf, ("hashedRekordV002", "signature", "content")))
