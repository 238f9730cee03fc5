"""fsck replay speed: ``sigstead fsck`` over a log of ``--entries`` leaves in SQLite, beside the
same-run floors: hashing the same leaves with hashlib and with the native hasher, no database,
and reading the rows back from SQLite into Python, no hashing; and fsck as it runs without its C
extensions, with the C hasher alone, and as installed (the hash replay stepped in C).

Run: ``python -m bench.bench_fsck [--entries 1000000]``

The log is written straight into the tables (entries, tiles, one signed checkpoint and head), as
the engine lays them out, so building it costs seconds rather than an hour of HTTP; fsck then
reads it exactly as it reads a real one. Target (issue 14): at least 1,000,000 leaves/s for the
hash replay on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import insert
from sqlalchemy.engine import Connection

from bench.synthetic import TileCollector
from services.audit import fsck as fsck_module
from services.audit.fsck import fsck
from services.db import Database, sqlite_url
from services.keys import write_private_key
from services.log import merkle
from services.log.checkpoint import Checkpoint, CheckpointSigner
from services.log.schema import checkpoints, entries, tiles, tree_heads
from services.migrate import upgrade

TREE = 7
LEAF = 512  # bytes: about a hashedrekord leaf


async def build(data_dir: Path, n: int) -> list[bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    write_private_key(data_dir / "keys" / "rekor.pem", key)
    signer = CheckpointSigner("bench", key)
    db = Database(sqlite_url(data_dir / "sigstead.db"))
    await upgrade(db)
    body = os.urandom(LEAF - 8)
    leaves = [body + i.to_bytes(8, "big") for i in range(n)]
    rng = merkle.CompactRange()
    visit = TileCollector()
    tile_data = visit.tiles

    rows = []
    for i, leaf in enumerate(leaves):
        h = merkle.hash_leaf(leaf)
        rng.append(h, visit)
        rows.append({"tree_id": TREE, "idx": i, "leaf_hash": h, "leaf": leaf, "integrated_time": 0})
    origin = "bench - 7"
    note = signer.sign_checkpoint(Checkpoint(origin, n, rng.root()))

    def write(conn: Connection) -> None:
        for start in range(0, n, 50_000):
            conn.execute(insert(entries), rows[start : start + 50_000])
        conn.execute(
            insert(tiles),
            [
                {"tree_id": TREE, "level": lv, "idx": i, "data": bytes(d)}
                for (lv, i), d in tile_data.items()
            ],
        )
        head = {
            "tree_id": TREE,
            "size": n,
            "root": rng.root(),
            "timestamp_ms": 0,
            "checkpoint": note,
        }
        conn.execute(insert(checkpoints).values(**head))
        conn.execute(insert(tree_heads).values(origin=origin, **head))

    await db.write(write)
    await db.dispose()
    return leaves


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sigstead-bench-fsck-") as tmp:
        data = Path(tmp)
        (data / "keys").mkdir(mode=0o700)
        print(f"building a log of {args.entries:,} entries of {LEAF} bytes ...", flush=True)
        leaves = await build(data, args.entries)

        started = time.perf_counter()
        sha256 = hashlib.sha256
        hashes = [sha256(b"\x00" + leaf).digest() for leaf in leaves]
        floor = args.entries / (time.perf_counter() - started)
        started = time.perf_counter()
        merkle.hash_leaves(leaves)
        native_floor = args.entries / (time.perf_counter() - started)
        del leaves, hashes

        # What any replay must read, and how fast SQLite alone gives it back to Python: every
        # (leaf hash, leaf) row in index order, block by block as fsck asks for them.
        connection = sqlite3.connect(data / "sigstead.db")
        connection.execute("PRAGMA mmap_size = 1073741824")  # as fsck reads it
        connection.execute("SELECT count(*) FROM entries").fetchall()  # warm the page cache
        started = time.perf_counter()
        for start in range(0, args.entries, 4096):
            connection.execute(
                "SELECT leaf_hash, leaf FROM entries"
                " WHERE tree_id = ? AND idx >= ? AND idx < ? ORDER BY idx",
                (TREE, start, start + 4096),
            ).fetchall()
        read_floor = args.entries / (time.perf_counter() - started)
        connection.close()

        rates = {}
        db = Database(sqlite_url(data / "sigstead.db"))
        native = fsck_module._native_reader, merkle.check_leaves, merkle.subtree_root
        python_hashers = merkle._check_leaves, merkle._subtree_root
        try:
            # Without the C extensions, with the C hasher only (rows through the sqlite3
            # module), then as installed: the replay stepped in C.
            for label, (reader, check_leaves, subtree_root) in (
                ("python", (None, *python_hashers)),
                ("hasher", (None, *native[1:])),
                ("native", native),
            ):
                fsck_module._native_reader = reader
                merkle.check_leaves, merkle.subtree_root = check_leaves, subtree_root
                started = time.perf_counter()
                (report,) = await fsck(db, data, index=False)  # the leaves are random bytes
                rates[label] = report.size / (time.perf_counter() - started)
        finally:
            fsck_module._native_reader, merkle.check_leaves, merkle.subtree_root = native
            await db.dispose()
        for label, value in (
            ("hashlib floor (leaf hashes, no I/O)", floor),
            ("native hasher (leaf hashes, no I/O)", native_floor),
            ("SQLite read floor (rows to Python, no hashing)", read_floor),
            ("sigstead fsck, no C extension (fallback)", rates["python"]),
            ("sigstead fsck, C hasher, rows through sqlite3", rates["hasher"]),
            ("sigstead fsck (SQLite, whole replay)", rates["native"]),
        ):
            print(f"{label:<48}{value:>14,.0f} leaves/s")
        print(f"{'fsck / hashlib floor':<48}{rates['native'] / floor:>14.2f}")


if __name__ == "__main__":
    asyncio.run(main())
