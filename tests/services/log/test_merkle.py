"""The server's pure Merkle core against the recursive reference, the vectors and the verifier."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.merkle import ProofVerificationError, verify_consistency, verify_inclusion
from services.log import merkle
from services.log.merkle import CompactRange, NodeID, ProofRangeError, range_nodes
from tests import merkle_reference as ref
from tests.vectors.generate import leaves

VECTORS = Path(__file__).parents[2] / "vectors"

Case = dict[str, Any]


def getter(hs: list[bytes]) -> Callable[[NodeID], bytes]:
    """A store of the perfect nodes over ``hs``: the reference MTH of each node's leaf range.

    Memoised through the MTH recursion (for a perfect range it splits at the middle), so large
    trees stay cheap; ``test_getter_is_the_reference_mth`` holds it to ``ref.mth`` directly.
    Refuses nodes a prover has no business asking for.
    """

    @cache
    def get(node: NodeID) -> bytes:
        begin, end = node.coverage()
        assert node.level >= 0, node
        assert begin >= 0, node
        assert end <= len(hs), f"prover asked for {node}, beyond tree size {len(hs)}"
        if node.level == 0:
            return hs[node.index]
        return ref.node_hash(
            get(NodeID(node.level - 1, 2 * node.index)),
            get(NodeID(node.level - 1, 2 * node.index + 1)),
        )

    return get


@cache
def vector_tree(n: int) -> tuple[list[bytes], Callable[[NodeID], bytes], Callable[[int], str]]:
    """The vector leaves' hashes for tree size n, a node store over them, and the server's
    ``root()`` of each prefix (hex, memoised: the mutations reuse a handful of sizes)."""
    hs = [ref.leaf_hash(x) for x in leaves(n)]
    return hs, getter(hs), cache(lambda size: merkle.root(hs[:size]).hex())


def vector_files(kind: str) -> Iterator[tuple[int, list[Case]]]:
    """(tree size, cases) for each file of one vector family."""
    for f in sorted((VECTORS / kind).glob("*.json")):
        doc = json.loads(f.read_text())
        yield doc["tree_size"], doc["cases"]


def all_perfect_nodes(begin: int, end: int) -> set[NodeID]:
    """Every perfect node whose coverage lies inside ``[begin, end)``, by brute force."""
    nodes = set()
    level = 0
    while (1 << level) <= end - begin:
        for index in range(begin >> level, end >> level):
            lo, hi = NodeID(level, index).coverage()
            if begin <= lo and hi <= end:
                nodes.add(NodeID(level, index))
        level += 1
    return nodes


def test_getter_is_the_reference_mth() -> None:
    hs, get, _ = vector_tree(64)
    for node in all_perfect_nodes(0, 64):
        begin, end = node.coverage()
        assert get(node) == ref.mth(hs[begin:end])
    hs, get, _ = vector_tree(4097)
    assert get(NodeID(12, 0)) == ref.mth(hs[:4096])
    assert get(NodeID(7, 17)) == ref.mth(hs[17 * 128 : 18 * 128])


def test_rfc6962_known_root() -> None:
    hs = [merkle.hash_leaf(x) for x in leaves(8)]
    assert hs == [ref.leaf_hash(x) for x in leaves(8)]
    want = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert merkle.root(hs).hex() == want
    compact = CompactRange()
    compact.extend(hs)
    assert compact.root().hex() == want
    assert merkle.root([]) == merkle.EMPTY_ROOT == ref.mth([]) == CompactRange().root()


def test_hash_functions_match_the_reference() -> None:
    for data in (b"", b"\x00", b"x" * 1000):
        assert merkle.hash_leaf(data) == ref.leaf_hash(data)
    left, right = ref.leaf_hash(b"l"), ref.leaf_hash(b"r")
    assert merkle.hash_children(left, right) == ref.node_hash(left, right)


# The bulk hashers fsck replays with: the C one (_merkle.c) and the Python one it falls back to.
BULK = [
    pytest.param(merkle.hash_leaves, merkle.subtree_root, merkle.check_leaves, id="native"),
    pytest.param(merkle._hash_leaves, merkle._subtree_root, merkle._check_leaves, id="python"),
]


def test_the_native_hasher_is_built_here() -> None:
    # A compiler and OpenSSL's headers are on this machine and in CI: a failed build must show
    # here rather than as an fsck four times slower.
    assert merkle.NATIVE
    assert merkle.hash_leaves is not merkle._hash_leaves


Rows = list[tuple[bytes, bytes]]


@pytest.mark.parametrize(("hash_leaves", "subtree_root", "check_leaves"), BULK)
@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=700), max_size=40), st.integers(0, 8), st.data())
def test_bulk_hashing_matches_the_reference(
    hash_leaves: Callable[[list[bytes]], bytes],
    subtree_root: Callable[[bytes], bytes],
    check_leaves: Callable[[Rows], tuple[bytes, int]],
    data: list[bytes],
    k: int,
    draw: st.DataObject,
) -> None:
    want = b"".join(ref.leaf_hash(d) for d in data)
    assert hash_leaves(data) == want
    bottom = [ref.leaf_hash(i.to_bytes(4, "big")) for i in range(2**k)]
    assert subtree_root(b"".join(bottom)) == ref.mth(bottom)

    rows = [(ref.leaf_hash(d), d) for d in data]
    assert check_leaves(rows) == (want, -1)
    if data:
        # One stored hash wrong (a flipped bit, cut short or grown), maybe a later one too:
        # the first is reported.
        bad = draw.draw(st.integers(0, len(data) - 1))
        stored = rows[bad][0]
        wrong = draw.draw(st.sampled_from([b"\x01" + stored[1:], stored[:31], stored + b"\0"]))
        wrong = bytes([stored[0] ^ 1]) + stored[1:] if wrong == stored else wrong
        rows[bad] = (wrong, data[bad])
        if bad + 1 < len(rows):
            rows[-1] = (b"", data[-1])
        assert check_leaves(rows) == (want, bad)


@pytest.mark.parametrize(("hash_leaves", "subtree_root", "check_leaves"), BULK)
def test_bulk_hashing_takes_any_bytes_like_and_refuses_other_shapes(
    hash_leaves: Callable[[list[Any]], bytes],
    subtree_root: Callable[[Any], bytes],
    check_leaves: Callable[[Any], tuple[bytes, int]],
) -> None:
    leaves = [b"a", bytearray(b"b"), memoryview(b"c")]
    assert hash_leaves(leaves) == b"".join(ref.leaf_hash(bytes(x)) for x in leaves)
    with pytest.raises(TypeError):
        hash_leaves([b"a", "not bytes"])
    for wrong in (b"", b"x" * 31, b"x" * 96):
        with pytest.raises(ValueError, match="2\\*\\*k hashes"):
            subtree_root(wrong)
    assert check_leaves([(ref.leaf_hash(b"a"), memoryview(b"a"))]) == (ref.leaf_hash(b"a"), -1)
    with pytest.raises(TypeError):
        check_leaves([(b"", "not bytes")])


@pytest.mark.parametrize(
    "tile_levels",
    [pytest.param(merkle.tile_levels, id="native"), pytest.param(merkle._tile_levels, id="python")],
)
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 256))
def test_tile_levels_are_the_perfect_nodes_above_a_row(
    tile_levels: Callable[[bytes], bytes], width: int
) -> None:
    row = [ref.leaf_hash(i.to_bytes(2, "big")) for i in range(width)]
    want: list[bytes] = []
    span = 2
    while span <= width:
        want.extend(ref.mth(row[i : i + span]) for i in range(0, width - span + 1, span))
        span *= 2
    assert tile_levels(b"".join(row)) == b"".join(want)
    with pytest.raises(ValueError, match="hashes of 32 bytes"):
        tile_levels(b"x" * 33)


def test_prover_reproduces_every_honest_inclusion_vector_and_agrees_with_the_verifier() -> None:
    """For every case, the server's answer is the truth the vector claims, and the verifier's."""
    for n, cases in vector_files("inclusion"):
        hs, get, root_hex = vector_tree(n)
        proofs: dict[tuple[int, int], list[str]] = {}
        for c in cases:
            i, size = c["leaf_index"], c["tree_size"]
            server_says_true = False
            if 0 <= i < size <= n:
                if (i, size) not in proofs:
                    proofs[i, size] = [h.hex() for h in merkle.inclusion_proof(i, size, get)]
                server_says_true = (
                    c["proof"] == proofs[i, size]
                    and c["leaf_hash"] == hs[i].hex()
                    and c["root"] == root_hex(size)
                )
            assert server_says_true == (not c["want_error"]), (n, c["desc"], i, size)
            proof = [bytes.fromhex(h) for h in c["proof"]]
            args = (bytes.fromhex(c["leaf_hash"]), i, size, proof, bytes.fromhex(c["root"]))
            if server_says_true:
                verify_inclusion(*args)
            else:
                with pytest.raises(ProofVerificationError):
                    verify_inclusion(*args)


def test_prover_reproduces_every_honest_consistency_vector_and_agrees_with_the_verifier() -> None:
    for n, cases in vector_files("consistency"):
        _, get, root_hex = vector_tree(n)
        proofs: dict[tuple[int, int], list[str]] = {}
        for c in cases:
            m, size = c["size1"], c["size2"]
            server_says_true = False
            if 0 <= m <= size <= n:
                if (m, size) not in proofs:
                    proofs[m, size] = [h.hex() for h in merkle.consistency_proof(m, size, get)]
                server_says_true = (
                    c["proof"] == proofs[m, size]
                    and c["root1"] == root_hex(m)
                    and c["root2"] == root_hex(size)
                )
            assert server_says_true == (not c["want_error"]), (n, c["desc"], m, size)
            proof = [bytes.fromhex(h) for h in c["proof"]]
            args = (m, size, proof, bytes.fromhex(c["root1"]), bytes.fromhex(c["root2"]))
            if server_says_true:
                verify_consistency(*args)
            else:
                with pytest.raises(ProofVerificationError):
                    verify_consistency(*args)


@st.composite
def tree_sizes(draw: st.DrawFn) -> int:
    """Tree sizes with the edges (powers of two and their neighbours) drawn often."""
    k = draw(st.integers(0, 11))
    return draw(
        st.one_of(
            st.integers(1, 2000),
            st.sampled_from([max(1, (1 << k) - 1), 1 << k, (1 << k) + 1]),
        )
    )


@settings(max_examples=150, deadline=None)
@given(tree_sizes(), st.data())
def test_prover_matches_reference(n: int, data: st.DataObject) -> None:
    hs = [ref.leaf_hash(b"x%d" % i) for i in range(n)]
    get = getter(hs)
    root = ref.mth(hs)
    assert merkle.root(hs) == root
    for index in {data.draw(st.integers(0, n - 1), label="index"), 0, n - 1}:
        proof = merkle.inclusion_proof(index, n, get)
        assert proof == ref.path(index, hs)
        verify_inclusion(hs[index], index, n, proof, root)
    for m in {data.draw(st.integers(1, n), label="size1"), 1, n}:
        proof = merkle.consistency_proof(m, n, get)
        assert proof == ref.proof(m, hs)
        verify_consistency(m, n, proof, ref.mth(hs[:m]), root)
    assert merkle.consistency_proof(0, n, get) == []


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 1100), st.integers(1, 300))
def test_batch_proofs_from_memory_match_the_reference(before: int, count: int) -> None:
    """A batch's inclusion proofs come from the compact range and the batch alone."""
    hs = [ref.leaf_hash(b"b%d" % i) for i in range(before + count)]
    start = CompactRange()
    start.extend(hs[:before])
    seen: list[NodeID] = []
    after, proofs = merkle.append_with_proofs(start, hs[before:], lambda n, _h: seen.append(n))
    assert start.size == before  # the input is left alone
    assert after.size == before + count
    assert after.root() == ref.mth(hs)
    for offset, proof in enumerate(proofs):
        assert proof == ref.path(before + offset, hs)
    fresh = CompactRange()
    fresh.extend(hs[:before])
    expected: list[NodeID] = []
    fresh.extend(hs[before:], lambda n, _h: expected.append(n))
    assert seen == expected  # the visitor sees exactly what append reports


def test_root_and_compact_range_agree_for_sizes_up_to_300() -> None:
    hs = [ref.leaf_hash(b"%d" % i) for i in range(301)]
    compact = CompactRange()
    for n in range(301):
        assert compact.size == n
        assert merkle.root(hs[:n]) == compact.root() == ref.mth(hs[:n]), n
        compact.append(hs[n])


@settings(max_examples=25, deadline=None)
@given(st.integers(301, 40_000))
def test_root_and_compact_range_agree_for_larger_sizes(n: int) -> None:
    hs = [ref.leaf_hash(b"%d" % i) for i in range(n)]
    compact = CompactRange()
    compact.extend(hs)
    assert merkle.root(hs) == compact.root() == ref.mth(hs)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 700), st.integers(0, 300))
def test_compact_range_reports_each_perfect_node_once(begin: int, count: int) -> None:
    """Appending [begin, end) reports exactly the nodes that become perfect, with their hashes."""
    end = begin + count
    hs = [ref.leaf_hash(b"%d" % i) for i in range(end)]
    get = getter(hs)
    compact = CompactRange(begin, [get(node) for node in range_nodes(0, begin)])
    seen: list[tuple[NodeID, bytes]] = []
    compact.extend(hs[begin:end], lambda node, h: seen.append((node, h)))

    nodes = [node for node, _ in seen]
    assert len(nodes) == len(set(nodes))
    # A node becomes perfect when its last leaf arrives: its coverage ends inside (begin, end].
    want = all_perfect_nodes(0, end) - all_perfect_nodes(0, begin)
    assert set(nodes) == want
    for node, h in seen:
        assert h == get(node), node
    assert compact.size == end
    assert CompactRange.node_ids(end) == range_nodes(0, end)
    assert list(compact.hashes) == [get(node) for node in range_nodes(0, end)]
    assert compact.root() == ref.mth(hs)


def test_compact_range_from_empty_counts_2n_minus_popcount_nodes() -> None:
    seen: list[NodeID] = []
    compact = CompactRange()
    compact.extend((ref.leaf_hash(b"%d" % i) for i in range(1000)), lambda n, _h: seen.append(n))
    assert len(seen) == len(set(seen)) == 2 * 1000 - (1000).bit_count()
    assert [n.level for n in CompactRange.node_ids(1000)] == [9, 8, 7, 6, 5, 3]


def test_compact_range_copy_is_independent() -> None:
    compact = CompactRange()
    compact.extend(ref.leaf_hash(b"%d" % i) for i in range(5))
    staged = compact.copy()
    staged.append(ref.leaf_hash(b"5"))
    assert (compact.size, staged.size) == (5, 6)
    assert compact.root() == ref.mth([ref.leaf_hash(b"%d" % i) for i in range(5)])
    rebuilt = CompactRange(compact.size, compact.hashes)
    assert rebuilt.root() == compact.root()


def _greedy_tiling(begin: int, end: int) -> list[NodeID]:
    """The obvious minimal tiling: from the left, the largest aligned block that fits."""
    out = []
    pos = begin
    while pos < end:
        level = (pos & -pos).bit_length() - 1 if pos else (end - pos).bit_length() - 1
        while (1 << level) > end - pos:
            level -= 1
        out.append(NodeID(level, pos >> level))
        pos += 1 << level
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.integers(0, 1 << 40), st.integers(0, 70)),
    st.one_of(st.integers(0, 1 << 20), st.integers(0, 70)),
)
def test_range_nodes_tile_the_range_exactly(begin: int, length: int) -> None:
    end = begin + length
    nodes = range_nodes(begin, end)
    pos = begin
    for node in nodes:
        lo, hi = node.coverage()
        assert lo == pos, (node, pos)
        assert hi - lo == 1 << node.level
        pos = hi
    assert pos == end
    assert nodes == _greedy_tiling(begin, end)


def test_node_id_navigation() -> None:
    node = NodeID(2, 5)
    assert node.coverage() == (20, 24)
    assert node.parent() == NodeID(3, 2)
    assert node.sibling() == NodeID(2, 4)
    assert node.sibling().sibling() == node
    assert node.parent().coverage()[0] <= node.coverage()[0]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: merkle.inclusion(8, 8), r"^index 8 out of range for tree size 8$"),
        (lambda: merkle.inclusion(-1, 8), r"^index -1 out of range for tree size 8$"),
        (lambda: merkle.inclusion(0, 0), r"^index 0 out of range for tree size 0$"),
        (lambda: merkle.consistency(9, 8), r"size1 9, size2 8$"),
        (lambda: merkle.consistency(-1, 8), r"size1 -1, size2 8$"),
        (lambda: range_nodes(5, 4), r"^invalid range \[5, 4\)$"),
        (lambda: range_nodes(-1, 4), r"^invalid range \[-1, 4\)$"),
        (lambda: merkle.inclusion(0, 2).rehash([]), r"^got 0 hashes for 1 nodes$"),
        (lambda: merkle.consistency(3, 5).rehash([b"x" * 32]), r"^got 1 hashes for 4 nodes$"),
    ],
)
def test_bad_input_raises(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ProofRangeError, match=message):
        call()


def test_proof_functions_check_ranges_before_fetching() -> None:
    def get(node: NodeID) -> bytes:
        raise AssertionError(f"fetched {node} for an impossible proof")

    with pytest.raises(ProofRangeError):
        merkle.inclusion_proof(5, 5, get)
    with pytest.raises(ProofRangeError):
        merkle.consistency_proof(6, 5, get)
    assert merkle.consistency_proof(5, 5, get) == []
    assert merkle.consistency_proof(0, 5, get) == []
    assert merkle.inclusion_proof(0, 1, get) == []


def test_compact_range_rejects_inconsistent_state() -> None:
    with pytest.raises(ValueError, match="needs 2 hashes"):
        CompactRange(3, [b"x" * 32])
    with pytest.raises(ValueError, match="size -1"):
        CompactRange(-1, [])


@given(st.integers(0, 40), st.integers(0, 5), st.integers(0, 3))
def test_append_perfect_equals_appending_the_leaves(units: int, level: int, extra: int) -> None:
    width = 1 << level
    leaves = [merkle.hash_leaf(b"%d" % i) for i in range((units + 1) * width + extra)]
    head = units * width
    one_by_one = merkle.CompactRange()
    one_by_one.extend(leaves)
    stepped = merkle.CompactRange()
    stepped.extend(leaves[:head])
    stepped.append_perfect(merkle.root(leaves[head : head + width]), level)
    stepped.extend(leaves[head + width :])
    assert stepped.size == one_by_one.size
    assert stepped.hashes == one_by_one.hashes


def test_append_perfect_refuses_a_misaligned_subtree() -> None:
    rng = merkle.CompactRange()
    rng.append(merkle.hash_leaf(b"x"))
    with pytest.raises(ValueError, match="cannot start at leaf 1"):
        rng.append_perfect(merkle.hash_leaf(b"y"), 1)


def test_a_compact_range_from_any_inclusion_proof_of_its_last_leaf() -> None:
    """What a monitor starting from now needs: the append state at ``n`` from an inclusion
    proof of leaf ``n - 1``, whatever size of tree the proof is for."""
    leaves = [merkle.hash_leaf(b"%d" % i) for i in range(70)]
    for size in range(1, 70):
        for n in range(1, size + 1):

            def get(node: merkle.NodeID) -> bytes:
                start, end = node.coverage()
                return merkle.root(leaves[start:end])

            proof = merkle.inclusion_proof(n - 1, size, get)
            rng = merkle.CompactRange.from_inclusion(n - 1, size, proof, leaves[n - 1])
            assert rng.size == n
            assert rng.root() == merkle.root(leaves[:n]), (n, size)
            rng.append(leaves[n] if n < len(leaves) else leaves[0])  # and it appends
    with pytest.raises(merkle.ProofRangeError):
        merkle.CompactRange.from_inclusion(5, 5, [], leaves[0])
    with pytest.raises(merkle.ProofRangeError):
        merkle.CompactRange.from_inclusion(3, 8, [leaves[0]], leaves[3])
