"""Generate the Merkle proof vectors in tests/vectors/ from the recursive reference.

Run: ``python -m tests.vectors.generate``. Output is deterministic: re-running reproduces the
files byte for byte (tests/clients/test_merkle.py checks this for a few sizes).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.merkle_reference import leaf_hash, mth, path, proof

HERE = Path(__file__).parent
SMALL_SIZES = range(1, 65)
LARGE_SIZES = (1000, 4097)
# RFC 6962's test leaves first, then deterministic ones.
RFC6962_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]


def leaves(n: int) -> list[bytes]:
    """The first n leaf inputs of every vector tree."""
    return [RFC6962_LEAVES[i] if i < 8 else b"leaf-%d" % i for i in range(n)]


def _garbage(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest()


def _flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def _hex(hs: list[bytes]) -> list[str]:
    return [h.hex() for h in hs]


def _sample(n: int, count: int) -> list[int]:
    if n <= count:
        return list(range(n))
    step = n / count
    return sorted({int(i * step) for i in range(count)} | {0, n - 1})


def inclusion_cases(n: int) -> list[dict[str, Any]]:
    """Every (or, for large n, sampled) index, plus the mutation set for a few of them."""
    hs = [leaf_hash(x) for x in leaves(n)]
    root = mth(hs)
    indices = list(range(n)) if n <= 64 else _sample(n, 16)
    mutate = sorted({0, n // 2, n - 1})
    cases: list[dict[str, Any]] = []

    def case(
        desc: str, index: int, size: int, lh: bytes, p: list[bytes], r: bytes, err: bool
    ) -> None:
        cases.append(
            {
                "desc": desc,
                "leaf_index": index,
                "tree_size": size,
                "leaf_hash": lh.hex(),
                "proof": _hex(p),
                "root": r.hex(),
                "want_error": err,
            }
        )

    for i in indices:
        p = path(i, hs)
        case("happy-path", i, n, hs[i], p, root, False)
        if i not in mutate:
            continue
        case("wrong-leaf", i, n, _garbage(f"leaf {i}"), p, root, True)
        case("random-root", i, n, hs[i], p, _garbage(f"root {n}"), True)
        case("trailing-garbage", i, n, hs[i], [*p, _garbage("t")], root, True)
        case("preceding-garbage", i, n, hs[i], [_garbage("p"), *p], root, True)
        case("index-equals-size", n, n, hs[i], p, root, True)
        case("size-times-two", i, 2 * n, hs[i], p, root, True)
        if n > 1:
            case("index-plus-one", (i + 1) % n, n, hs[i], p, root, True)
            case("index-xor-one", i ^ 1, n, hs[i], p, root, True)
            case("size-div-two", i, n // 2, hs[i], p, root, True)
        if i > 0:
            case("index-minus-one", i - 1, n, hs[i], p, root, True)
        if p:
            case("truncated-proof", i, n, hs[i], p[:-1], root, True)
            case("empty-proof", i, n, hs[i], [], root, True)
            for bit in (0, 255):
                for j in (0, len(p) - 1):
                    flipped = list(p)
                    flipped[j] = _flip(p[j], bit)
                    case(f"modified-proof-{j}-bit-{bit}", i, n, hs[i], flipped, root, True)
    # A mutation that happens to describe a valid proof is not a mutation: recheck with the
    # reference so want_error is exact.
    for c in cases:
        c["want_error"] = not _reference_inclusion_ok(c, hs)
    return cases


def _reference_inclusion_ok(c: dict[str, Any], hs: list[bytes]) -> bool:
    i, size = c["leaf_index"], c["tree_size"]
    if not 0 <= i < size or size > len(hs):
        return False
    want = path(i, hs[:size])
    return bool(
        c["leaf_hash"] == hs[i].hex()
        and c["proof"] == _hex(want)
        and c["root"] == mth(hs[:size]).hex()
    )


def consistency_cases(n: int) -> list[dict[str, Any]]:
    """Every (or sampled) size1 ≤ n, plus the mutation set for a few of them."""
    hs = [leaf_hash(x) for x in leaves(n)]
    root2 = mth(hs)
    sizes1 = list(range(1, n + 1)) if n <= 64 else [m for m in _sample(n, 16) if m > 0]
    mutate = sorted({1, n // 2 or 1, n - 1 or 1, n})
    cases: list[dict[str, Any]] = []

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

    for m in sizes1:
        p = proof(m, hs)
        r1 = mth(hs[:m])
        case("happy-path", m, n, p, r1, root2)
        if m not in mutate:
            continue
        case("swapped-roots", m, n, p, root2, r1)
        case("random-root1", m, n, p, _garbage("r1"), root2)
        case("random-root2", m, n, p, r1, _garbage("r2"))
        case("trailing-garbage", m, n, [*p, _garbage("t")], r1, root2)
        case("preceding-garbage", m, n, [_garbage("p"), *p], r1, root2)
        case("size2-times-two", m, 2 * n, p, r1, root2)
        case("size1-plus-one", m + 1, n, p, r1, root2)
        if m > 1:
            case("size1-minus-one", m - 1, n, p, r1, root2)
            case("size1-div-two", m // 2, n, p, r1, root2)
        if m == n:
            case("equal-sizes-nonempty-proof", m, n, [_garbage("x")], r1, root2)
        if p:
            case("truncated-proof", m, n, p[:-1], r1, root2)
            case("empty-proof", m, n, [], r1, root2)
            for bit in (0, 255):
                for j in (0, len(p) - 1):
                    flipped = list(p)
                    flipped[j] = _flip(p[j], bit)
                    case(f"modified-proof-{j}-bit-{bit}", m, n, flipped, r1, root2)
    for c in cases:
        c["want_error"] = not _reference_consistency_ok(c, hs)
    return cases


def _reference_consistency_ok(c: dict[str, Any], hs: list[bytes]) -> bool:
    m, size = c["size1"], c["size2"]
    if not 0 < m <= size or size > len(hs):
        return False
    return bool(
        c["proof"] == _hex(proof(m, hs[:size]))
        and c["root1"] == mth(hs[:m]).hex()
        and c["root2"] == mth(hs[:size]).hex()
    )


def render(kind: str, n: int) -> str:
    """The JSON text of one vector file."""
    cases = inclusion_cases(n) if kind == "inclusion" else consistency_cases(n)
    # One case per line: compact, yet a regenerated file diffs case by case.
    lines = ",\n".join(json.dumps(c, sort_keys=True, separators=(",", ":")) for c in cases)
    return (
        f'{{"tree_size":{n},"leaves":"RFC 6962 test leaves, then b\'leaf-<i>\'","cases":[\n'
        f"{lines}\n]}}\n"
    )


def main() -> None:
    """Write every vector file."""
    for kind in ("inclusion", "consistency"):
        out = HERE / kind
        out.mkdir(exist_ok=True)
        for n in (*SMALL_SIZES, *LARGE_SIZES):
            (out / f"{n}.json").write_text(render(kind, n))


if __name__ == "__main__":
    main()
