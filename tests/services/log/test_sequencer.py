"""The sequencer on the real databases: batching, dedup, proofs, restart, faults, scale-out."""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, update

from clients.merkle import verify_consistency, verify_inclusion
from services.db import Database
from services.log import merkle
from services.log.checkpoint import Checkpoint, CheckpointSigner
from services.log.errors import (
    CorruptLog,
    DuplicateEntry,
    EntryRefused,
    LogFrozen,
    Pushback,
    SequencingFailed,
)
from services.log.schema import entries, search_keys, tiles
from services.log.sequencer import Genesis, GenesisFactory, Receipt, Sequencer
from services.log.sqlstore import FaultHook, SQLLogStore

TREE = 1234567890123
GENESIS = b"the test tree's genesis leaf"

_KEY = ec.generate_private_key(ec.SECP256R1())


class FakeClock:
    """A clock tests move by hand (time is an argument)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_sequencer(store: SQLLogStore, **kwargs: object) -> Sequencer:
    opts: dict[str, object] = {"batch_max_size": 64, "batch_max_age": 0.01}
    opts.update(kwargs)
    return Sequencer(
        store,
        tree_id=TREE,
        origin=f"log.example - {TREE}",
        signer=CheckpointSigner("log.example", _KEY),
        genesis=lambda _now: Genesis(GENESIS, frozenset({"genesis"})),
        **opts,  # type: ignore[arg-type]
    )


@pytest.fixture
async def seq(db: Database) -> AsyncIterator[Sequencer]:
    s = make_sequencer(SQLLogStore(db))
    await s.start()
    yield s
    await s.stop()


def verify_note(note: str) -> Checkpoint:
    """Check a signed checkpoint independently of the server's signer code."""
    text, _, sigline = note.rpartition("\n\n")
    assert sigline.endswith("\n")
    dash, name, sig_b64 = sigline[:-1].split(" ")
    assert dash == "\u2014"
    assert name == "log.example"
    raw = base64.b64decode(sig_b64)
    signer = CheckpointSigner("log.example", _KEY)
    assert raw[:4] == signer.key_hint
    _KEY.public_key().verify(raw[4:], (text + "\n").encode(), ec.ECDSA(hashes.SHA256()))
    return Checkpoint.from_text(text + "\n")


def check_receipt(r: Receipt, leaf: bytes) -> None:
    cp = verify_note(r.head.checkpoint)
    assert (cp.size, cp.root) == (r.head.size, r.head.root)
    verify_inclusion(merkle.hash_leaf(leaf), r.index, r.head.size, r.proof, r.head.root)


async def fsck(db: Database, seq: Sequencer) -> None:
    """Recompute everything from the stored leaves and compare with every signed head."""
    rows = await db.read(
        lambda conn: conn.execute(
            select(entries.c.idx, entries.c.leaf)
            .where(entries.c.tree_id == TREE)
            .order_by(entries.c.idx)
        ).all()
    )
    assert [r.idx for r in rows] == list(range(len(rows))), "index gap"
    hashes_ = [merkle.hash_leaf(r.leaf) for r in rows]
    head = seq.head
    assert head.size == len(rows)
    assert merkle.root(hashes_) == head.root
    store = SQLLogStore(db)
    history = await store.read_checkpoints(TREE, limit=100_000)
    assert history[-1] == head
    for older, newer in itertools.pairwise(history):
        assert older.size < newer.size, "tree shrank or repeated a size"
        assert merkle.root(hashes_[: newer.size]) == newer.root
        proof = await seq.proofs.consistency(older.size, newer.size)
        if older.size:
            verify_consistency(older.size, newer.size, proof, older.root, newer.root)


async def test_a_new_log_starts_with_its_genesis_leaf(db: Database, seq: Sequencer) -> None:
    """Index 0 is the log's own leaf: no client is ever handed index 0 or a tree of size 1."""
    cp = verify_note(seq.head.checkpoint)
    assert cp == Checkpoint(f"log.example - {TREE}", 1, merkle.hash_leaf(GENESIS))
    history = await SQLLogStore(db).read_checkpoints(TREE)
    assert [h.size for h in history] == [0, 1]
    assert verify_note(history[0].checkpoint).root == merkle.EMPTY_ROOT
    stored = await SQLLogStore(db).read_entries(TREE, [0])
    assert stored[0].leaf == GENESIS
    assert await SQLLogStore(db).search(TREE, ["genesis"], match_all=False) == [0]
    first = await seq.submit(b"the first client entry")
    assert (first.index, first.head.size, len(first.proof)) == (1, 2, 1)
    check_receipt(first, b"the first client entry")


async def test_an_existing_empty_log_gets_its_genesis_on_start(db: Database) -> None:
    """A tree created empty (before genesis leaves existed) is given one at the next start."""
    store = SQLLogStore(db)
    empty = make_sequencer(store)._sign_head(0, merkle.EMPTY_ROOT, 0)
    await store.create_tree(TREE, f"log.example - {TREE}", empty)
    s = make_sequencer(store)
    await s.start()
    try:
        assert s.head.size == 1
        assert (await store.read_entries(TREE, [0]))[0].leaf == GENESIS
        assert (await s.submit(b"next")).index == 1
    finally:
        await s.stop()


def _replica_genesis(n: int) -> GenesisFactory:
    return lambda _now: Genesis(b"genesis from replica %d" % n)


async def test_concurrent_starts_commit_exactly_one_genesis(db: Database) -> None:
    """Replicas starting together on an empty database: one genesis, whichever wins."""
    starters = [
        Sequencer(
            SQLLogStore(db),
            tree_id=TREE,
            origin=f"log.example - {TREE}",
            signer=CheckpointSigner("log.example", _KEY),
            genesis=_replica_genesis(n),
        )
        for n in range(4)
    ]
    await asyncio.gather(*(s.start() for s in starters))
    try:
        heads = {(await s.latest_head()).size for s in starters}
        assert heads == {1}
        (leaf,) = [e.leaf for e in (await SQLLogStore(db).read_entries(TREE, [0, 1])).values()]
        assert leaf.startswith(b"genesis from replica ")
    finally:
        for s in starters:
            await s.stop()


async def test_concurrent_submissions_get_contiguous_indices_and_valid_proofs(
    db: Database, seq: Sequencer
) -> None:
    leaves = [f"entry-{i}".encode() for i in range(300)]
    receipts = await asyncio.gather(
        *(seq.submit(leaf, {f"k:{i % 7}"}) for i, leaf in enumerate(leaves))
    )
    assert sorted(r.index for r in receipts) == list(range(1, 301))
    for leaf, r in zip(leaves, receipts, strict=True):
        check_receipt(r, leaf)
    await fsck(db, seq)
    store = SQLLogStore(db)
    # Exact search from SQL: every 7th entry carries k:3.
    by_index = {r.index: i for i, r in enumerate(receipts)}
    want = sorted(r.index for i, r in enumerate(receipts) if i % 7 == 3)
    assert await store.search(TREE, ["k:3"], match_all=False) == want
    assert await store.search(TREE, ["k:3", "k:4"], match_all=True) == []
    got = await store.read_entries(TREE, [0, 1, 300, 301])
    assert set(got) == {0, 1, 300}
    assert got[0].leaf == GENESIS
    assert got[1].leaf == leaves[by_index[1]]


async def test_batches_by_count(db: Database) -> None:
    s = make_sequencer(SQLLogStore(db), batch_max_size=5, batch_max_age=1.0)
    await s.start()
    try:
        await asyncio.gather(*(s.submit(b"x%d" % i) for i in range(12)))
    finally:
        await s.stop()
    sizes = [h.size for h in await SQLLogStore(db).read_checkpoints(TREE)]
    assert sizes == [0, 1, 6, 11, 13]


async def test_batches_by_age(db: Database) -> None:
    s = make_sequencer(SQLLogStore(db), batch_max_size=1000, batch_max_age=0.05)
    await s.start()
    try:
        first = asyncio.create_task(s.submit(b"a"))
        await asyncio.sleep(0.2)
        await s.submit(b"b")
        await first
    finally:
        await s.stop()
    sizes = [h.size for h in await SQLLogStore(db).read_checkpoints(TREE)]
    assert sizes == [0, 1, 2, 3]


async def test_group_commit_batches_what_waits_and_never_lingers(db: Database) -> None:
    """``batch_max_age`` 0: a lone entry commits at once, and entries that arrive while a
    commit runs form the next batch together (batches grow with load, not with a timer)."""
    store = SQLLogStore(db)
    s = make_sequencer(store, batch_max_size=1000, batch_max_age=0.0)
    await s.start()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await s.submit(b"alone")
        assert loop.time() - started < 0.5  # no batch window to wait out
        await asyncio.gather(*(s.submit(b"burst%d" % i) for i in range(50)))
    finally:
        await s.stop()
    sizes = [h.size for h in await store.read_checkpoints(TREE)]
    assert sizes[:3] == [0, 1, 2]
    # 50 submissions queued at once: far fewer commits than entries.
    assert sizes[-1] == 52
    assert len(sizes) - 3 < 10, sizes


async def test_duplicates_are_reported_not_appended(db: Database, seq: Sequencer) -> None:
    first = await seq.submit(b"same")
    with pytest.raises(DuplicateEntry) as info:
        await seq.submit(b"same")
    assert info.value.index == first.index
    # Twice in one batch: one is appended, the other is told where.
    results = await asyncio.gather(seq.submit(b"twin"), seq.submit(b"twin"), return_exceptions=True)
    receipts = [r for r in results if isinstance(r, Receipt)]
    dups = [r for r in results if isinstance(r, DuplicateEntry)]
    assert len(receipts) == 1
    assert len(dups) == 1
    assert dups[0].index == receipts[0].index
    assert seq.head.size == 3
    await fsck(db, seq)


async def test_restart_continues_the_same_tree(db: Database) -> None:
    s1 = make_sequencer(SQLLogStore(db))
    await s1.start()
    await asyncio.gather(*(s1.submit(b"r%d" % i) for i in range(700)))
    head1 = s1.head
    await s1.stop()
    s2 = make_sequencer(SQLLogStore(db))
    await s2.start()
    assert s2.head == head1
    r = await s2.submit(b"after restart")
    assert r.index == 701
    check_receipt(r, b"after restart")
    proof = await s2.proofs.consistency(head1.size, r.head.size)
    verify_consistency(head1.size, r.head.size, proof, head1.root, r.head.root)
    await fsck(db, s2)
    await s2.stop()


async def test_historical_proofs_for_every_size(db: Database, seq: Sequencer) -> None:
    leaves = [b"h%d" % i for i in range(70)]
    for leaf in leaves:  # one batch each: exercises every partial-tile shape
        await seq.submit(leaf)
    hashes_ = [merkle.hash_leaf(leaf) for leaf in [GENESIS, *leaves]]
    for size in range(1, 72):
        root = merkle.root(hashes_[:size])
        assert await seq.proofs.root(size) == root
        for index in (0, size // 2, size - 1):
            proof = await seq.proofs.inclusion(index, size)
            verify_inclusion(hashes_[index], index, size, proof, root)
        for size1 in (1, size // 3 + 1, size):
            proof = await seq.proofs.consistency(size1, size)
            verify_consistency(size1, size, proof, merkle.root(hashes_[:size1]), root)


class Boom(Exception):
    """The injected storage failure."""


def once(step: str, after: bool) -> FaultHook:
    fired = False

    def hook(name: str, is_after: bool) -> None:
        nonlocal fired
        if not fired and name == step and is_after == after:
            fired = True
            raise Boom(f"{step} {'after' if after else 'before'}")

    return hook


STEPS = ["head", "entries", "tiles", "search_keys", "checkpoint", "commit"]


@pytest.mark.parametrize("after", [False, True], ids=["fail-not-persist", "fail-but-persist"])
@pytest.mark.parametrize("step", STEPS)
async def test_fault_at_each_write_step(db: Database, step: str, after: bool) -> None:
    """A failure at any write step leaves an unforked log; committed entries are never lost.

    Inside the transaction, "after" means the step's statements ran before the failure; only
    ("commit", after) is a failure once the batch is durable, and there the waiters must still
    get their receipts, because the entries *are* in the log.
    """
    store = SQLLogStore(db)
    s = make_sequencer(store, batch_max_age=0.05)
    await s.start()
    try:
        await s.submit(b"before the fault")
        store.fault = once(step, after)
        batch = [b"f%d" % i for i in range(10)]
        results = await asyncio.gather(*(s.submit(x) for x in batch), return_exceptions=True)
        persisted = step == "commit" and after
        if persisted:
            assert all(isinstance(r, Receipt) for r in results), results
            for leaf, r in zip(batch, results, strict=True):
                assert isinstance(r, Receipt)
                check_receipt(r, leaf)
        else:
            assert all(isinstance(r, SequencingFailed) for r in results), results
        assert s.head.size == (12 if persisted else 2)
        # The log keeps working, and a retried submission lands exactly once.
        again = await asyncio.gather(*(s.submit(x) for x in batch), return_exceptions=True)
        if persisted:
            assert all(isinstance(r, DuplicateEntry) for r in again)
        else:
            assert all(isinstance(r, Receipt) for r in again)
        assert s.head.size == 12
        await fsck(db, s)
    finally:
        await s.stop()
    # A fresh start (the crash-recovery path) accepts the stored state.
    s2 = make_sequencer(SQLLogStore(db))
    await s2.start()
    assert s2.head.size == 12
    await s2.stop()


async def test_recovery_failure_does_not_hang_waiters(db: Database) -> None:
    """If even reloading fails, the waiters get an error and the next batch recovers."""
    store = SQLLogStore(db)
    s = make_sequencer(store)
    await s.start()
    try:
        real_read_head = store.read_head
        calls = 0

        async def flaky_read_head(tree_id: int) -> object:
            nonlocal calls
            calls += 1
            raise Boom("database unreachable")

        store.fault = once("entries", False)
        store.read_head = flaky_read_head  # type: ignore[method-assign,assignment]
        with pytest.raises(SequencingFailed):
            await s.submit(b"lost")
        assert calls == 1
        store.read_head = real_read_head  # type: ignore[method-assign]
        r = await s.submit(b"kept")
        assert r.index == 1
        check_receipt(r, b"kept")
    finally:
        await s.stop()


async def test_corrupt_tiles_refuse_to_start(db: Database) -> None:
    s = make_sequencer(SQLLogStore(db))
    await s.start()
    await asyncio.gather(*(s.submit(b"c%d" % i) for i in range(20)))
    await s.stop()
    await db.write(
        lambda conn: conn.execute(
            update(tiles)
            .where(tiles.c.tree_id == TREE, tiles.c.level == 0, tiles.c.idx == 0)
            .values(data=b"\x00" * 32 * 21)
        )
    )
    with pytest.raises(CorruptLog, match="tiles give root"):
        await make_sequencer(SQLLogStore(db)).start()


async def test_missing_tile_refuses_to_start(db: Database) -> None:
    s = make_sequencer(SQLLogStore(db))
    await s.start()
    await s.submit(b"only")
    await s.stop()
    await db.write(lambda conn: conn.execute(tiles.delete().where(tiles.c.tree_id == TREE)))
    with pytest.raises(CorruptLog, match="has None hashes, want 2"):
        await make_sequencer(SQLLogStore(db)).start()


async def test_two_writers_never_fork(db: Database) -> None:
    """Scale-out: two sequencers on one tree serialise on the head CAS and both make progress."""
    a = make_sequencer(SQLLogStore(db), batch_max_size=8)
    b = make_sequencer(SQLLogStore(db), batch_max_size=8)
    await a.start()
    await b.start()
    try:
        leaves = [b"w%d" % i for i in range(80)]
        results = await asyncio.gather(
            *((a if i % 2 else b).submit(leaf) for i, leaf in enumerate(leaves))
        )
        assert sorted(r.index for r in results) == list(range(1, 81))
        for leaf, r in zip(leaves, results, strict=True):
            check_receipt(r, leaf)
        final = max((a.head, b.head), key=lambda h: h.size)
        assert final.size == 81
        await fsck(db, a if a.head.size == 81 else b)
    finally:
        await a.stop()
        await b.stop()


async def test_a_replica_reads_what_another_committed(db: Database) -> None:
    """Replica B has not written since A did: its readers still get A's head and can prove
    A's entries there, while B's own sequencing state waits for its next compare-and-swap."""
    a = make_sequencer(SQLLogStore(db))
    b = make_sequencer(SQLLogStore(db))
    await a.start()
    await b.start()
    try:
        receipts = [await a.submit(b"from a %d" % i) for i in range(5)]
        assert b.head.size == 1
        latest = await b.latest_head()
        assert latest == a.head == receipts[-1].head
        for i, r in enumerate(receipts):
            proof = await b.proofs.inclusion(r.index, latest.size)
            verify_inclusion(
                merkle.hash_leaf(b"from a %d" % i), r.index, latest.size, proof, latest.root
            )
        assert verify_note(latest.checkpoint).size == 6
        # B's next entry lands after A's.
        mine = await b.submit(b"from b")
        check_receipt(mine, b"from b")
        assert mine.index == 6
        assert await a.latest_head() == b.head
        assert a.head.size == 6  # A's own state moves only when A writes again
    finally:
        await a.stop()
        await b.stop()


async def test_pushback_when_queue_is_full(db: Database) -> None:
    s = make_sequencer(SQLLogStore(db), max_pending=2, batch_max_age=0.05, batch_max_size=1000)
    await s.start()
    try:
        # All three enqueue in one turn of the loop, before the sequencer takes anything.
        results = await asyncio.gather(
            *(s.submit(b"p%d" % i) for i in range(3)), return_exceptions=True
        )
        assert [type(r) for r in results] == [Receipt, Receipt, Pushback]
        assert s.head.size == 3
    finally:
        await s.stop()


async def test_stop_finishes_the_batch_in_flight(db: Database) -> None:
    s = make_sequencer(SQLLogStore(db), batch_max_age=0.3, batch_max_size=1000)
    await s.start()
    pending = [asyncio.create_task(s.submit(b"s%d" % i)) for i in range(5)]
    await asyncio.sleep(0.01)
    await s.stop()
    done = await asyncio.gather(*pending)
    assert sorted(r.index for r in done) == list(range(1, 6))


async def test_search_keys_are_committed_with_the_entry(db: Database, seq: Sequencer) -> None:
    r = await seq.submit(b"indexed", {"sha256:ab", "email:a@example.com"})
    keys = await db.read(
        lambda conn: (
            conn.execute(select(search_keys.c.key).where(search_keys.c.idx == r.index))
            .scalars()
            .all()
        )
    )
    assert sorted(keys) == ["email:a@example.com", "sha256:ab"]


async def test_integrated_time_comes_from_the_injected_clock(db: Database) -> None:
    clock = FakeClock(1_900_000_123.75)
    s = make_sequencer(SQLLogStore(db), clock=clock)
    await s.start()
    try:
        r = await s.submit(b"timed")
        assert r.integrated_time == 1_900_000_123
        assert r.head.timestamp_ms == 1_900_000_123_750
        clock.now -= 3600  # the clock jumps back: the log's time does not
        r2 = await s.submit(b"timed again")
        assert r2.head.timestamp_ms == 1_900_000_123_750
    finally:
        await s.stop()


async def test_receipt_without_proof_is_still_committed(db: Database, seq: Sequencer) -> None:
    r = await seq.submit(b"no proof wanted", want_proof=False)
    assert r.proof == []
    assert r.head.size == 2
    stored = await SQLLogStore(db).read_entries(TREE, [r.index])
    assert stored[r.index].leaf == b"no proof wanted"


async def test_one_unstorable_entry_is_refused_and_its_batch_commits(db: Database) -> None:
    """A search key no database can store (a lone surrogate; on PostgreSQL also U+0000) fails
    its whole batch's commit; the sequencer bisects, refuses that entry alone with
    ``EntryRefused`` and commits every other one (issue 10: one attacker's entry failed 1,616
    of 1,616 honest writes on PostgreSQL)."""
    poisons = ["bad:\ud800"] + (["bad:\x00"] if db.dialect == "postgresql" else [])
    s = make_sequencer(SQLLogStore(db), batch_max_size=64, batch_max_age=0.2)
    await s.start()
    try:
        honest = [s.submit(b"honest %d" % i, {f"sha256:{i:064x}"}) for i in range(21)]
        bad = [s.submit(b"poison %d" % i, {key}) for i, key in enumerate(poisons)]
        results = await asyncio.gather(*honest, *bad, return_exceptions=True)
    finally:
        await s.stop()
    receipts = results[: len(honest)]
    assert all(isinstance(r, Receipt) for r in receipts), receipts
    for r in results[len(honest) :]:
        assert isinstance(r, EntryRefused), r
    assert sorted(r.index for r in receipts if isinstance(r, Receipt)) == list(range(1, 22))
    await fsck(db, s)


async def test_freezing_signs_a_final_checkpoint_and_stops_every_writer(db: Database) -> None:
    """rekor-tiles' freeze: the same tree re-signed with a ``Log frozen — <time>`` line. The
    other replica, still running on the old head, fails its next compare-and-swap on the
    changed checkpoint, reloads, and refuses from then on; so does any later start."""
    clock = FakeClock()
    a = make_sequencer(SQLLogStore(db), clock=clock)
    b = make_sequencer(SQLLogStore(db), clock=clock)
    await a.start()
    await b.start()
    await a.submit(b"before")
    await b.submit(b"before, from b")
    await a.latest_head()
    final = await a.freeze()
    assert a.frozen
    checkpoint = verify_note(final.checkpoint)
    assert checkpoint.extensions == ("Log frozen \u2014 Fri Jan 15 08:00:00 UTC 2027",)
    assert (checkpoint.size, checkpoint.root) == (3, (await b.latest_head()).root)
    assert (await SQLLogStore(db).read_head(TREE)) == final
    # The stored history ends in the final checkpoint (fsck compares the head with it).
    stored = await SQLLogStore(db).read_checkpoints(TREE, min_size=3)
    assert [c.checkpoint for c in stored] == [final.checkpoint]

    with pytest.raises(LogFrozen):
        await a.submit(b"after, to the frozen one")
    with pytest.raises(LogFrozen):
        await b.submit(b"after, to the replica")
    with pytest.raises(LogFrozen):
        await b.submit(b"and again")
    assert (await SQLLogStore(db).read_head(TREE)) == final
    await b.stop()

    again = make_sequencer(SQLLogStore(db), clock=clock)
    await again.start()  # loads and checks the tree; no genesis, nothing appended
    assert again.frozen
    assert again.head == final
    with pytest.raises(LogFrozen):
        await again.submit(b"after a restart")
    assert await again.freeze() == final  # idempotent: the same final checkpoint
    await again.stop()
