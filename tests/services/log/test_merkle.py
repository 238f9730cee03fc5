"""The server's pure Merkle core against the recursive reference, the vectors and the verifier."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.merkle import verify_consistency, verify_inclusion
from services.log import merkle
from services.log.merkle import CompactRange, NodeID, ProofRangeError, range_nodes
from tests import merkle_reference as ref
from tests.vectors.generate import leaves

VECTORS = Path(__file__).parents[2] / "vectors"


def getter(hs: list[bytes]) -> Callable[[NodeID], bytes]:
    def get(node: NodeID) -> bytes:
        begin, end = node.coverage()
        assert end <= len(hs), f"prover asked for {node}, beyond size {len(hs)}"
        assert end - begin == 1 << node.level
        return ref.mth(hs[begin:end])

    return get


def test_rfc6962_known_root() -> None:
    hs = [merkle.hash_leaf(x) for x in leaves(8)]
    assert merkle.root(hs).hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )
    assert merkle.root([]) == merkle.EMPTY_ROOT == ref.mth([])


def test_prover_reproduces_every_honest_vector() -> None:
    for f in sorted((VECTORS / "inclusion").glob("*.json")):
        doc = json.loads(f.read_text())
        n = doc["tree_size"]
        hs = [ref.leaf_hash(x) for x in leaves(n)]
        get = getter(hs)
        for c in doc["cases"]:
            if c["desc"] == "happy-path":
                proof = merkle.inclusion_proof(c["leaf_index"], n, get)
                assert [h.hex() for h in proof] == c["proof"]
                verify_inclusion(hs[c["leaf_index"]], c["leaf_index"], n, proof, merkle.root(hs))
    for f in sorted((VECTORS / "consistency").glob("*.json")):
        doc = json.loads(f.read_text())
        n = doc["tree_size"]
        hs = [ref.leaf_hash(x) for x in leaves(n)]
        get = getter(hs)
        for c in doc["cases"]:
            if c["desc"] == "happy-path":
                m = c["size1"]
                proof = merkle.consistency_proof(m, n, get)
                assert [h.hex() for h in proof] == c["proof"]
                verify_consistency(m, n, proof, merkle.root(hs[:m]), merkle.root(hs))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 600), st.data())
def test_prover_matches_reference(n: int, data: st.DataObject) -> None:
    hs = [ref.leaf_hash(b"x%d" % i) for i in range(n)]
    get = getter(hs)
    index = data.draw(st.integers(0, n - 1))
    assert merkle.inclusion_proof(index, n, get) == ref.path(index, hs)
    m = data.draw(st.integers(1, n))
    assert merkle.consistency_proof(m, n, get) == ref.proof(m, hs)
    assert merkle.root(hs) == ref.mth(hs)


def test_root_and_compact_range_agree_for_small_sizes() -> None:
    hs = [ref.leaf_hash(b"%d" % i) for i in range(300)]
    compact = CompactRange()
    for n in range(301):
        assert merkle.root(hs[:n]) == compact.root() == ref.mth(hs[:n])
        if n < 300:
            compact.append(hs[n])


def test_compact_range_reports_each_perfect_node_once() -> None:
    seen: list[NodeID] = []
    compact = CompactRange()
    compact.extend((ref.leaf_hash(b"%d" % i) for i in range(1000)), lambda n, _h: seen.append(n))
    assert len(seen) == len(set(seen)) == 2 * 1000 - (1000).bit_count()
    rebuilt = CompactRange(compact.size, compact.hashes)
    assert rebuilt.root() == compact.root()
    assert [n.level for n in CompactRange.node_ids(1000)] == [9, 8, 7, 6, 5, 3]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 1 << 40), st.integers(0, 1 << 20))
def test_range_nodes_tile_the_range_exactly(begin: int, length: int) -> None:
    end = begin + length
    pos = begin
    for node in range_nodes(begin, end):
        lo, hi = node.coverage()
        assert lo == pos
        pos = hi
    assert pos == end


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: merkle.inclusion(8, 8), "index 8 out of range for tree size 8"),
        (lambda: merkle.inclusion(-1, 8), "index -1 out of range"),
        (lambda: merkle.consistency(9, 8), "size1 9, size2 8"),
        (lambda: range_nodes(5, 4), r"invalid range \[5, 4\)"),
        (lambda: merkle.inclusion(0, 2).rehash([]), "got 0 hashes for 1 nodes"),
    ],
)
def test_bad_input_raises(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ProofRangeError, match=message):
        call()


def test_compact_range_rejects_inconsistent_state() -> None:
    with pytest.raises(ValueError, match="needs 2 hashes"):
        CompactRange(3, [b"x" * 32])
