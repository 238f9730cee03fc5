"""Generate the Merkle proof vectors in tests/vectors/ from the recursive reference.

Run: ``python -m tests.vectors.generate``. The output is deterministic: re-running reproduces
every file byte for byte (``tests/clients/test_merkle.py`` checks this for a few sizes). Each
file holds every case for one tree size; the format and the families are described in
``tests/vectors/README.md``.

``want_error`` is never assumed from the mutation's name: every case is re-judged against the
reference (is this a true statement about our leaves?), so a "mutation" that happens to
describe a valid proof, such as swapped roots when size1 == size2, is marked valid.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from tests.merkle_reference import leaf_hash, mth, path, proof

HERE = Path(__file__).parent
KINDS = ("inclusion", "consistency")
SMALL_SIZES = range(1, 65)
LARGE_SIZES = (1000, 4097, 65537)
LARGE_SAMPLES = 16
# Sizes whose files also carry the mutation sets: every small tree, both sides of the powers of
# two, and the large trees. (All sizes would triple the files' size for little extra strength.)
MUTATED_SIZES = frozenset({*range(1, 10), 15, 16, 17, 31, 32, 33, 63, 64, *LARGE_SIZES})
# The RFC 6962 test leaves (certificate-transparency's merkle_tree_test) come first, so the
# size-8 files carry the RFC's known root; then deterministic ones.
RFC6962_LEAVES = (
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
)
# Bit positions for the single-bit flips, cycled over a proof's hashes: both ends of the hash,
# both ends of a byte, and a few in between.
FLIP_BITS = (0, 255, 7, 128, 61, 200)
EMPTY_ROOT = hashlib.sha256(b"").digest()

Case = dict[str, Any]


def leaves(n: int) -> list[bytes]:
    """The first n leaf *inputs* of every vector tree."""
    return [RFC6962_LEAVES[i] if i < len(RFC6962_LEAVES) else b"leaf-%d" % i for i in range(n)]


def garbage(tag: str) -> bytes:
    """A deterministic 32-byte value that is no hash in any vector tree."""
    return hashlib.sha256(b"garbage " + tag.encode()).digest()


def flip(h: bytes, bit: int) -> bytes:
    """``h`` with bit ``bit`` (0 = least significant bit of the first byte) inverted."""
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def sample(n: int, count: int) -> list[int]:
    """About ``count`` evenly spread values in ``[0, n)``, always with both ends."""
    if n <= count:
        return list(range(n))
    return sorted({n * i // count for i in range(count)} | {0, n - 1})


class Tree:
    """The reference's answers about the first ``n`` vector leaves, memoised per size."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.hashes = [leaf_hash(x) for x in leaves(n)]
        self.root: Callable[[int], bytes] = cache(lambda size: mth(self.hashes[:size]))
        self.path: Callable[[int, int], list[bytes]] = cache(
            lambda i, size: path(i, self.hashes[:size])
        )
        self.proof: Callable[[int, int], list[bytes]] = cache(
            lambda m, size: proof(m, self.hashes[:size])
        )

    def inclusion_ok(self, c: Case) -> bool:
        """Is the case a true inclusion statement about these leaves?"""
        i, size = c["leaf_index"], c["tree_size"]
        if not 0 <= i < size <= self.n:
            return False
        return bool(
            c["leaf_hash"] == self.hashes[i].hex()
            and c["proof"] == _hex(self.path(i, size))
            and c["root"] == self.root(size).hex()
        )

    def consistency_ok(self, c: Case) -> bool:
        """Is the case a true consistency statement about these leaves?

        From size1 == 0 the only acceptable proof is the empty one, with root1 the empty
        tree's root (the choice documented in ``clients/merkle.py``).
        """
        m, size = c["size1"], c["size2"]
        if not 0 <= m <= size <= self.n:
            return False
        want = [] if m == 0 else _hex(self.proof(m, size))
        return bool(
            c["proof"] == want
            and c["root1"] == self.root(m).hex()
            and c["root2"] == self.root(size).hex()
        )


def _hex(hs: list[bytes]) -> list[str]:
    return [h.hex() for h in hs]


def _flips(p: list[bytes]) -> list[tuple[str, list[bytes]]]:
    """One single-bit flip per proof hash, the bit position cycling through FLIP_BITS."""
    out = []
    for j, h in enumerate(p):
        bit = FLIP_BITS[j % len(FLIP_BITS)]
        flipped = list(p)
        flipped[j] = flip(h, bit)
        out.append((f"modified-proof-{j}-bit-{bit}", flipped))
    return out


def inclusion_cases(tree: Tree) -> list[Case]:
    """Every (for large trees, sampled) leaf's proof, and the mutation set for a few leaves."""
    n, hs = tree.n, tree.hashes
    root = tree.root(n)
    cases: list[Case] = []

    def case(desc: str, i: int, size: int, lh: bytes, p: list[bytes], r: bytes) -> None:
        cases.append(
            {
                "desc": desc,
                "leaf_index": i,
                "tree_size": size,
                "leaf_hash": lh.hex(),
                "proof": _hex(p),
                "root": r.hex(),
                "want_error": True,
            }
        )

    mutated = {0, n // 2, n - 1} if n in MUTATED_SIZES else set()
    indices = range(n) if n in SMALL_SIZES else sorted({*sample(n, LARGE_SAMPLES), *mutated})
    for i in indices:
        p, lh = tree.path(i, n), hs[i]
        case("happy-path", i, n, lh, p, root)
        if i not in mutated:
            continue
        case("wrong-leaf", i, n, garbage(f"leaf {i}"), p, root)
        case("leaf-is-root", i, n, root, p, root)
        case("random-root", i, n, lh, p, garbage(f"root {n}"))
        case("modified-leaf-bit-0", i, n, flip(lh, 0), p, root)
        case("modified-root-bit-255", i, n, lh, p, flip(root, 255))
        case("trailing-garbage", i, n, lh, [*p, garbage("trailing")], root)
        case("preceding-garbage", i, n, lh, [garbage("preceding"), *p], root)
        case("index-equals-size", n, n, lh, p, root)
        case("index-plus-one", i + 1, n, lh, p, root)
        case("index-minus-one", i - 1, n, lh, p, root)
        case("index-xor-one", i ^ 1, n, lh, p, root)
        case("index-xor-top-bit", i ^ (1 << max(n.bit_length() - 1, 0)), n, lh, p, root)
        case("tree-size-zero", i, 0, lh, p, root)
        # Not size ±1: a proof's shape does not always pin the tree size (both trees can put the
        # leaf at the same depth), only the root does; see the clients test on that point.
        case("size-times-two", i, 2 * n, lh, p, root)
        case("size-div-two", i, n // 2, lh, p, root)
        if p:
            case("truncated-proof", i, n, lh, p[:-1], root)
            case("empty-proof", i, n, lh, [], root)
            case("reversed-proof", i, n, lh, p[::-1], root)
        for desc, flipped in _flips(p):
            case(desc, i, n, lh, flipped, root)
    for c in cases:
        c["want_error"] = not tree.inclusion_ok(c)
    return cases


def consistency_cases(tree: Tree) -> list[Case]:
    """The proof from every (for large trees, sampled) size1 to n, and mutations for a few."""
    n = tree.n
    root2 = tree.root(n)
    cases: list[Case] = []

    def case(desc: str, m: int, size: int, p: list[bytes], r1: bytes, r2: bytes) -> None:
        cases.append(
            {
                "desc": desc,
                "size1": m,
                "size2": size,
                "proof": _hex(p),
                "root1": r1.hex(),
                "root2": r2.hex(),
                "want_error": True,
            }
        )

    case("from-empty-tree", 0, n, [], EMPTY_ROOT, root2)
    case("from-empty-tree-nonempty-proof", 0, n, [root2], EMPTY_ROOT, root2)
    case("from-empty-tree-wrong-root1", 0, n, [], garbage("empty"), root2)
    mutated = {1, n // 2 or 1, n - 1 or 1, n} if n in MUTATED_SIZES else set()
    sizes1 = (
        range(1, n + 1) if n in SMALL_SIZES else sorted({*sample(n + 1, LARGE_SAMPLES), *mutated})
    )
    for m in sizes1:
        if m == 0:
            continue
        p, r1 = tree.proof(m, n), tree.root(m)
        case("happy-path", m, n, p, r1, root2)
        if m not in mutated:
            continue
        case("swapped-roots", m, n, p, root2, r1)
        case("random-root1", m, n, p, garbage("root1"), root2)
        case("random-root2", m, n, p, r1, garbage("root2"))
        case("modified-root1-bit-0", m, n, p, flip(r1, 0), root2)
        case("modified-root2-bit-255", m, n, p, r1, flip(root2, 255))
        case("trailing-garbage", m, n, [*p, garbage("trailing")], r1, root2)
        case("preceding-garbage", m, n, [garbage("preceding"), *p], r1, root2)
        case("size1-plus-one", m + 1, n, p, r1, root2)
        case("size1-minus-one", m - 1, n, p, r1, root2)
        case("size1-div-two", m // 2, n, p, r1, root2)
        case("size1-zero", 0, n, p, r1, root2)
        # Not size2 ±1, for the reason given at the inclusion mutations.
        case("size2-times-two", m, 2 * n, p, r1, root2)
        case("size2-div-two", m, n // 2, p, r1, root2)
        if m == n:
            case("equal-sizes-nonempty-proof", m, n, [garbage("equal")], r1, root2)
        if p:
            case("truncated-proof", m, n, p[:-1], r1, root2)
            case("empty-proof", m, n, [], r1, root2)
            case("reversed-proof", m, n, p[::-1], r1, root2)
        for desc, flipped in _flips(p):
            case(desc, m, n, flipped, r1, root2)
    for c in cases:
        c["want_error"] = not tree.consistency_ok(c)
    return cases


def render(kind: str, n: int) -> str:
    """The JSON text of the ``kind`` vector file for tree size ``n``."""
    tree = Tree(n)
    cases = inclusion_cases(tree) if kind == "inclusion" else consistency_cases(tree)
    # One case per line: compact, yet a regenerated file diffs case by case.
    lines = ",\n".join(json.dumps(c, sort_keys=True, separators=(",", ":")) for c in cases)
    return (
        f'{{"kind":"{kind}","tree_size":{n},'
        f'"leaves":"RFC 6962 test leaves, then b\'leaf-<i>\'","cases":[\n{lines}\n]}}\n'
    )


def main() -> None:
    """Write every vector file, replacing what was there."""
    for kind in KINDS:
        out = HERE / kind
        out.mkdir(exist_ok=True)
        for old in out.glob("*.json"):
            old.unlink()
        for n in (*SMALL_SIZES, *LARGE_SIZES):
            (out / f"{n}.json").write_text(render(kind, n))


if __name__ == "__main__":
    main()
