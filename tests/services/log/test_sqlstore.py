"""SQLLogStore reads on both databases. The hot reads go around SQLAlchemy (SQLite: the sqlite3
cursor; PostgreSQL: ``Database.fetch`` on asyncpg); both must answer exactly what was committed,
exactly what SQLAlchemy reads from the same rows, whether asked for a range or a list."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.engine import Connection

from services.db import Database
from services.log import merkle
from services.log.schema import entries, tiles, tree_heads
from services.log.sequencer import StoredLeaf, TreeHead
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

    # By leaf hash (GET /api/v1/log/entries/{uuid}), with unknown hashes left out.
    hashes = [every[i].leaf_hash for i in (0, 3, 600, 700)]
    unknown = merkle.hash_leaf(b"never logged")
    assert await store.read_entries_by_leaf_hash(TREE, [unknown, *hashes, hashes[0]]) == {
        every[i].leaf_hash: every[i] for i in (0, 3, 600, 700)
    }
    assert await store.read_entries_by_leaf_hash(TREE, []) == {}
    assert await store.read_entries_by_leaf_hash(TREE + 1, hashes) == {}
    assert await store.find_leaves(TREE, [unknown, *hashes]) == {
        every[i].leaf_hash: StoredLeaf(i, every[i].integrated_time) for i in (0, 3, 600, 700)
    }
    assert await store.find_leaves(TREE, []) == {}


async def test_read_tiles_and_head_answer_what_was_committed(db: Database) -> None:
    store = SQLLogStore(db)
    seq = make_sequencer(store, clock=FakeClock(NOW), batch_max_size=1000)
    await seq.start()
    try:
        # 700 entries + genesis: full level-0 tiles 0 and 1, partial tile 2, partial level 1.
        await asyncio.gather(*(seq.submit(b"leaf %d" % i, want_proof=False) for i in range(700)))
    finally:
        await seq.stop()

    def by_sqlalchemy(conn: Connection) -> tuple[dict[tuple[int, int], bytes], TreeHead]:
        stored = conn.execute(select(tiles.c.level, tiles.c.idx, tiles.c.data))
        h = conn.execute(select(tree_heads).where(tree_heads.c.tree_id == TREE)).one()
        head = TreeHead(h.size, bytes(h.root), h.timestamp_ms, h.checkpoint)
        return {(lv, ix): bytes(data) for lv, ix, data in stored}, head

    stored, stored_head = await db.read(by_sqlalchemy)
    assert sorted(stored) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    # Several levels in one call, keys asked twice, and keys that are not stored.
    wanted = [(1, 0), (0, 2), (0, 0), (0, 1), (0, 2), (0, 3), (2, 0), (1, 1)]
    got = await store.read_tiles(TREE, wanted)
    assert got == stored
    assert all(type(data) is bytes for data in got.values())
    assert await store.read_tiles(TREE, []) == {}
    assert await store.read_tiles(TREE + 1, wanted) == {}
    # More keys than one IN chunk (500) on SQLite.
    assert await store.read_tiles(TREE, [(0, i) for i in range(1200)]) == {
        k: v for k, v in stored.items() if k[0] == 0
    }

    head = await store.read_head(TREE)
    assert head == stored_head
    assert head.size == 701
    assert type(head.root) is bytes
    assert type(head.checkpoint) is str
    assert type(head.timestamp_ms) is int
    assert await store.read_head(TREE + 1) is None


async def test_search_answers_what_was_committed(db: Database) -> None:
    store = SQLLogStore(db)
    seq = make_sequencer(store, clock=FakeClock(NOW), batch_max_size=1000)
    await seq.start()
    try:
        # Entry i carries "mod2:i%2", "mod3:i%3" and, from 300 on, "late".
        receipts = await asyncio.gather(
            *(
                seq.submit(
                    b"leaf %d" % i,
                    {f"mod2:{i % 2}", f"mod3:{i % 3}", *(["late"] if i >= 300 else [])},
                    want_proof=False,
                )
                for i in range(320)
            )
        )
    finally:
        await seq.stop()
    index = [r.index for r in receipts]  # of entry i, in whatever order batches took them

    async def search(keys: list[str], *, match_all: bool) -> list[int]:
        return await store.search(TREE, keys, match_all=match_all)

    assert await search(["mod3:1"], match_all=False) == sorted(index[1::3])
    assert await search(["mod2:0", "mod3:0"], match_all=True) == sorted(index[::6])
    assert await search(["mod2:0", "mod3:0"], match_all=False) == sorted(
        index[i] for i in range(320) if i % 2 == 0 or i % 3 == 0
    )
    # A key asked twice counts once; an unknown key empties an all-of search only.
    assert await search(["late", "late", "mod2:1"], match_all=True) == sorted(index[301::2])
    assert await search(["late", "nowhere"], match_all=True) == []
    assert await search(["late", "nowhere"], match_all=False) == sorted(index[300:])
    assert await search([], match_all=False) == []
    assert await store.search(TREE + 1, ["late"], match_all=False) == []
