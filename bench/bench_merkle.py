"""root() over 10^6 leaf hashes beside the CPython floor, merkletools and pymerkle, same run.

Run: ``python -m bench.bench_merkle [--n 1000000] [--repeat 3] [--pymerkle-n N]``

Every row is the best of ``--repeat`` rounds in this one process, over the same random leaves;
each round runs every implementation once, so load from other processes hits all rows alike
(pymerkle, ~30x slower, runs on its own, ``--pymerkle-repeat`` times).

- floor: the fastest bare ``hashlib`` loops we could write that compute the same n-1 RFC 6962
  node hashes (odd node promoted): ``sha256(0x01 + l + r)`` per node, and a pre-seeded hash
  object ``copy()``-ed per node. The faster of the two is the floor. Target: root() <= 1.2x.
  (Pipelines of ``map`` over C callables, and hashing slices of one joined buffer, were tried
  and are 1.3-2x *slower* than these loops on CPython 3.11; a 65-byte SHA-256 is two
  compressions whatever the loop, so there is nothing left to batch.)
- merkletools 1.0.3: *not* RFC 6962 (no leaf/node domain separation), a speed baseline only.
  Install with ``pip install --no-deps merkletools==1.0.3`` (its pysha3 dependency does not build
  on 3.11). Timed: ``make_tree`` over the same leaves, given as hex as its API requires (the hex
  decoding in ``add_leaf`` is outside the timing).
- pymerkle 7.0.0 (``pip install sigstead[bench]``): RFC 6962 roots. Its API takes entries, not
  leaf hashes, so it also hashes each leaf; it re-hashes the right spine on every append. Timed:
  ``InmemoryTree.append_entry`` for every entry, then ``get_root()``; its root is checked against
  ``merkle.root`` over our leaf hashes of the same entries.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import random
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

from services.log import merkle

T = TypeVar("T")


def floor_concat(leaves: Sequence[bytes]) -> bytes:
    """Bare loop: ``sha256(0x01 + l + r)`` per node, odd node promoted."""
    sha = hashlib.sha256
    level = leaves
    while len(level) > 1:
        it = iter(level)
        nxt = [sha(b"\x01" + left + right).digest() for left, right in zip(it, it, strict=False)]
        if len(level) & 1:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def floor_copy(leaves: Sequence[bytes]) -> bytes:
    """Bare loop: a hash object seeded with 0x01, copied per node."""
    copy = hashlib.sha256(b"\x01").copy
    level = leaves
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


def best(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    """Best wall time of ``repeat`` runs, and the last run's result."""
    times = []
    result: T
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def best_interleaved(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best wall time of each function over ``repeat`` rounds, one run of each per round.

    Round-robin rather than one function at a time, so that load from other processes on a
    shared machine lands on every row alike instead of skewing whichever ran during it.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: min(ts) for name, ts in times.items()}


def main() -> None:
    """Print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="number of leaf hashes")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (best run is kept)")
    parser.add_argument("--pymerkle-repeat", type=int, default=3, help="pymerkle runs")
    parser.add_argument(
        "--pymerkle-n", type=int, help="leaves for pymerkle (default n; fewer is extrapolated)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = args.n
    rng = random.Random(args.seed)
    leaves = [rng.randbytes(32) for _ in range(n)]
    want = merkle.root(leaves)
    assert floor_concat(leaves) == floor_copy(leaves) == want

    def run_compact() -> merkle.CompactRange:
        compact = merkle.CompactRange()
        compact.extend(leaves)
        return compact

    assert run_compact().root() == want

    fns: dict[str, Callable[[], object]] = {
        "concat": lambda: floor_concat(leaves),
        "copy": lambda: floor_copy(leaves),
        "root": lambda: merkle.root(leaves),
        "compact": run_compact,
    }
    with warnings.catch_warnings():
        # merkletools warns at import that its optional pysha3 is missing; we use sha256.
        warnings.simplefilter("ignore")
        try:
            import merkletools
        except ImportError:
            merkletools = None
    if merkletools is not None:
        mt = merkletools.MerkleTools(hash_type="sha256")
        mt.add_leaf([leaf.hex() for leaf in leaves])
        fns["merkletools"] = mt.make_tree

    t = best_interleaved(fns, args.repeat)
    floor = min(t["concat"], t["copy"])
    rows: list[tuple[str, float | None, str]] = [
        ("hashlib floor: sha256(0x01+l+r)", t["concat"], "bare loop"),
        ("hashlib floor: prefix.copy()+update", t["copy"], "bare loop"),
        ("sigstead merkle.root()", t["root"], "RFC 6962"),
        ("sigstead CompactRange.extend", t["compact"], "RFC 6962, incremental"),
    ]
    if "merkletools" in t:
        rows.append(("merkletools 1.0.3 make_tree", t["merkletools"], "NOT RFC 6962 (no prefixes)"))
    else:
        rows.append(("merkletools 1.0.3", None, "not installed (pip install --no-deps)"))

    try:
        from pymerkle import InmemoryTree
    except ImportError:
        rows.append(("pymerkle 7.0.0", None, "not installed (pip install sigstead[bench])"))
    else:
        pm_n = min(n, args.pymerkle_n or n)

        def run_pymerkle() -> bytes:
            tree = InmemoryTree(algorithm="sha256")
            for leaf in leaves[:pm_n]:
                tree.append_entry(leaf)
            root: bytes = tree.get_root()
            return root

        t_pm, pm_root = best(run_pymerkle, args.pymerkle_repeat)
        assert pm_root == merkle.root([merkle.hash_leaf(leaf) for leaf in leaves[:pm_n]])
        name = "pymerkle 7.0.0 append_entry+get_root"
        if pm_n < n:
            name += f" (x{n / pm_n:g} from {pm_n:,})"
            t_pm *= n / pm_n
        rows.append((name, t_pm, f"RFC 6962, +n leaf hashes; best of {args.pymerkle_repeat}"))

    print(f"root over n = {n:,} random 32-byte leaf hashes, best of {args.repeat} rounds")
    print(f"{'implementation':<50}{'seconds':>9}{'x floor':>9}  note")
    for name, secs, note in rows:
        if secs is None:
            print(f"{name:<50}{'-':>9}{'-':>9}  {note}")
        else:
            print(f"{name:<50}{secs:>9.3f}{secs / floor:>9.2f}  {note}")
    print(f"\nfloor = {floor:.3f} s = {floor / (n - 1) * 1e9:.0f} ns per node hash")
    print(f"target root()/floor <= 1.20: {t['root'] / floor:.2f}")
    rate = n / t["compact"]
    print(f"CompactRange.append: {rate:,.0f} leaves/s ({t['compact'] / n * 1e9:.0f} ns each)")


if __name__ == "__main__":
    main()
