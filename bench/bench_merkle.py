"""root() over 10^6 leaf hashes beside the CPython floor, merkletools and pymerkle, same run.

Run: ``python -m bench.bench_merkle [--n 1000000] [--repeat 3]``

- floor: the fastest bare ``hashlib`` loop we could write that computes the same n-1 RFC 6962
  node hashes (two variants are timed; the faster is the floor). Target: root() within 1.2x.
- merkletools 1.0.3: *not* RFC 6962 (no leaf/node domain separation), a speed baseline only.
  Install with ``pip install --no-deps merkletools==1.0.3`` (its pysha3 dependency does not build
  on 3.11). Timed: make_tree over the same leaves as hex, as its API takes them.
- pymerkle 7.0.0 (``pip install sigstead[bench]``): RFC 6962 roots, one append at a time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable, Sequence

from services.log import merkle


def floor_concat(leaves: Sequence[bytes]) -> bytes:
    """Bare loop: sha256(0x01 + l + r) per node, odd node promoted."""
    sha = hashlib.sha256
    level = list(leaves)
    while len(level) > 1:
        it = iter(level)
        nxt = [sha(b"\x01" + left + right).digest() for left, right in zip(it, it, strict=False)]
        if len(level) & 1:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def floor_copy(leaves: Sequence[bytes]) -> bytes:
    """Bare loop: a pre-seeded hash object copied per node."""
    copy = hashlib.sha256(b"\x01").copy
    level = list(leaves)
    while len(level) > 1:
        nxt: list[bytes] = []
        append = nxt.append
        it = iter(level)
        for left, right in zip(it, it, strict=False):
            h = copy()
            h.update(left + right)
            append(h.digest())
        if len(level) & 1:
            append(level[-1])
        level = nxt
    return level[0]


def best(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    """Print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.n
    leaves = [os.urandom(32) for _ in range(n)]
    want = merkle.root(leaves)
    assert floor_concat(leaves) == floor_copy(leaves) == want

    rows: list[tuple[str, float | None, str]] = []
    t_concat = best(lambda: floor_concat(leaves), args.repeat)
    t_copy = best(lambda: floor_copy(leaves), args.repeat)
    floor = min(t_concat, t_copy)
    t_root = best(lambda: merkle.root(leaves), args.repeat)
    rows += [
        ("hashlib floor: sha256(0x01+l+r)", t_concat, ""),
        ("hashlib floor: prefix.copy()+update", t_copy, ""),
        ("sigstead merkle.root()", t_root, "RFC 6962"),
    ]
    compact = merkle.CompactRange()
    t_append = best(lambda: merkle.CompactRange().extend(leaves), args.repeat)
    compact.extend(leaves)
    assert compact.root() == want
    rows.append(("sigstead CompactRange.extend", t_append, "RFC 6962, incremental"))
    try:
        import merkletools

        hex_leaves = [leaf.hex() for leaf in leaves]

        def run_merkletools() -> None:
            mt = merkletools.MerkleTools(hash_type="sha256")
            mt.add_leaf(hex_leaves)
            mt.make_tree()

        rows.append(
            ("merkletools 1.0.3 make_tree", best(run_merkletools, args.repeat), "NOT RFC 6962")
        )
    except ImportError:
        rows.append(("merkletools 1.0.3", None, "not installed (pip install --no-deps)"))
    try:
        from pymerkle import InmemoryTree

        pm_n = min(n, 100_000)

        def run_pymerkle() -> None:
            tree = InmemoryTree(algorithm="sha256")
            for leaf in leaves[:pm_n]:
                tree.append_entry(leaf)

        t_pm = best(run_pymerkle, 1) * n / pm_n
        rows.append(
            (f"pymerkle 7.0.0 appends (x{n // pm_n} from {pm_n:,})", t_pm, "RFC 6962 roots")
        )
    except ImportError:
        rows.append(("pymerkle 7.0.0", None, "not installed"))

    print(f"root over n = {n:,} leaf hashes (best of {args.repeat}); floor = {floor:.3f} s")
    print(f"{'implementation':<46}{'seconds':>9}{'x floor':>9}  note")
    for name, t, note in rows:
        if t is None:
            print(f"{name:<46}{'-':>9}{'-':>9}  {note}")
        else:
            print(f"{name:<46}{t:>9.3f}{t / floor:>9.2f}  {note}")
    print(f"\ntarget: root()/floor <= 1.20 -> {t_root / floor:.2f}")


if __name__ == "__main__":
    main()
