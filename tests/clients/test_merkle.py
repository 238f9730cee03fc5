"""The independent verifier against the vectors, the recursive reference and its own edge cases."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.errors import ClientError
from clients.merkle import (
    EMPTY_ROOT,
    ProofVerificationError,
    hash_leaf,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from tests import merkle_reference as ref
from tests.vectors import generate

VECTORS = Path(__file__).parents[1] / "vectors"
HEX64 = "[0-9a-f]{64}"

Case = dict[str, Any]


@cache
def load(kind: str) -> tuple[Case, ...]:
    """Every case of one vector family, read once per test session."""
    cases: list[Case] = []
    for f in sorted((VECTORS / kind).glob("*.json")):
        cases.extend(json.loads(f.read_text())["cases"])
    return tuple(cases)


def _h(hs: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hs]


def _path_len(i: int, n: int) -> int:
    """len(PATH(i, D[n])), read off the recursion of RFC 9162 §2.1.3.1 (no hashing)."""
    if n == 1:
        return 0
    k = ref.split(n)
    return 1 + (_path_len(i, k) if i < k else _path_len(i - k, n - k))


def _proof_len(m: int, n: int, b: bool = True) -> int:
    """len(SUBPROOF(m, D[n], b)), read off the recursion of RFC 9162 §2.1.4.1."""
    if m == n:
        return 0 if b else 1
    k = ref.split(n)
    return 1 + (_proof_len(m, k, b) if m <= k else _proof_len(m - k, n - k, False))


def _inclusion_message(c: Case) -> str:
    """The exact error a wrong inclusion case must raise (regex), derived from the case alone."""
    i, n, p = c["leaf_index"], c["tree_size"], c["proof"]
    if not 0 <= i < n:
        return f"^index {i} out of range for tree size {n}"
    if len(p) != _path_len(i, n):
        return rf"^proof has {len(p)} hashes, want {_path_len(i, n)} \(index {i}, tree size {n}\)$"
    return f"^root mismatch: calculated {HEX64}, expected {c['root']}$"


def _consistency_message(c: Case) -> str:
    """The exact error a wrong consistency case must raise (regex), derived from the case alone."""
    m, n, p, r1, r2 = c["size1"], c["size2"], c["proof"], c["root1"], c["root2"]
    if not 0 <= m <= n:
        return f"^size1 {m} and size2 {n} are not 0 <= size1 <= size2$"
    if m == n:
        if p:
            return rf"^proof has {len(p)} hashes, want 0 \(size1 == size2 == {m}\)$"
        return f"^root mismatch for equal sizes {m}: root1 {r1}, root2 {r2}$"
    if m == 0:
        if p:
            return rf"^proof has {len(p)} hashes, want 0 \(consistency from the empty tree\)$"
        return f"^empty tree root mismatch: calculated {EMPTY_ROOT.hex()}, expected {r1}$"
    if not p:
        return f"^empty proof for size1 {m} < size2 {n}$"
    if len(p) != _proof_len(m, n):
        return rf"^proof has {len(p)} hashes, want {_proof_len(m, n)} \(size1 {m}, size2 {n}\)$"
    return f"^(root1 mismatch: calculated {HEX64}, expected {r1}|root2 mismatch: .*{r2})$"


def test_vectors_cover_every_size_and_mutation() -> None:
    inclusion, consistency = load("inclusion"), load("consistency")
    for kind, cases in (("inclusion", inclusion), ("consistency", consistency)):
        sizes = {c["tree_size" if kind == "inclusion" else "size2"] for c in cases}
        assert sizes >= {*range(1, 65), *generate.LARGE_SIZES}, kind
        assert any(not c["want_error"] for c in cases)
    # Every honest small-tree proof is there: all indices, all size1.
    assert sum(c["desc"] == "happy-path" and c["tree_size"] <= 64 for c in inclusion) == sum(
        range(1, 65)
    )
    assert sum(c["desc"] == "happy-path" and c["size2"] <= 64 for c in consistency) == sum(
        range(1, 65)
    )
    descs = {re.sub(r"-\d+-bit-\d+$", "", c["desc"]) for c in (*inclusion, *consistency)}
    assert descs >= {
        "happy-path",
        "wrong-leaf",
        "random-root",
        "truncated-proof",
        "trailing-garbage",
        "preceding-garbage",
        "empty-proof",
        "modified-proof",
        "index-plus-one",
        "index-minus-one",
        "index-equals-size",
        "index-xor-one",
        "size-times-two",
        "size-div-two",
        "swapped-roots",
        "equal-sizes-nonempty-proof",
        "from-empty-tree",
    }
    flipped_bits = {int(c["desc"].rsplit("-", 1)[1]) for c in inclusion if "-bit-" in c["desc"]}
    assert len(flipped_bits) >= 4


def test_inclusion_vectors() -> None:
    for c in load("inclusion"):
        args = (
            bytes.fromhex(c["leaf_hash"]),
            c["leaf_index"],
            c["tree_size"],
            _h(c["proof"]),
            bytes.fromhex(c["root"]),
        )
        if not c["want_error"]:
            verify_inclusion(*args)
            continue
        with pytest.raises(ProofVerificationError) as err:
            verify_inclusion(*args)
        assert re.search(_inclusion_message(c), str(err.value)), (c["desc"], str(err.value))


def test_consistency_vectors() -> None:
    for c in load("consistency"):
        args = (
            c["size1"],
            c["size2"],
            _h(c["proof"]),
            bytes.fromhex(c["root1"]),
            bytes.fromhex(c["root2"]),
        )
        if not c["want_error"]:
            verify_consistency(*args)
            continue
        with pytest.raises(ProofVerificationError) as err:
            verify_consistency(*args)
        assert re.search(_consistency_message(c), str(err.value)), (c["desc"], str(err.value))


@pytest.mark.parametrize("n", [1, 7, 8, 64, 1000])
@pytest.mark.parametrize("kind", generate.KINDS)
def test_generator_is_deterministic(kind: str, n: int) -> None:
    assert (VECTORS / kind / f"{n}.json").read_text() == generate.render(kind, n)


def test_rfc6962_leaves_give_the_known_root() -> None:
    (case,) = [
        c
        for c in load("consistency")
        if c["desc"] == "happy-path" and c["size1"] == c["size2"] == 8
    ]
    assert case["root2"] == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def test_error_is_a_client_error() -> None:
    assert issubclass(ProofVerificationError, ClientError)


def test_messages_name_both_values() -> None:
    leaf = hash_leaf(b"x")
    with pytest.raises(ProofVerificationError, match=r"^index 9 out of range for tree size 8$"):
        verify_inclusion(leaf, 9, 8, [], leaf)
    with pytest.raises(ProofVerificationError, match=r"^proof has 3 hashes, want 4 "):
        verify_inclusion(leaf, 0, 16, [leaf] * 3, leaf)
    with pytest.raises(
        ProofVerificationError, match=rf"^root mismatch: calculated {leaf.hex()}, expected 0{{64}}$"
    ):
        verify_inclusion(leaf, 0, 1, [], b"\x00" * 32)
    with pytest.raises(ProofVerificationError, match=r"^size1 4 and size2 3 are not"):
        verify_consistency(4, 3, [], leaf, leaf)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda h: verify_inclusion(h[:31], 0, 1, [], h), "^leaf hash has 31 bytes, want 32$"),
        (lambda h: verify_inclusion(h, 0, 1, [], h + b"\x00"), "^root has 33 bytes, want 32$"),
        (lambda h: verify_inclusion(h, 0, 2, [b""], h), "^proof hash 0 has 0 bytes, want 32$"),
        (lambda h: verify_inclusion(h, 0, 2, [h.hex().encode()], h), "^proof hash 0 has 64 "),
        (lambda h: verify_consistency(1, 2, [h], h[:1], h), "^root1 has 1 bytes, want 32$"),
        (lambda h: verify_consistency(1, 2, [h], h, b""), "^root2 has 0 bytes, want 32$"),
        (lambda h: verify_consistency(1, 3, [h, h[1:]], h, h), "^proof hash 1 has 31 bytes"),
        (lambda h: root_from_inclusion_proof(h, 0, 1, [h * 2]), "^proof hash 0 has 64 bytes"),
    ],
)
def test_hashes_must_be_32_bytes(call: Callable[[bytes], None], message: str) -> None:
    with pytest.raises(ProofVerificationError, match=message):
        call(hash_leaf(b"x"))


def test_inclusion_degenerate_cases() -> None:
    leaf = hash_leaf(b"x")
    # Tree size 0: there is no leaf to prove, whatever the index.
    for index in (0, 1, -1):
        with pytest.raises(ProofVerificationError, match=r"tree size 0: the empty tree has no"):
            verify_inclusion(leaf, index, 0, [], EMPTY_ROOT)
    with pytest.raises(ProofVerificationError, match=r"^index -1 out of range for tree size 5$"):
        verify_inclusion(leaf, -1, 5, [], leaf)
    # Index 0 of a one-leaf tree: the empty proof, and the root is the leaf hash itself.
    verify_inclusion(leaf, 0, 1, [], leaf)
    assert root_from_inclusion_proof(leaf, 0, 1, []) == leaf
    with pytest.raises(ProofVerificationError, match=r"^proof has 1 hashes, want 0 "):
        verify_inclusion(leaf, 0, 1, [leaf], leaf)
    # Index 0 (the left edge) and the last index (the right edge) of a larger tree.
    hs = [hash_leaf(b"%d" % i) for i in range(5)]
    verify_inclusion(hs[0], 0, 5, ref.path(0, hs), ref.mth(hs))
    verify_inclusion(hs[4], 4, 5, ref.path(4, hs), ref.mth(hs))
    assert ref.path(4, hs) == [ref.mth(hs[:4])]
    # An empty proof for a tree with more than one leaf.
    with pytest.raises(ProofVerificationError, match=r"^proof has 0 hashes, want 3 \(index 0"):
        verify_inclusion(hs[0], 0, 5, [], ref.mth(hs))


def test_consistency_degenerate_cases() -> None:
    hs = [hash_leaf(b"%d" % i) for i in range(5)]
    root3, root5 = ref.mth(hs[:3]), ref.mth(hs)
    # size1 == size2: empty proof and equal roots; anything else is refused.
    verify_consistency(3, 3, [], root3, root3)
    with pytest.raises(ProofVerificationError, match=r"^proof has 1 hashes, want 0 \(size1 =="):
        verify_consistency(3, 3, [root3], root3, root3)
    with pytest.raises(ProofVerificationError, match=r"^root mismatch for equal sizes 3: root1"):
        verify_consistency(3, 3, [], root3, root5)
    # From the empty tree: the empty proof, and root1 must be the empty tree's root.
    verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    verify_consistency(0, 5, [], EMPTY_ROOT, root5)
    with pytest.raises(ProofVerificationError, match=r"^empty tree root mismatch: "):
        verify_consistency(0, 5, [], root3, root5)
    with pytest.raises(ProofVerificationError, match=r"^empty tree root mismatch: "):
        verify_consistency(0, 0, [], root3, root3)
    with pytest.raises(ProofVerificationError, match=r"^proof has 1 hashes, want 0 \(consistency"):
        verify_consistency(0, 5, [root5], EMPTY_ROOT, root5)
    # An empty proof between different non-empty sizes (RFC 9162 §2.1.4.2 step 1).
    with pytest.raises(ProofVerificationError, match=r"^empty proof for size1 3 < size2 5$"):
        verify_consistency(3, 5, [], root3, root5)
    with pytest.raises(ProofVerificationError, match=r"^size1 -1 and size2 5 are not"):
        verify_consistency(-1, 5, [], root3, root5)
    # size1 a power of two: the proof omits root1, which seeds the verification.
    verify_consistency(4, 5, ref.proof(4, hs), ref.mth(hs[:4]), root5)
    assert ref.proof(4, hs) == [hs[4]]


def test_proofs_bind_the_tree_size_only_through_the_root() -> None:
    """RFC 9162's algorithms, hence ours: a proof's shape need not pin the (new) tree size.

    The size-5 proof of leaf 0 also passes as a size-6 proof against the size-5 root, because
    both trees have leaf 0 three levels below the root; likewise a consistency proof to size 8
    passes as one to size 7 against the size-8 root. No tree of the claimed size has that root,
    so this is harmless *provided* callers take (size, root) together from one verified
    checkpoint. It is also why the vectors mutate sizes by x2 and /2 but not by +-1.
    """
    hs = [hash_leaf(b"%d" % i) for i in range(8)]
    verify_inclusion(hs[0], 0, 6, ref.path(0, hs[:5]), ref.mth(hs[:5]))
    with pytest.raises(ProofVerificationError, match=r"root mismatch"):
        verify_inclusion(hs[0], 0, 6, ref.path(0, hs[:5]), ref.mth(hs[:6]))
    verify_consistency(4, 7, ref.proof(4, hs), ref.mth(hs[:4]), ref.mth(hs))
    with pytest.raises(ProofVerificationError, match=r"root2 mismatch"):
        verify_consistency(4, 7, ref.proof(4, hs), ref.mth(hs[:4]), ref.mth(hs[:7]))


def _flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


@pytest.mark.parametrize(("m", "n"), [(6, 13), (8, 13), (1, 2), (31, 64)])
def test_every_single_bit_flip_fails(m: int, n: int) -> None:
    hs = [hash_leaf(b"%d" % i) for i in range(n)]
    index, root, root1 = m - 1, ref.mth(hs), ref.mth(hs[:m])
    incl, cons = ref.path(index, hs), ref.proof(m, hs)
    for bit in range(256):
        for j in range(len(incl)):
            flipped = [_flip(h, bit) if k == j else h for k, h in enumerate(incl)]
            with pytest.raises(ProofVerificationError, match=r"^root mismatch"):
                verify_inclusion(hs[index], index, n, flipped, root)
        for j in range(len(cons)):
            flipped = [_flip(h, bit) if k == j else h for k, h in enumerate(cons)]
            with pytest.raises(ProofVerificationError, match=r"^root[12] mismatch"):
                verify_consistency(m, n, flipped, root1, root)
        with pytest.raises(ProofVerificationError, match=r"^root mismatch"):
            verify_inclusion(_flip(hs[index], bit), index, n, incl, root)
        with pytest.raises(ProofVerificationError, match=r"^root mismatch"):
            verify_inclusion(hs[index], index, n, incl, _flip(root, bit))
        with pytest.raises(ProofVerificationError, match=r"^root[12] mismatch"):
            verify_consistency(m, n, cons, _flip(root1, bit), root)
        with pytest.raises(ProofVerificationError, match=r"^root2 mismatch"):
            verify_consistency(m, n, cons, root1, _flip(root, bit))


N = 300


@st.composite
def sizes(draw: st.DrawFn) -> tuple[int, int]:
    """0 < m <= n <= N, with the edges (m == n, m == 1, powers of two) drawn often."""
    n = draw(st.one_of(st.integers(1, N), st.sampled_from([1, 2, 3, 4, 5, 8, 16, 64, 255, 256])))
    m = draw(
        st.one_of(st.integers(1, n), st.sampled_from([1, n, n - 1 or 1, 1 << (n.bit_length() - 1)]))
    )
    return m, n


def _mutations(proof: list[bytes], data: st.DataObject, junk: bytes) -> list[list[bytes]]:
    """Every hash flipped at a drawn bit, and the proof truncated and extended at both ends."""
    out = []
    for j in range(len(proof)):
        bit = data.draw(st.integers(0, 255), label=f"bit flipped in hash {j}")
        out.append([_flip(h, bit) if k == j else h for k, h in enumerate(proof)])
    if proof:
        out += [proof[:-1], proof[1:]]
    out += [[*proof, junk], [junk, *proof]]
    return out


@settings(max_examples=200, deadline=None)
@given(sizes(), st.data())
def test_honest_proofs_verify_and_mutations_fail(mn: tuple[int, int], data: st.DataObject) -> None:
    m, n = mn
    hs = [hash_leaf(b"h%d" % i) for i in range(n)]
    root, root1 = ref.mth(hs), ref.mth(hs[:m])
    index = data.draw(st.sampled_from([m - 1, 0, n - 1]), label="index")
    incl = ref.path(index, hs)
    verify_inclusion(hs[index], index, n, incl, root)
    assert root_from_inclusion_proof(hs[index], index, n, incl) == root
    cons = ref.proof(m, hs)
    verify_consistency(m, n, cons, root1, root)

    for bad in _mutations(incl, data, hs[index]):
        with pytest.raises(ProofVerificationError):
            verify_inclusion(hs[index], index, n, bad, root)
    for bad in _mutations(cons, data, root1):
        with pytest.raises(ProofVerificationError):
            verify_consistency(m, n, bad, root1, root)
    # A leaf's proof proves nothing about any other position in the same tree: each leaf has
    # its own left/right path from the root.
    for other in range(n):
        if other != index:
            with pytest.raises(ProofVerificationError):
                verify_inclusion(hs[index], other, n, incl, root)
    # Nor does a consistency proof hold for any other old size with the same old root.
    for other in range(n + 1):
        if other != m:
            with pytest.raises(ProofVerificationError):
                verify_consistency(other, n, cons, root1, root)
