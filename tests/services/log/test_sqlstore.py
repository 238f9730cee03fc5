"""SQLLogStore reads on both databases. SQLite answers ``read_entries`` from the sqlite3 cursor
and PostgreSQL through SQLAlchemy; both must answer exactly what was committed, and on SQLite
exactly what SQLAlchemy reads from the same rows, whether asked for a range or a list."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.engine import Connection

from services.db import Database
from services.log import merkle
from services.log.schema import entries
from services.log.sqlstore import SQLLogStore, StoredEntry
from tests.services.log.test_sequencer import GENESIS, TREE, FakeClock, make_sequencer

NOW = 1_800_000_000


async def test_read_entries_answers_what_was_committed(db: Database) -> None:
    store = SQLLogStore(db)
    seq = make_sequencer(
        store,
        clock=FakeClock(NOW),
        sealer=lambda e: b"seal %d" % e.index,
        batch_max_size=1000,
    )
    await seq.start()
    try:
        leaves = [b"leaf %d" % i for i in range(700)]  # more than one IN chunk (500)
        receipts = await asyncio.gather(
            *(
                seq.submit(leaf, extra=b"extra %d" % i if i % 2 else None, want_proof=False)
                for i, leaf in enumerate(leaves)
            )
        )
    finally:
        await seq.stop()
    by_leaf = {leaf: r.index for leaf, r in zip(leaves, receipts, strict=True)}
    expected = {
        by_leaf[leaf]: StoredEntry(
            by_leaf[leaf],
            merkle.hash_leaf(leaf),
            leaf,
            NOW,
            b"extra %d" % i if i % 2 else None,
            b"seal %d" % by_leaf[leaf],
        )
        for i, leaf in enumerate(leaves)
    }

    got = await store.read_entries(TREE, [0, *expected, 5000, 701])  # two beyond the tree
    assert got[0].leaf == GENESIS
    assert got[0].extra is None
    del got[0]
    assert got == expected
    for e in got.values():
        fields = (e.leaf_hash, e.leaf, e.extra or b"", e.seal or b"")
        assert all(type(f) is bytes for f in fields)
        assert type(e.index) is int
        assert type(e.integrated_time) is int

    def by_sqlalchemy(conn: Connection) -> dict[int, tuple[object, ...]]:
        rows = conn.execute(select(entries).where(entries.c.tree_id == TREE))
        return {r.idx: tuple(r) for r in rows}

    every = await store.read_entries(TREE, range(701))
    assert {
        i: (TREE, e.index, e.leaf_hash, e.leaf, e.integrated_time, e.extra, e.seal)
        for i, e in every.items()
    } == await db.read(by_sqlalchemy)
    # A step-1 range is one range scan, any other collection an IN list: the same answers.
    assert await store.read_entries(TREE, range(650, 800)) == {i: every[i] for i in range(650, 701)}
    assert await store.read_entries(TREE, list(range(650, 800))) == {
        i: every[i] for i in range(650, 701)
    }
    assert await store.read_entries(TREE, range(0, 701, 2)) == {
        i: every[i] for i in range(0, 701, 2)
    }
    # The leaves alone (entry bundles), in index order, short where the tree ends.
    leaves_only = await store.read_leaves(TREE, range(250, 800))
    assert leaves_only == [every[i].leaf for i in range(250, 701)]
    assert all(type(leaf) is bytes for leaf in leaves_only)
    assert await store.read_leaves(TREE, range(5000, 5256)) == []
    assert await store.read_entries(TREE, range(5, 5)) == {}
    assert await store.read_entries(TREE, []) == {}
    assert await store.read_entries(TREE + 1, [0, 1]) == {}
