"""The sequencer: batches submissions, commits each batch atomically, then wakes the waiters.

One batch is one transaction: the entries, the tiles they complete or extend, their search keys,
the new tree head (compare-and-swap on the old size and root) and the signed checkpoint, recorded
in the history table. Only after that transaction commits is any waiter resolved, with its index,
an inclusion proof and the checkpoint that proves it: a resolved waiter means committed.

Recovery and normal operation share one path. ``_load`` rebuilds the in-memory state (the compact
range and the right-edge tiles) from the store and checks it against the stored head; it runs at
start-up and again after *any* failed commit, because after a failure we cannot know whether the
commit reached the disk (see ``_commit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.log import merkle
from services.log.checkpoint import Checkpoint, CheckpointSigner, frozen_line, is_frozen
from services.log.errors import (
    CorruptLog,
    DuplicateEntry,
    EntryRefused,
    HeadMoved,
    LogFrozen,
    Pushback,
    SequencerStopped,
    SequencingFailed,
)
from services.log.headguard import HeadGuard
from services.log.proofs import ProofBuilder
from services.log.tiles import (
    HASH_SIZE,
    TILE_HASHES,
    TILE_HEIGHT,
    ExpandedTile,
    TileCache,
    TileKey,
    tile_for_node,
    tile_slot,
)

_MAX_HEAD_RETRIES = 50

__all__ = [
    "Batch",
    "Forward",
    "Genesis",
    "GenesisFactory",
    "LogStore",
    "NewEntry",
    "Receipt",
    "Sequencer",
    "StoredLeaf",
    "TreeHead",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A signed tree head: what the ``tree_heads`` row and each ``checkpoints`` row hold."""

    size: int
    root: bytes
    timestamp_ms: int
    checkpoint: str


@dataclass(frozen=True, slots=True)
class NewEntry:
    """One leaf being appended."""

    index: int
    leaf_hash: bytes
    leaf: bytes
    integrated_time: int
    search_keys: frozenset[str]
    extra: bytes | None = None
    seal: bytes | None = None


Sealer = Callable[[NewEntry], bytes]
"""Signs an entry as integrated (its index and time assigned), once, before its commit."""


@dataclass(frozen=True, slots=True)
class Genesis:
    """The log's own first leaf, which occupies index 0 of every tree the engine creates.

    Why every log starts with one: a client must never be handed index 0 or a tree of size 1.
    proto3 JSON omits default values, so sigstore-js writes the bundle of entry 0 of a size-1
    tree without ``logIndex`` and without ``inclusionProof.hashes``, and sigstore-python then
    refuses that bundle for ever. With the log's own entry at index 0, every client entry has
    ``logIndex >= 1`` in a tree of size >= 2, whose inclusion proof has at least one hash.
    Each personality builds a leaf an auditor can check from public data (docs/genesis.md).
    """

    leaf: bytes
    search_keys: frozenset[str] = frozenset()
    extra: bytes | None = None


GenesisFactory = Callable[[float], Genesis]
"""Builds the genesis leaf; called with the clock's time (seconds) when the tree is empty."""


@dataclass(frozen=True, slots=True)
class StoredLeaf:
    """Where a committed leaf is."""

    index: int
    integrated_time: int


@dataclass(frozen=True, slots=True)
class Batch:
    """Everything one sequencing step writes, committed all-or-nothing by ``LogStore``."""

    prev_size: int
    prev_root: bytes
    head: TreeHead
    entries: Sequence[NewEntry]
    tiles: Mapping[TileKey, bytes]
    # The previous head's signed checkpoint, part of the compare-and-swap when set: a head
    # re-signed at the same size (a frozen log's final checkpoint) must stop every writer.
    prev_checkpoint: str | None = None


class LogStore(Protocol):
    """The storage contract of the sequencer.

    Implementations must be safe for concurrent use by readers while one writer commits, and
    ``commit_batch`` must be atomic and durable when it returns: either every row of the batch is
    stored or none is.
    """

    async def read_head(self, tree_id: int) -> TreeHead | None:
        """Return the current tree head, or None if the tree was never created."""
        ...

    async def create_tree(self, tree_id: int, origin: str, head: TreeHead) -> None:
        """Create the empty tree with its first signed head; raise ``HeadMoved`` if it exists."""
        ...

    async def read_tiles(self, tree_id: int, keys: Collection[TileKey]) -> dict[TileKey, bytes]:
        """Return the stored data of each requested tile that exists."""
        ...

    async def find_leaves(
        self, tree_id: int, leaf_hashes: Collection[bytes]
    ) -> dict[bytes, StoredLeaf]:
        """Return where each given leaf hash that is already in the tree is stored."""
        ...

    async def commit_batch(self, tree_id: int, batch: Batch) -> None:
        """Atomically append ``batch`` if the stored head is still ``(prev_size, prev_root)``.

        Raises ``HeadMoved`` (and stores nothing) if the head has changed.
        """
        ...

    async def replace_head(self, tree_id: int, old: TreeHead, new: TreeHead) -> None:
        """Replace head ``old`` by ``new``, a re-signed checkpoint of the same tree (size and
        root), in the head and in the stored checkpoint of that size; raise ``HeadMoved`` if
        the stored head is no longer exactly ``old``."""
        ...


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a committed submission gets back: its place in the log and the proof of it."""

    index: int
    leaf_hash: bytes
    integrated_time: int
    head: TreeHead
    proof: list[bytes]
    seal: bytes | None = None


Forward = Callable[[bytes, frozenset[str], bytes | None, bool], Awaitable[Receipt]]
"""Hands a leaf (with its search keys, extra data, whether a proof is wanted) to the process
that sequences the tree, and returns its receipt (services/log/cluster.py)."""


@dataclass(slots=True)
class _Pending:
    leaf: bytes
    leaf_hash: bytes
    search_keys: frozenset[str]
    future: asyncio.Future[Receipt] = field(repr=False)
    extra: bytes | None = None
    want_proof: bool = True


class Sequencer:
    """Owns the write path of one tree.

    ``submit`` enqueues and awaits; a background task drains the queue in batches of at most
    ``batch_max_size`` entries. With ``batch_max_age`` 0 (the default) it is group commit: a
    batch is whatever waits when the previous commit finishes; a positive ``batch_max_age``
    instead lingers that long after a batch's first entry for more. More than ``max_pending``
    waiting entries is answered with ``Pushback``.
    """

    def __init__(
        self,
        store: LogStore,
        *,
        tree_id: int,
        origin: str,
        signer: CheckpointSigner,
        genesis: GenesisFactory,
        clock: Callable[[], float] = time.time,
        batch_max_size: int = 256,
        batch_max_age: float = 0.0,
        max_pending: int = 10_000,
        cache: TileCache | None = None,
        sealer: Sealer | None = None,
        guard: HeadGuard | None = None,
        observer: Callable[[int, float], None] | None = None,
    ) -> None:
        if batch_max_size < 1:
            raise ValueError(f"batch_max_size must be at least 1, not {batch_max_size}")
        self._store = store
        self.tree_id = tree_id
        self.origin = origin
        self._signer = signer
        self._genesis = genesis
        self._clock = clock
        self._batch_max_size = batch_max_size
        self._batch_max_age = batch_max_age
        self._max_pending = max_pending
        self._sealer = sealer
        self._guard = guard
        self._observer = observer
        self.proofs = ProofBuilder(store, tree_id, cache)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self._fatal: BaseException | None = None
        # Owned by the sequencing task once started; rebuilt only by _load.
        self._range = merkle.CompactRange()
        self._edge: dict[TileKey, bytes] = {}
        self._head: TreeHead | None = None
        # The newest head read from storage (another replica's commit), for head_covering.
        self._newest: TreeHead | None = None
        self._stale = False
        # Set while another process sequences this tree: submissions are handed to it.
        self._forward: Forward | None = None

    @property
    def started(self) -> bool:
        """Whether the tree is loaded (``head`` answers)."""
        return self._head is not None

    @property
    def saturated(self) -> bool:
        """Whether the queue is nine tenths full: new submissions are about to be pushed back,
        so a load balancer should send them elsewhere (``/readyz``)."""
        return self._queue.qsize() >= 0.9 * self._max_pending

    @property
    def pending(self) -> int:
        """Submissions waiting to be sequenced."""
        return self._queue.qsize()

    @property
    def head(self) -> TreeHead:
        """The latest committed tree head this sequencer knows."""
        if self._head is None:
            raise SequencerStopped("sequencer not started")
        if self._forward is not None:
            # A follower's own head is only what it loaded; its receipts carry newer ones.
            return self._newest_known()
        return self._head

    @property
    def leading(self) -> bool:
        """Whether this process sequences the tree (rather than forwarding to the one that does)."""
        return self._task is not None

    async def latest_head(self) -> TreeHead:
        """The newest committed head: storage's if another writer has gone past this one.

        With several writers on one tree (log replicas on one PostgreSQL) another process may
        have committed since this one last did. Readers must see those entries, or an entry one
        replica has answered 201 for is a 404 on the next; every proof up to the stored head is
        buildable from the stored tiles. The sequencing state is left alone: the next batch meets
        the new head in its compare-and-swap and reloads.
        """
        known = self._newest_known()
        stored = await self._store.read_head(self.tree_id)
        # Equal sizes too when the stored head is final: another replica froze the log, and
        # readers must see its final checkpoint, not this process's last one.
        if stored is not None and (
            stored.size > known.size
            # A string compare first: most requests find the head they already know.
            or (
                stored.size == known.size
                and stored.checkpoint != known.checkpoint
                and is_frozen(stored.checkpoint)
            )
        ):
            self._newest = stored
            return stored
        return known

    async def head_covering(self, size: int) -> TreeHead:
        """A committed head of at least ``size`` entries, from memory when this process knows
        one (no database read: the hot path of reads by index or UUID), else ``latest_head``,
        which may still be smaller: then nothing has committed that many entries yet.

        A head older than the newest is still a signed, committed head; a read proves its entry
        against it, and asks storage only for what no head it knows covers, so an entry another
        replica has just answered 201 for is found as soon as it is committed."""
        known = self._newest_known()
        if known.size >= size:
            return known
        return await self.latest_head()

    def _newest_known(self) -> TreeHead:
        head = self._head
        if head is None:
            raise SequencerStopped("sequencer not started")
        newest = self._newest
        return newest if newest is not None and newest.size > head.size else head

    def saw(self, head: TreeHead) -> None:
        """Learn of a head another process committed (a forwarded receipt's, a notification)."""
        newest = self._newest
        if newest is None or head.size > newest.size:
            self._newest = head

    @property
    def frozen(self) -> bool:
        """Whether the tree's head is a frozen log's final checkpoint: no entry is ever added."""
        return self._head is not None and is_frozen(self._head.checkpoint)

    async def start(self, forward: Forward | None = None) -> None:
        """Create or load the tree, check it, give it its genesis leaf, start sequencing; a
        frozen tree is loaded and checked, and takes nothing.

        With ``forward`` another process sequences the tree (it was elected: one sequencer per
        tree, services/log/cluster.py): this one loads the tree for its reads and hands every
        submission to ``forward``. ``lead`` later makes it the sequencer.
        """
        await self._load()
        if forward is not None:
            self._forward = forward
            self._accepting = True
            return
        if self._guard is not None:
            # Before anything is appended: a rolled-back database must not grow a fork.
            await self._guard.check(self)
        if self.frozen:
            return
        await self._ensure_genesis()
        self._accepting = True
        self._task = asyncio.create_task(self._run(), name=f"sequencer-{self.tree_id}")

    async def lead(self) -> None:
        """Start sequencing in this process (it was elected) instead of forwarding.

        Everything is loaded afresh: the previous sequencer may have committed up to its death.
        """
        self._forward = None
        self._accepting = False
        await self.start()

    async def follow(self, forward: Forward) -> None:
        """Stop sequencing here (leadership lost) and forward from now on; what was queued is
        committed first, under the compare-and-swap that keeps two sequencers from forking."""
        await self.stop()
        self._forward = forward
        self._accepting = True

    async def stop(self) -> None:
        """Stop accepting, commit what is already queued, then stop the task."""
        self._accepting = False
        self._forward = None
        if self._task is None:
            return
        # Wake the task if it is idle: an empty entry is skipped, and the loop exits once it is
        # not accepting and the queue is empty, so everything queued before this is committed.
        self._queue.put_nowait(
            _Pending(b"", b"", frozenset(), asyncio.get_running_loop().create_future())
        )
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def freeze(self) -> TreeHead:
        """Stop taking entries for good: commit what is queued, then replace the head by a final
        checkpoint (same tree, an extension line saying it is frozen, rekor-tiles' form).

        Every writer's next compare-and-swap then fails on the changed checkpoint and, reloading,
        finds the log frozen. Idempotent: a frozen log's head is returned as it is.
        """
        await self.stop()
        for _ in range(_MAX_HEAD_RETRIES):
            await self._load()
            head = self.head
            if self.frozen:
                return head
            final = TreeHead(
                head.size,
                head.root,
                head.timestamp_ms,
                self._signer.sign_checkpoint(
                    Checkpoint(self.origin, head.size, head.root, (frozen_line(self._clock()),))
                ),
            )
            try:
                await self._store.replace_head(self.tree_id, head, final)
            except HeadMoved:
                continue  # another replica committed (or froze) meanwhile: freeze what is there
            self._head = final
            _logger.warning("tree %d frozen at size %d", self.tree_id, head.size)
            return final
        raise SequencingFailed(f"tree {self.tree_id}: the head kept moving; not frozen")

    async def submit(
        self,
        leaf: bytes,
        search_keys: Collection[str] = (),
        *,
        extra: bytes | None = None,
        want_proof: bool = True,
    ) -> Receipt:
        """Append ``leaf`` and return once it is committed and covered by a signed checkpoint.

        Raises ``DuplicateEntry`` if the leaf is already logged, ``Pushback`` when overloaded,
        ``SequencingFailed`` if its batch could not be committed (it was not appended).
        """
        self._check_open()
        forward = self._forward
        if forward is not None:
            receipt = await forward(leaf, frozenset(search_keys), extra, want_proof)
            self.saw(receipt.head)
            return receipt
        return await self._enqueue(leaf, search_keys, extra, want_proof)

    def enqueue(
        self,
        leaf: bytes,
        search_keys: Collection[str] = (),
        *,
        extra: bytes | None = None,
        want_proof: bool = True,
    ) -> asyncio.Future[Receipt]:
        """``submit`` on the sequencer itself, for a caller with many entries at once (the
        forwarding endpoint): the future of the receipt, with no task per entry.

        Raises at once what ``submit`` raises before queueing, and ``SequencerStopped`` if this
        sequencer forwards (it is not the one sequencing the tree).
        """
        self._check_open()
        if self._forward is not None:
            raise SequencerStopped(f"tree {self.tree_id} is sequenced elsewhere")
        return self._enqueue(leaf, search_keys, extra, want_proof)

    def _check_open(self) -> None:
        if self._fatal is not None:
            raise SequencerStopped("sequencer stopped after a fatal error") from self._fatal
        if self.frozen:
            raise LogFrozen(f"tree {self.tree_id} is frozen")
        if not self._accepting:
            raise SequencerStopped("sequencer is not accepting entries")

    def _enqueue(
        self, leaf: bytes, search_keys: Collection[str], extra: bytes | None, want_proof: bool
    ) -> asyncio.Future[Receipt]:
        if self._queue.qsize() >= self._max_pending:
            raise Pushback(f"{self._queue.qsize()} entries are already waiting")
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(
            _Pending(
                leaf, merkle.hash_leaf(leaf), frozenset(search_keys), future, extra, want_proof
            )
        )
        return future

    # -- state -----------------------------------------------------------------------------

    async def _load(self) -> None:
        """Rebuild the compact range and edge tiles from the store and check them.

        This is the recovery path *and* the start-up path. It trusts only what is committed.
        """
        head = await self._store.read_head(self.tree_id)
        if head is None:
            head = self._sign_head(0, merkle.EMPTY_ROOT, 0)
            try:
                await self._store.create_tree(self.tree_id, self.origin, head)
            except HeadMoved:
                # Another process created it first; use theirs.
                head = await self._store.read_head(self.tree_id)
                if head is None:
                    raise CorruptLog(f"tree {self.tree_id} vanished while being created") from None
        size = head.size
        ids = merkle.CompactRange.node_ids(size)
        edge_keys = _edge_tile_keys(size)
        wanted = {tile_for_node(node)[0] for node in ids} | set(edge_keys)
        stored = await self._store.read_tiles(self.tree_id, wanted)
        for key, width in edge_keys.items():
            data = stored.get(key)
            # A tile may be *wider* than this head says: another writer can commit between our
            # reads of the head and of the tiles (read committed). Perfect nodes never change,
            # so the prefix is still exactly the tree at our head; only a narrower tile is wrong.
            if data is None or len(data) < width * HASH_SIZE:
                have = None if data is None else len(data) // HASH_SIZE
                raise CorruptLog(
                    f"tree {self.tree_id} at size {size}: "
                    f"tile {key} has {have} hashes, want {width}"
                )
            stored[key] = data[: width * HASH_SIZE]
        try:
            hashes = [ExpandedTile(stored[key]).node(a, b) for key, a, b in map(tile_for_node, ids)]
        except (KeyError, LookupError) as exc:
            raise CorruptLog(f"tree {self.tree_id} at size {size}: missing tile data") from exc
        compact = merkle.CompactRange(size, hashes)
        if compact.root() != head.root:
            raise CorruptLog(
                f"tree {self.tree_id} at size {size}: tiles give root {compact.root().hex()}, "
                f"head says {head.root.hex()}"
            )
        self._range = compact
        self._edge = {key: stored[key] for key in edge_keys}
        self._head = head

    async def _ensure_genesis(self) -> None:
        """Commit the genesis leaf at index 0 if the tree is empty (see ``Genesis``).

        One path for a tree created just now and for an empty tree created before genesis
        leaves existed. It runs before ``start`` accepts anything, in every process, so no
        client entry can take index 0: concurrent starts race on the head's compare-and-swap
        and exactly one genesis is committed; the losers reload and find size >= 1.
        """
        for _ in range(_MAX_HEAD_RETRIES):
            if self.head.size > 0:
                return
            genesis = self._genesis(self._clock())
            future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
            pending = _Pending(
                genesis.leaf,
                merkle.hash_leaf(genesis.leaf),
                genesis.search_keys,
                future,
                genesis.extra,
                want_proof=False,
            )
            try:
                await self._commit([pending])
            except HeadMoved:
                await self._load()
            if future.done() and not future.cancelled():
                future.exception()  # a DuplicateEntry means another start's identical genesis
            if self.head.size == 0:
                await self._load()
        if self.head.size == 0:
            raise SequencingFailed(f"tree {self.tree_id}: could not commit its genesis leaf")

    def _sign_head(self, size: int, root: bytes, timestamp_ms: int) -> TreeHead:
        note = self._signer.sign_checkpoint(Checkpoint(self.origin, size, root))
        return TreeHead(size, root, timestamp_ms, note)

    # -- sequencing ------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            if self._batch_max_age <= 0:
                # Group commit: whatever arrived while the previous commit ran goes in this one,
                # with no waiting. Under load batches grow to the commit latency times the arrival
                # rate by themselves; with one client each entry commits at once.
                while len(batch) < self._batch_max_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
            else:
                deadline = loop.time() + self._batch_max_age
                while len(batch) < self._batch_max_size:
                    timeout = deadline - loop.time()
                    if timeout <= 0 and self._queue.empty():
                        break
                    try:
                        batch.append(
                            self._queue.get_nowait()
                            if not self._queue.empty()
                            else await asyncio.wait_for(self._queue.get(), timeout)
                        )
                    except TimeoutError:
                        break
            live = [p for p in batch if p.leaf_hash]
            if live:
                try:
                    await self._sequence(live)
                except CorruptLog as exc:
                    # The log cannot prove what it stores: refuse all further work.
                    self._fatal = exc
                    self._accepting = False
                    _logger.critical("sequencer for tree %d stopped: %s", self.tree_id, exc)
                    self._fail_all(live, SequencerStopped(str(exc)))
                    self._drain(SequencerStopped(str(exc)))
                    return
                except Exception as exc:
                    # Even recovery failed (database unreachable?): nobody may wait forever, and
                    # the next batch must start from whatever the store then says.
                    _logger.exception("tree %d: batch and recovery failed", self.tree_id)
                    self._stale = True
                    self._fail_all(live, SequencingFailed(f"entries not appended: {exc!r}"))
            if not self._accepting and self._queue.empty():
                return

    def _fail_all(self, pending: Sequence[_Pending], exc: BaseException) -> None:
        for p in pending:
            if not p.future.done():
                p.future.set_exception(exc)

    def _drain(self, exc: BaseException) -> None:
        while not self._queue.empty():
            self._fail_all([self._queue.get_nowait()], exc)

    async def _sequence(self, pending: list[_Pending]) -> None:
        """Commit one batch and resolve its waiters; re-sequence if another writer moved on."""
        if self._stale:
            await self._load()
            self._stale = False
        for attempt in range(_MAX_HEAD_RETRIES):
            try:
                await self._commit(pending)
                return
            except HeadMoved:
                # Another replica appended first (scale-out on PostgreSQL): nothing of ours was
                # stored, so reload and sequence the same entries again on top of its head. Each
                # lost race means the other writer progressed, so the log as a whole never
                # livelocks; the jitter keeps two writers from colliding in lockstep.
                _logger.info("tree %d head moved; re-sequencing (try %d)", self.tree_id, attempt)
                await self._load()
                if self.frozen:
                    # Another process froze the log: nothing more is appended, by anyone.
                    self._accepting = False
                    self._fail_all(pending, LogFrozen(f"tree {self.tree_id} is frozen"))
                    self._drain(LogFrozen(f"tree {self.tree_id} is frozen"))
                    return
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311
            except CorruptLog:
                raise
            except Exception as exc:  # any storage failure takes the recovery path
                _logger.warning("tree %d batch failed: %r", self.tree_id, exc)
                unstored = await self._recover(pending)
                if not _is_data_error(exc):
                    self._fail_all(unstored, SequencingFailed(f"entry not appended: {exc!r}"))
                elif len(unstored) == 1:
                    self._fail_all(
                        unstored, EntryRefused(f"the log cannot store this entry: {exc}")
                    )
                elif unstored:
                    # One entry's data was refused (the store names no culprit): halve the
                    # batch until the culprit is alone, so every other entry still commits.
                    # Costs 2·log2(batch) extra commits, only when a batch is poisoned.
                    half = len(unstored) // 2
                    await self._sequence(unstored[:half])
                    await self._sequence(unstored[half:])
                return
        self._fail_all(pending, SequencingFailed("tree head kept moving; entries not appended"))

    async def _commit(self, pending: list[_Pending]) -> None:
        head = self.head
        known = await self._store.find_leaves(self.tree_id, [p.leaf_hash for p in pending])
        now = self._clock()
        integrated_time = int(now)
        # Time never goes backwards in the log even if the clock does.
        timestamp_ms = max(int(now * 1000), head.timestamp_ms)

        staged = self._range.copy()
        edge = dict(self._edge)
        changed: dict[TileKey, bytes] = {}

        def visit(node: merkle.NodeID, node_hash: bytes) -> None:
            slot = tile_slot(node)
            if slot is None:
                return
            key, position = slot
            data = edge.get(key, b"")
            if len(data) != position * HASH_SIZE:  # invariant of append-only tiles
                raise CorruptLog(f"tile {key} has {len(data) // HASH_SIZE} hashes, slot {position}")
            data += node_hash
            changed[key] = data
            if position == TILE_HASHES - 1:
                edge.pop(key, None)
            else:
                edge[key] = data

        accepted: list[tuple[_Pending, NewEntry]] = []
        in_batch: dict[bytes, int] = {}
        repeats: list[_Pending] = []
        for p in pending:
            if p.future.done():
                continue
            stored = known.get(p.leaf_hash)
            if stored is not None:
                p.future.set_exception(DuplicateEntry(p.leaf_hash, stored.index))
                continue
            if p.leaf_hash in in_batch:
                # Its index is only final once this batch commits; answer after the commit.
                repeats.append(p)
                continue
            index = staged.size
            staged.append(p.leaf_hash, visit)
            in_batch[p.leaf_hash] = index
            entry = NewEntry(index, p.leaf_hash, p.leaf, integrated_time, p.search_keys, p.extra)
            if self._sealer is not None:
                entry = dataclasses.replace(entry, seal=self._sealer(entry))
            accepted.append((p, entry))
        if not accepted:
            return

        new_head = self._sign_head(staged.size, staged.root(), timestamp_ms)
        batch = Batch(
            head.size, head.root, new_head, [e for _, e in accepted], changed, head.checkpoint
        )
        # Crash point: until commit_batch returns, nothing of this batch is visible and the
        # in-memory state is untouched; a crash here loses only unacknowledged submissions.
        commit_started = time.perf_counter()
        await self._store.commit_batch(self.tree_id, batch)
        if self._observer is not None:
            self._observer(len(accepted), time.perf_counter() - commit_started)
        # Committed. From here on a crash is harmless: the next start loads this head.
        self._range, self._edge, self._head = staged, edge, new_head
        if self._guard is not None:
            self._guard.record(new_head)
        overlay = {key: ExpandedTile(data) for key, data in changed.items()}
        for p, entry in accepted:
            # A CT log answers with an SCT, not a proof: don't build what nobody reads.
            proof = (
                await self.proofs.inclusion(entry.index, new_head.size, overlay)
                if p.want_proof
                else []
            )
            p.future.set_result(
                Receipt(entry.index, entry.leaf_hash, integrated_time, new_head, proof, entry.seal)
            )
        for p in repeats:
            p.future.set_exception(DuplicateEntry(p.leaf_hash, in_batch[p.leaf_hash]))

    async def _recover(self, pending: list[_Pending]) -> list[_Pending]:
        """After a failed commit: reload committed state, then resolve waiters by what it holds.

        The failure may have happened before the commit (nothing stored) or after it reached the
        disk (everything stored, only the acknowledgement was lost). The store is the truth: an
        entry it holds is committed and its waiter gets a receipt; the others were not appended
        and are returned, unanswered, for the caller to fail or retry.
        """
        await self._load()
        head = self.head
        waiting = [p for p in pending if not p.future.done()]
        found = await self._store.find_leaves(self.tree_id, [p.leaf_hash for p in waiting])
        answered: set[bytes] = set()
        unstored: list[_Pending] = []
        for p in waiting:
            stored = found.get(p.leaf_hash)
            if stored is None:
                unstored.append(p)
            elif p.leaf_hash in answered:
                p.future.set_exception(DuplicateEntry(p.leaf_hash, stored.index))
            else:
                answered.add(p.leaf_hash)
                proof = await self.proofs.inclusion(stored.index, head.size)
                # No seal here: the caller signs on read what it cannot find (its stored seal
                # covers the same values, so either signature verifies).
                p.future.set_result(
                    Receipt(stored.index, p.leaf_hash, stored.integrated_time, head, proof)
                )
        return unstored


def _is_data_error(exc: BaseException) -> bool:
    """Whether the store refused the batch's *data* (a value it cannot hold), as opposed to
    being unreachable or failing: only then can a smaller batch succeed."""
    # Imported here: the engine has no SQLAlchemy dependency of its own; stores built on it
    # raise its exceptions.
    from sqlalchemy.exc import DataError, StatementError

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        cause = todo.pop()
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, DataError | UnicodeError):
            return True
        # SQLSTATE class 22, "data exception" (asyncpg raises U+0000 in text as 22021 and
        # SQLAlchemy wraps it as a plain DBAPIError).
        if str(getattr(cause, "sqlstate", "") or getattr(cause, "pgcode", "")).startswith("22"):
            return True
        if isinstance(cause, StatementError):
            todo.append(cause.orig)
        todo += [cause.__cause__, cause.__context__]
    return False


def _edge_tile_keys(size: int) -> dict[TileKey, int]:
    """Return the partial (rightmost, not full) tile of each level at ``size``, with its width."""
    keys: dict[TileKey, int] = {}
    level = 0
    count = size
    while count:
        width = count % TILE_HASHES
        if width:
            keys[(level, count // TILE_HASHES)] = width
        count >>= TILE_HEIGHT
        level += 1
    return keys
