"""Rekor v2 tile reads at 1,000,000 entries: a real ``sigstead up`` serving a tree of
``--entries`` leaves, loaded by ``sigstead bench``'s generator, beside the same-run aiohttp
"hello" baseline.

Run: ``python -m bench.bench_tiles [--entries 1000000] [--seconds 5] [--rounds 3]
[--data-dir DIR] [--database-url postgresql://…/EMPTY_DB] [--source LABEL=CHECKOUT ...]``

The tree is the server's own: ``sigstead up`` starts once on a fresh data directory and creates
its keys and its v2 tree (tree ID derived from the v2 key, origin the host, genesis entry at 0),
stops, and the synthetic leaves (about 500 bytes of hashedrekord-like JSON each; the tile reads
do not parse them) are appended straight into its database (SQLite in the data directory, or
the empty PostgreSQL database ``--database-url`` names) with their tiles, a checkpoint signed
with the v2 key and the new head, in one transaction and as the engine lays them out; the
server checks that state against its tiles when it restarts. ``--data-dir`` keeps the built
tree for later runs.

Measured per code version (each ``--source`` checkout runs the server from that source tree;
default the one this bench runs from), at concurrency 16 and 64: random full tiles at level 0
and 1, random full entry bundles, and the checkpoint, with the hello server loaded by the same
generator after each. Versions alternate over ``--rounds`` rounds and each cell is the median:
the machine is shared, and load from elsewhere then falls on every version alike. wrk (C)
generates the load when installed, else an asyncio client; generator and server share the
machine's cores, so read the rates against hello.

Measured 2026-12-04 (2 cores, wrk, 1e6 entries, medians of 3 rounds; "before" is 769a477,
which read the tree head from the database before every tile or bundle): SQLite, c=16 / c=64,
full level-0 tiles 2,194 → 5,792/s / 2,256 → 5,838/s, entry bundles 296 → 755/s /
344 → 845/s, hello 21,657-24,570/s. PostgreSQL (same machine): level-0 tiles 277 → 542/s /
282 → 817/s, bundles 97 → 196/s / 100 → 262/s, hello 10,979-13,578/s; there every read pays
``Database.read``'s pool pre-ping, transaction and SQLAlchemy layers (~1 ms against ~0.16 ms
for the same prepared statement on a bare asyncpg connection).

Since then the hot reads on PostgreSQL are one asyncpg statement each (``Database.fetch``: its
own pool, no pre-ping, no transaction, generic plans). Measured 2026-12-04 (2 cores, wrk, 1e6
entries, medians of 3 rounds, ``--source before=<daca3a5> --source after=<a7439ba>``), c=16 /
c=64: level-0 tiles 654 → 3,232/s / 955 → 3,069/s, level-1 tiles 639 → 3,074/s / 852 →
3,238/s, entry bundles 349 → 938/s / 504 → 919/s, checkpoint 590 → 3,840/s / 1,063 → 4,201/s,
hello 21,421-24,456/s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from bench.synthetic import TileCollector
from clients.bench import Load, Result, hello_server, run_load, tile_paths
from services.app import tree_id_for_key
from services.db import Database, sqlite_url
from services.keys import load_or_create_log_key
from services.log import merkle
from services.log.checkpoint import Checkpoint, CheckpointSigner
from services.log.schema import checkpoints, entries, tiles, tree_heads
from services.trust.material import REKOR_V2_KEY_FILE
from tests.serverproc import Server, free_port, start_server, stop_server

CONCURRENCY = (16, 64)
_BUILT = "bench-tiles.json"  # in the data directory: what was built there
_CHUNK = 50_000
_KEY_DETAILS = "PKIX_ECDSA_P256_SHA_256"


def _leaf(index: int, public_key: str) -> bytes:
    """A hashedrekord 0.0.2 leaf as JCS bytes, ~470 bytes; unique through its digest."""
    digest = base64.b64encode(index.to_bytes(8, "big") + random.randbytes(24)).decode()
    signature = base64.b64encode(random.randbytes(71)).decode()
    return (
        '{"apiVersion":"0.0.2","kind":"hashedrekord","spec":{"hashedRekordV002":{"data":'
        f'{{"algorithm":"SHA2_256","digest":"{digest}"}},"signature":{{"content":"{signature}",'
        f'"verifier":{{"keyDetails":"{_KEY_DETAILS}","publicKey":{{"rawBytes":"{public_key}"}}}}'
        "}}}}"
    ).encode()


def build(data_dir: Path, n: int, port: int, database_url: str | None) -> None:
    """Let ``sigstead up`` create its trees, then grow its v2 tree to ``n`` entries."""
    stop_server(start_server(data_dir, *_database_args(database_url), port=port))
    key = load_or_create_log_key(data_dir / "keys" / REKOR_V2_KEY_FILE)  # the server made it
    # As services.app derives it: from the SPKI, whatever the key's type and name.
    tree_id = tree_id_for_key(CheckpointSigner("x", key).spki_id)
    public_key = base64.b64encode(random.randbytes(91)).decode()

    def write(conn: Connection) -> None:
        origin, size = conn.execute(
            select(tree_heads.c.origin, tree_heads.c.size).where(tree_heads.c.tree_id == tree_id)
        ).one()
        if size != 1:
            raise SystemExit(f"the v2 tree {origin} has {size} entries; want a fresh one (1)")
        genesis = conn.execute(
            select(entries.c.leaf).where(entries.c.tree_id == tree_id, entries.c.idx == 0)
        ).scalar_one()
        rng = merkle.CompactRange()
        visit = TileCollector()
        tile_data = visit.tiles

        rng.append(merkle.hash_leaf(bytes(genesis)), visit)
        for start in range(1, n, _CHUNK):
            rows = []
            for i in range(start, min(n, start + _CHUNK)):
                leaf = _leaf(i, public_key)
                h = merkle.hash_leaf(leaf)
                rng.append(h, visit)
                rows.append(
                    {
                        "tree_id": tree_id,
                        "idx": i,
                        "leaf_hash": h,
                        "leaf": leaf,
                        "integrated_time": 0,
                    }
                )
            conn.execute(insert(entries), rows)
        # The tiles of the genesis-only tree are rewritten whole (its level-0 tile grew).
        conn.execute(delete(tiles).where(tiles.c.tree_id == tree_id))
        conn.execute(
            insert(tiles),
            [
                {"tree_id": tree_id, "level": lv, "idx": i, "data": bytes(d)}
                for (lv, i), d in tile_data.items()
            ],
        )
        root = rng.root()
        # The v2 signer's name is its origin (the host), as services.app makes it.
        note = CheckpointSigner(origin, key).sign_checkpoint(Checkpoint(origin, n, root))
        head = {
            "size": n,
            "root": root,
            "timestamp_ms": int(time.time() * 1000),
            "checkpoint": note,
        }
        conn.execute(update(tree_heads).where(tree_heads.c.tree_id == tree_id).values(**head))
        conn.execute(insert(checkpoints).values(tree_id=tree_id, **head))

    async def run() -> None:
        db = Database(database_url or sqlite_url(data_dir / "sigstead.db"))
        try:
            await db.write(write)  # one transaction: the tree grows whole or not at all
        finally:
            await db.dispose()

    asyncio.run(run())
    built = {"entries": n, "port": port, "database_url": database_url}
    (data_dir / _BUILT).write_text(json.dumps(built))


def _database_args(database_url: str | None) -> tuple[str, ...]:
    return () if database_url is None else ("--database-url", database_url)


@contextlib.contextmanager
def serving(
    data_dir: Path, port: int, source: Path | None, database_url: str | None
) -> Iterator[Server]:
    """``sigstead up`` on the built directory, its code imported from ``source`` if given
    (``python -m`` puts the working directory first on the import path)."""
    with contextlib.chdir(source or Path.cwd()):
        server = start_server(data_dir, *_database_args(database_url), port=port)
    try:
        yield server
    finally:
        stop_server(server)


def measure(url: str, size: int, seconds: float, engine: str) -> list[Result]:
    loads = [
        Load("tile 0", "GET", "", bodies=tile_paths(size, level=0), paths=True),
        Load("tile 1", "GET", "", bodies=tile_paths(size, level=1), paths=True),
        Load("entries", "GET", "", bodies=tile_paths(size, level="entries"), paths=True),
        Load("checkpoint", "GET", "/api/v2/checkpoint"),
    ]
    for load in loads:  # warm the page cache and the server before the clock
        run_load(url, load, concurrency=CONCURRENCY[0], seconds=1, engine=engine)
    return [
        run_load(url, load, concurrency=c, seconds=seconds, engine=engine)
        for c in CONCURRENCY
        for load in loads
    ]


def hello(seconds: float, engine: str) -> list[Result]:
    with hello_server() as url:
        return [
            run_load(url, Load("hello", "GET", "/"), concurrency=c, seconds=seconds, engine=engine)
            for c in CONCURRENCY
        ]


def _cell(rounds: list[list[Result]], i: int) -> str:
    cells = [r[i] for r in rounds]
    bad = sum(n for r in cells for s, n in r.statuses.items() if s != "200")
    bad += sum(r.socket_errors for r in cells)
    rate = statistics.median(r.rate for r in cells)
    p50 = statistics.median(r.p50 for r in cells)
    p99 = statistics.median(r.p99 for r in cells)
    cell = f"{rate:>9,.0f}/s {p50:>6.2f} {p99:>7.2f}"
    return cell + (f" ({bad} failed)" if bad else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--data-dir", type=Path, help="build the tree here, or reuse it")
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="LABEL=CHECKOUT",
        help="run the server from this source tree (repeat to compare versions in one run)",
    )
    parser.add_argument(
        "--database-url",
        help="an EMPTY PostgreSQL database for the server (default: SQLite in the data directory)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per version")
    parser.add_argument("--engine", choices=("auto", "wrk", "asyncio"), default="auto")
    args = parser.parse_args()
    sources: list[tuple[str, Path | None]] = [
        (label, Path(path).resolve()) for label, _, path in (s.partition("=") for s in args.source)
    ] or [("this checkout", None)]

    with contextlib.ExitStack() as stack:
        data_dir = args.data_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="sigstead-bench-tiles-"))
        )
        data_dir = data_dir.resolve() / "data" if args.data_dir is None else data_dir.resolve()
        data_dir.parent.mkdir(parents=True, exist_ok=True)  # the server logs go there
        built = data_dir / _BUILT
        if built.exists():
            info = json.loads(built.read_text())
            if (info["entries"], info.get("database_url")) != (args.entries, args.database_url):
                raise SystemExit(
                    f"{data_dir} holds another tree ({info['entries']:,} entries, database "
                    f"{info['database_url'] or 'SQLite'}): name another --data-dir"
                )
            port = int(info["port"])
            print(f"reusing the tree of {args.entries:,} entries in {data_dir}", flush=True)
        else:
            port = free_port()
            print(f"building a v2 tree of {args.entries:,} entries in {data_dir} ...", flush=True)
            started = time.perf_counter()
            build(data_dir, args.entries, port, args.database_url)
            print(f"built in {time.perf_counter() - started:.0f} s", flush=True)

        # Rounds alternate the versions (A B A B ...), so load from elsewhere on a shared
        # machine falls on both; each cell is the median over the rounds.
        results: dict[str, list[list[Result]]] = {label: [] for label, _ in sources}
        baselines: dict[str, list[list[Result]]] = {label: [] for label, _ in sources}
        for round_ in range(args.rounds):
            for label, source in sources:
                print(f"round {round_ + 1}/{args.rounds}: measuring {label} ...", flush=True)
                with serving(data_dir, port, source, args.database_url) as server:
                    results[label].append(
                        measure(server.url, args.entries, args.seconds, args.engine)
                    )
                baselines[label].append(hello(args.seconds, args.engine))

    engine = results[sources[0][0]][0][0].engine
    width = 38
    print()
    print(
        f"Rekor v2 reads, tree of {args.entries:,} entries, {args.seconds:g} s per cell, {engine},"
        f" median of {args.rounds} alternating round(s)"
    )
    print(f"{'':<16}" + "".join(f"{label:<{width}}" for label, _ in sources))
    print(f"{'workload':<12}{'c':>4}" + f"{'  rate      p50 ms  p99 ms':<{width}}" * len(sources))
    for table in (results, baselines):
        first = table[sources[0][0]][0]
        for i, r in enumerate(first):
            line = f"{r.name:<12}{r.concurrency:>4}"
            line += "".join(f"{_cell(table[label], i):<{width}}" for label, _ in sources)
            print(line)
    print("(hello: the aiohttp hello server, loaded right after each version's runs)")
    print(f"(cpu count {os.cpu_count()}; generator and server share the machine)")


if __name__ == "__main__":
    main()
