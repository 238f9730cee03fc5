"""Log engine benchmarks: proofs from storage and sequencer throughput, each beside a baseline.

Run: ``python -m bench.bench_log [--entries 1000000] [--samples 2000]``

1. Proof latency at ``--entries`` leaves, served from SQLite tiles through ``ProofBuilder`` (the
   server path, with its tile LRU), beside the same proofs computed from every level held in RAM
   (the floor: no storage at all). Target: p99 ≤ 1 ms at 10^6.
2. Sequencer throughput into SQLite (WAL, synchronous=FULL) with batches of 1, 100 and 1000 —
   each entry committed, covered by a signed checkpoint and given its inclusion proof — beside
   raw stdlib ``sqlite3`` inserts of the same rows in transactions of the same size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import insert
from sqlalchemy.engine import Connection

from bench.synthetic import TileCollector
from services.db import Database, sqlite_url
from services.log import merkle
from services.log.checkpoint import Checkpoint, CheckpointSigner
from services.log.proofs import ProofBuilder
from services.log.schema import tiles, tree_heads
from services.log.sequencer import Genesis, Sequencer
from services.log.sqlstore import SQLLogStore
from services.log.tiles import TileCache
from services.migrate import upgrade

TREE = 1


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 * 1e3, p99 * 1e3


async def _timed(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


async def bench_proofs(n: int, samples: int, workdir: Path) -> None:
    """Build an n-leaf tree's tiles straight into SQLite, then time proofs against it."""
    rng = random.Random(1)
    leaves = [rng.randbytes(32) for _ in range(n)]
    levels: list[list[bytes]] = [leaves]
    compact = merkle.CompactRange()
    collect = TileCollector()
    tile_data = collect.tiles

    def visit(node: merkle.NodeID, h: bytes) -> None:
        collect(node, h)
        while len(levels) <= node.level:
            levels.append([])
        levels[node.level].append(h)

    levels[0] = []
    compact.extend(leaves, visit)
    root = compact.root()

    db = Database(sqlite_url(workdir / "proofs.db"))
    await upgrade(db)

    def load(conn: Connection) -> None:
        conn.execute(
            insert(tiles),
            [
                {"tree_id": TREE, "level": lv, "idx": idx, "data": bytes(d)}
                for (lv, idx), d in tile_data.items()
            ],
        )
        conn.execute(
            insert(tree_heads).values(
                tree_id=TREE, origin="bench", size=n, root=root, timestamp_ms=0, checkpoint="-"
            )
        )

    await db.write(load)
    store = SQLLogStore(db)
    builder = ProofBuilder(store, TREE, TileCache(2048))

    def ram_get(node: merkle.NodeID) -> bytes:
        return levels[node.level][node.index]

    indices = [rng.randrange(n) for _ in range(samples)]
    sizes1 = [rng.randrange(1, n) for _ in range(samples)]
    it_i = iter(indices)
    it_c = iter(sizes1)

    async def ram_incl() -> object:
        return merkle.inclusion_proof(next(it_i), n, ram_get)

    async def ram_cons() -> object:
        return merkle.consistency_proof(next(it_c), n, ram_get)

    ram_i = await _timed(ram_incl, samples)
    ram_c = await _timed(ram_cons, samples)
    it_i, it_c = iter(indices), iter(sizes1)

    async def db_incl() -> object:
        return await builder.inclusion(next(it_i), n)

    async def db_cons() -> object:
        return await builder.consistency(next(it_c), n)

    db_i = await _timed(db_incl, samples)
    db_c = await _timed(db_cons, samples)
    # Honesty check: the stored path gives the same proofs as the in-RAM floor.
    for index in indices[:50]:
        assert await builder.inclusion(index, n) == merkle.inclusion_proof(index, n, ram_get)
    await db.dispose()

    print(f"\nProofs at n = {n:,} ({samples} random samples each; ms)")
    print(f"{'path':<44}{'p50':>10}{'p99':>10}")
    for name, s in [
        ("inclusion, all levels in RAM (floor)", ram_i),
        ("inclusion, SQLite tiles + LRU (server)", db_i),
        ("consistency, all levels in RAM (floor)", ram_c),
        ("consistency, SQLite tiles + LRU (server)", db_c),
    ]:
        p50, p99 = _percentiles(s)
        print(f"{name:<44}{p50:>10.3f}{p99:>10.3f}")
    print(f"tile cache: {builder._cache.hits} hits, {builder._cache.misses} misses")


def raw_sqlite_rate(path: Path, rows: int, batch: int) -> float:
    """Rows/s for plain stdlib sqlite3 inserts of 1 KiB rows, ``batch`` per transaction."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE e (idx INTEGER PRIMARY KEY, leaf_hash BLOB UNIQUE, leaf BLOB)")
    body = os.urandom(1024)
    t = time.perf_counter()
    for start in range(0, rows, batch):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO e VALUES (?, ?, ?)",
            [
                (i, merkle.hash_leaf(body + i.to_bytes(8, "big")), body)
                for i in range(start, min(rows, start + batch))
            ],
        )
        db.execute("COMMIT")
    elapsed = time.perf_counter() - t
    db.close()
    return rows / elapsed


async def sequencer_rate(path: Path, rows: int, batch: int) -> float:
    """Entries/s through the real sequencer (commit + checkpoint + proof per entry)."""
    db = Database(sqlite_url(path))
    await upgrade(db)
    seq = Sequencer(
        SQLLogStore(db),
        tree_id=TREE,
        origin="bench - 1",
        signer=CheckpointSigner("bench", ec.generate_private_key(ec.SECP256R1())),
        genesis=lambda _now: Genesis(b"bench genesis"),
        batch_max_size=batch,
        batch_max_age=0.005,
        max_pending=rows + 1,
    )
    await seq.start()
    body = os.urandom(1024)
    t = time.perf_counter()
    if batch == 1:
        for i in range(rows):
            await seq.submit(body + i.to_bytes(8, "big"))
    else:
        await asyncio.gather(*(seq.submit(body + i.to_bytes(8, "big")) for i in range(rows)))
    elapsed = time.perf_counter() - t
    assert seq.head.size == rows + 1  # and the genesis leaf
    Checkpoint.from_text(seq.head.checkpoint.rpartition("\n\n")[0] + "\n")
    await seq.stop()
    await db.dispose()
    return rows / elapsed


async def bench_sequencer(workdir: Path, rows_per_batch: dict[int, int]) -> None:
    print("\nSequencer into SQLite (WAL, synchronous=FULL), 1 KiB entries (entries/s)")
    print(
        f"{'batch':>6}{'rows':>8}{'raw sqlite3 inserts':>22}{'sigstead sequencer':>22}{'ratio':>8}"
    )
    for batch, rows in rows_per_batch.items():
        raw = raw_sqlite_rate(workdir / f"raw{batch}.db", rows, batch)
        ours = await sequencer_rate(workdir / f"seq{batch}.db", rows, batch)
        print(f"{batch:>6}{rows:>8}{raw:>22,.0f}{ours:>22,.0f}{ours / raw:>8.2f}")


async def main() -> None:
    """Run both benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=20_000, help="rows for batches 100/1000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        await bench_proofs(args.entries, args.samples, workdir)
        await bench_sequencer(workdir, {1: 2000, 100: args.rows, 1000: args.rows})


if __name__ == "__main__":
    asyncio.run(main())
