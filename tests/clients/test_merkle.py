"""The independent verifier against every vector and against Hypothesis-drawn trees."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.merkle import ProofVerificationError, verify_consistency, verify_inclusion
from tests import merkle_reference as ref
from tests.vectors import generate

VECTORS = Path(__file__).parent.parent / "vectors"


@cache
def load(kind: str) -> list[dict[str, Any]]:
    cases = []
    for f in sorted((VECTORS / kind).glob("*.json")):
        cases.extend(json.loads(f.read_text())["cases"])
    return cases


def _h(hs: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hs]


def test_vectors_exist_and_cover_mutations() -> None:
    inclusion, consistency = load("inclusion"), load("consistency")
    assert len(inclusion) > 3000
    assert len(consistency) > 3000
    descs = {c["desc"] for c in inclusion} | {c["desc"] for c in consistency}
    for want in (
        "wrong-leaf",
        "truncated-proof",
        "trailing-garbage",
        "preceding-garbage",
        "swapped-roots",
        "index-plus-one",
        "index-minus-one",
        "index-equals-size",
        "size-times-two",
        "size-div-two",
        "empty-proof",
        "equal-sizes-nonempty-proof",
    ):
        assert want in descs, want
    assert any(d.startswith("modified-proof") for d in descs)


def test_inclusion_vectors() -> None:
    for c in load("inclusion"):
        args = (
            bytes.fromhex(c["leaf_hash"]),
            c["leaf_index"],
            c["tree_size"],
            _h(c["proof"]),
            bytes.fromhex(c["root"]),
        )
        if c["want_error"]:
            with pytest.raises(ProofVerificationError):
                verify_inclusion(*args)
        else:
            verify_inclusion(*args)


def test_consistency_vectors() -> None:
    for c in load("consistency"):
        args = (
            c["size1"],
            c["size2"],
            _h(c["proof"]),
            bytes.fromhex(c["root1"]),
            bytes.fromhex(c["root2"]),
        )
        if c["want_error"]:
            with pytest.raises(ProofVerificationError):
                verify_consistency(*args)
        else:
            verify_consistency(*args)


def test_generator_is_deterministic() -> None:
    for kind in ("inclusion", "consistency"):
        for n in (1, 7, 64):
            assert (VECTORS / kind / f"{n}.json").read_text() == generate.render(kind, n)


def test_messages_name_both_values() -> None:
    leaf = ref.leaf_hash(b"x")
    with pytest.raises(ProofVerificationError, match="index 9 out of range for tree size 8"):
        verify_inclusion(leaf, 9, 8, [], leaf)
    with pytest.raises(
        ProofVerificationError, match=r"root mismatch: calculated [0-9a-f]{64}, expected"
    ):
        verify_inclusion(leaf, 0, 1, [], b"\x00" * 32)
    with pytest.raises(ProofVerificationError, match="has 31 bytes, want 32"):
        verify_inclusion(leaf, 0, 1, [], b"\x00" * 31)
    with pytest.raises(ProofVerificationError, match="sizes are equal"):
        verify_consistency(3, 3, [leaf], leaf, leaf)
    with pytest.raises(ProofVerificationError, match="not 0 <= size1 <= size2"):
        verify_consistency(4, 3, [], leaf, leaf)


def test_empty_tree_edge_cases() -> None:
    root = ref.mth([])
    verify_consistency(0, 0, [], root, root)
    verify_consistency(0, 5, [], root, ref.mth([ref.leaf_hash(b"a")] * 5))
    with pytest.raises(ProofVerificationError, match="empty tree"):
        verify_consistency(0, 5, [root], root, root)
    with pytest.raises(ProofVerificationError, match="out of range"):
        verify_inclusion(root, 0, 0, [], root)


@st.composite
def tree_and_index(draw: st.DrawFn) -> tuple[list[bytes], int, int]:
    n = draw(st.integers(1, 300))
    m = draw(st.integers(1, n))
    hs = [ref.leaf_hash(b"h%d" % i) for i in range(n)]
    return hs, m, n


@settings(max_examples=150, deadline=None)
@given(tree_and_index(), st.data())
def test_honest_proofs_verify_and_every_single_bit_flip_fails(
    t: tuple[list[bytes], int, int], data: st.DataObject
) -> None:
    hs, m, n = t
    index = m - 1
    root = ref.mth(hs)
    incl = ref.path(index, hs)
    verify_inclusion(hs[index], index, n, incl, root)
    cons = ref.proof(m, hs)
    root1 = ref.mth(hs[:m])
    verify_consistency(m, n, cons, root1, root)

    def check_incl(p: list[bytes]) -> None:
        verify_inclusion(hs[index], index, n, p, root)

    def check_cons(p: list[bytes]) -> None:
        verify_consistency(m, n, p, root1, root)

    checks: list[tuple[list[bytes], Callable[[list[bytes]], None]]] = [
        (incl, check_incl),
        (cons, check_cons),
    ]
    for proof, check in checks:
        if proof:
            j = data.draw(st.integers(0, len(proof) - 1))
            bit = data.draw(st.integers(0, 255))
            flipped = list(proof)
            b = bytearray(flipped[j])
            b[bit // 8] ^= 1 << (bit % 8)
            flipped[j] = bytes(b)
            with pytest.raises(ProofVerificationError):
                check(flipped)
            with pytest.raises(ProofVerificationError):
                check(proof[:-1])
        with pytest.raises(ProofVerificationError):
            check([*proof, hs[0]])
