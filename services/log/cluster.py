"""One sequencer per log tree, however many processes serve it: election and forwarding.

Several processes serve one log: the workers of ``sigstead up --workers N`` on one SQLite file,
or ``serve log`` replicas on one PostgreSQL. Each parses, verifies and canonicalises its own
requests and renders its own responses (the work that scales with cores), but exactly one of
them, elected per tree, sequences: the others hand it their leaves and wait for its receipts.
Without this every process commits on its own and they race on the tree head's compare-and-swap,
so a second replica made the log slower, not faster (issue 13: 1,393 lost races in 30 s).

- **Election** is a lock per tree that dies with its holder: ``flock`` on a file in the data
  directory (processes on one host, SQLite) or a PostgreSQL session advisory lock (replicas on
  several hosts). The kernel or the database server drops it when the holder dies, even by
  ``kill -9``; a follower polling every ``ELECTION_POLL`` seconds takes over.
- **Safety does not rest on the lock.** Every commit is still a compare-and-swap on the head, so
  two processes that both believe they lead (a lock connection lost in a partition while its
  sequencer still runs) cannot fork the log: one loses the race, reloads and carries on.
- **Directory**: the elected process writes the URL of its forwarding endpoint in the
  ``sequencers`` table. A stale row costs a refused connection, then a fresh lookup.
- **Forwarding** sends whatever has queued while the previous round trip was in flight as one
  request (group forwarding, the follower's side of group commit), authenticated by a secret
  derived from the tree's private key, which every process serving the tree holds.
- **No acknowledged entry is lost, and none is acknowledged twice.** When a round trip fails the
  outcome is unknown: the follower asks the store which of its leaves were committed (those get
  their receipts from it, as the sequencer's own recovery does) and sends the others again to
  whoever leads next; a leaf the new sequencer calls a duplicate *because of that retry* is one
  the old one committed, and is answered from the store too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hmac
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson
import sqlalchemy as sa
from aiohttp import web

from services.db import Database
from services.fastjson import compact
from services.log import merkle
from services.log.checkpoint import CheckpointSigner
from services.log.errors import (
    DuplicateEntry,
    EntryRefused,
    LogFrozen,
    Pushback,
    SequencerStopped,
    SequencingFailed,
)
from services.log.schema import sequencers
from services.log.sequencer import Receipt, Sequencer, TreeHead
from services.log.sqlstore import SQLLogStore

__all__ = ["ELECTION_POLL", "Cluster", "FileLock", "LeaderLock", "PostgresLock"]

_logger = logging.getLogger(__name__)

ELECTION_POLL = 0.5
"""Seconds between a follower's attempts to take a tree's lock: the fail-over delay's bulk."""
_HEALTH_POLL = 1.0
"""Seconds between the leader's checks that its lock (its database session) is still alive."""
FAILOVER_DEADLINE = 15.0
"""How long a follower keeps re-sending a round whose sequencer went away before failing it."""
_JOIN_DEADLINE = 60.0
_MAX_FORWARD = 1024
_TOKEN_LABEL = b"sigstead sequencer forwarding v1"
_PATH = "/internal/v1/trees/{tree}/sequence"


class LeaderLock(Protocol):
    """The right to sequence one tree; released when its holder dies, however it dies."""

    async def acquire(self) -> bool:
        """Take the lock if it is free (never waits); whether this process holds it now."""
        ...

    async def held(self) -> bool:
        """Whether this process still holds it (its connection alive)."""
        ...

    async def release(self) -> None:
        """Give it up (idempotent)."""
        ...


class FileLock:
    """``flock`` on a file: for processes on one host (``up --workers``, SQLite).

    Each process opens the file itself: flock belongs to the open file description, so a
    descriptor inherited through ``fork`` would be the parent's lock, not a new one.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    async def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def held(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the description drops the lock
            self._fd = None


class PostgresLock:
    """A session advisory lock on its own connection: replicas on several hosts.

    The lock lives exactly as long as the session: PostgreSQL drops it when the holder's
    connection closes, which the server notices at once when the holder's process dies (its
    kernel closes the socket). A follower keeps its connection and retries on it.
    """

    def __init__(self, db: Database, key: int) -> None:
        self._dsn = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._key = key
        self._conn: Any = None
        self._holding = False

    async def _connection(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]

        if self._conn is None or self._conn.is_closed():
            self._holding = False
            self._conn = await asyncpg.connect(self._dsn, timeout=5)
        return self._conn

    async def acquire(self) -> bool:
        if self._holding and await self.held():
            return True
        try:
            conn = await self._connection()
            self._holding = bool(
                await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key, timeout=5)
            )
        except BaseException:
            await self.release()
            raise
        return self._holding

    async def held(self) -> bool:
        if not self._holding or self._conn is None:
            return False
        try:
            await self._conn.fetchval("SELECT 1", timeout=5)
        except Exception:  # any failure: the session, and with it the lock, may be gone
            await self.release()
            return False
        return True

    async def release(self) -> None:
        conn, self._conn, self._holding = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)


class _Directory:
    """The ``sequencers`` table: where each tree's elected sequencer takes forwarded entries."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def publish(self, tree_id: int, url: str, now_ms: int) -> None:
        def run(conn: sa.Connection) -> None:
            # Only the lock holder writes its tree's row, so delete-then-insert cannot race.
            conn.execute(sa.delete(sequencers).where(sequencers.c.tree_id == tree_id))
            conn.execute(sa.insert(sequencers).values(tree_id=tree_id, url=url, since_ms=now_ms))

        await self._db.write(run)

    async def lookup(self, tree_id: int) -> str | None:
        def run(conn: sa.Connection) -> str | None:
            url = conn.execute(
                sa.select(sequencers.c.url).where(sequencers.c.tree_id == tree_id)
            ).scalar_one_or_none()
            return None if url is None else str(url)

        return await self._db.read(run)


class _NoSequencer(Exception):
    """Nobody takes this round right now (no leader yet, or the one asked stepped down)."""


@dataclass(slots=True)
class _Item:
    leaf: bytes
    search_keys: frozenset[str]
    extra: bytes | None
    want_proof: bool
    future: asyncio.Future[Receipt] = field(repr=False)
    # Sent before in a round whose outcome is unknown: a "duplicate" may be that round's commit.
    resent: bool = False


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


class _Forwarder:
    """A follower's side: one round trip at a time to the tree's sequencer, carrying everything
    queued meanwhile."""

    def __init__(
        self,
        tree_id: int,
        sequencer: Sequencer,
        store: SQLLogStore,
        directory: _Directory,
        token: str,
        session: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self._tree_id = tree_id
        self._sequencer = sequencer
        self._store = store
        self._directory = directory
        self._token = token
        self._session = session
        self._queue: list[_Item] = []
        self._sender: asyncio.Task[None] | None = None
        self._url: str | None = None

    async def __call__(
        self, leaf: bytes, search_keys: frozenset[str], extra: bytes | None, want_proof: bool
    ) -> Receipt:
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(leaf, search_keys, extra, want_proof, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_all(), name=f"forward-{self._tree_id}")
        return await future

    async def close(self) -> None:
        if self._sender is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None

    async def _send_all(self) -> None:
        while self._queue:
            items, self._queue = self._queue[:_MAX_FORWARD], self._queue[_MAX_FORWARD:]
            try:
                await self._send(items)
            except Exception as exc:  # nobody may wait forever
                _logger.exception("tree %d: forwarding failed", self._tree_id)
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(SequencingFailed(f"not appended: {exc!r}"))

    async def _send(self, items: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FAILOVER_DEADLINE
        delay = 0.05
        why = "no round was tried"
        while items:
            if loop.time() >= deadline:
                error = SequencingFailed(f"no sequencer took the entries: {why}")
                for item in items:
                    item.future.set_exception(error)
                return
            try:
                heads, results = await self._round(items)
            except (_NoSequencer, aiohttp.ClientError, TimeoutError) as exc:
                # Unknown outcome: the sequencer may have committed before it went away.
                why = repr(exc)
                _logger.info("tree %d: sequencer unavailable (%s); resending", self._tree_id, why)
                self._url = None
                await self._from_store(items)
                retry = [i for i in items if not i.future.done()]
            else:
                retry, recover = [], []
                for item, result in zip(items, results, strict=True):
                    outcome = self._outcome(item, result, heads)
                    if outcome == "retry":
                        retry.append(item)
                    elif outcome == "recover":
                        recover.append(item)
                await self._from_store(recover)
                if retry:
                    why = "the sequencer is stopping"
                    self._url = None
                # A recovered item the store does not hold was not committed: send it again.
                retry += [i for i in recover if not i.future.done()]
            for item in retry:
                item.resent = True
            if retry and len(retry) == len(items):
                # Nothing moved: give the election time to run before asking again.
                await asyncio.sleep(delay)
                delay = min(delay * 2, ELECTION_POLL)
            items = retry

    def _outcome(self, item: _Item, result: dict[str, Any], heads: list[TreeHead]) -> str:
        error = result.get("error")
        if error is None:
            proof = _unb64(result["proof"])
            seal = result.get("seal")
            item.future.set_result(
                Receipt(
                    int(result["index"]),
                    _unb64(result["leafHash"]),
                    int(result["integratedTime"]),
                    heads[int(result["head"])],
                    [proof[i : i + 32] for i in range(0, len(proof), 32)],
                    None if seal is None else _unb64(seal),
                )
            )
            return "done"
        message = str(result.get("message", error))
        if error == "duplicate":
            if item.resent:
                return "recover"  # perhaps committed by the round whose answer was lost
            item.future.set_exception(
                DuplicateEntry(_unb64(result["leafHash"]), int(result["index"]))
            )
        elif error == "stopped":
            return "retry"  # not queued: its sequencer is shutting down; the next one takes it
        elif error == "pushback":
            item.future.set_exception(Pushback(message))
        elif error == "frozen":
            item.future.set_exception(LogFrozen(message))
        elif error == "refused":
            item.future.set_exception(EntryRefused(message))
        else:
            item.future.set_exception(SequencingFailed(message))
        return "done"

    async def _round(self, items: list[_Item]) -> tuple[list[TreeHead], list[dict[str, Any]]]:
        url = self._url
        if url is None:
            url = await self._directory.lookup(self._tree_id)
            if url is None:
                raise _NoSequencer("no sequencer is published yet")
            self._url = url
        body = {
            "entries": [
                {
                    "leaf": _b64(i.leaf),
                    "keys": sorted(i.search_keys),
                    "extra": None if i.extra is None else _b64(i.extra),
                    "proof": i.want_proof,
                }
                for i in items
            ]
        }
        async with self._session().post(
            url.rstrip("/") + _PATH.format(tree=self._tree_id),
            data=compact(body),
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=FAILOVER_DEADLINE),
        ) as resp:
            if resp.status == 409:
                raise _NoSequencer(await resp.text())
            if resp.status != 200:
                raise SequencingFailed(f"sequencer at {url} answered {resp.status}")
            answer = orjson.loads(await resp.read())
        heads = [
            TreeHead(int(h["size"]), _unb64(h["root"]), int(h["timestampMs"]), h["checkpoint"])
            for h in answer["heads"]
        ]
        results: list[dict[str, Any]] = answer["results"]
        if len(results) != len(items):
            raise SequencingFailed(f"sequencer at {url} answered {len(results)} of {len(items)}")
        return heads, results

    async def _from_store(self, items: Sequence[_Item]) -> None:
        """Answer, from what is committed, every item the store holds (see the module doc)."""
        waiting = [i for i in items if not i.future.done()]
        if not waiting:
            return
        hashes = {merkle.hash_leaf(i.leaf): i for i in waiting}
        found = await self._store.find_leaves(self._tree_id, list(hashes))
        if not found:
            return
        head = await self._sequencer.latest_head()
        for leaf_hash, stored in found.items():
            item = hashes[leaf_hash]
            proof = (
                await self._sequencer.proofs.inclusion(stored.index, head.size)
                if item.want_proof
                else []
            )
            # No seal: the caller signs on read what it cannot find (as Sequencer._recover).
            item.future.set_result(
                Receipt(stored.index, leaf_hash, stored.integrated_time, head, proof)
            )


@dataclass(slots=True)
class _Member:
    sequencer: Sequencer
    lock: LeaderLock
    directory: _Directory
    forwarder: _Forwarder
    token: str
    leading: bool = False
    watch: asyncio.Task[None] | None = None


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, DuplicateEntry):
        return {"error": "duplicate", "index": exc.index, "leafHash": _b64(exc.leaf_hash)}
    kinds: dict[type[BaseException], str] = {
        Pushback: "pushback",
        LogFrozen: "frozen",
        SequencerStopped: "stopped",
        EntryRefused: "refused",
    }
    kind = kinds.get(type(exc), "failed")
    return {"error": kind, "message": str(exc)}


class Cluster:
    """This process's part in electing one sequencer per tree, and its forwarding endpoint.

    ``join`` a tree's sequencer instead of starting it, ``leave`` it instead of stopping it.
    The endpoint listens on ``listen`` (host, port; port 0 picks one) and is published as
    ``url`` (default: ``http://`` the address it bound), which the other processes must reach.
    """

    def __init__(
        self,
        *,
        listen: tuple[str, int],
        url: str | None,
        lock_dir: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._listen = listen
        self._url = url
        self._lock_dir = lock_dir
        self._clock = clock
        self._members: dict[int, _Member] = {}
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        """The published URL of this process's forwarding endpoint."""
        if self._url is None:
            raise RuntimeError("cluster not started")
        return self._url

    async def start(self) -> None:
        """Open the forwarding endpoint."""
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post(_PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, port = self._listen
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        if self._url is None:
            bound = self._runner.addresses[0]
            where = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
            self._url = f"http://{where}:{bound[1]}"
        # One connection pool for every forwarder; no connection limit, as rounds are few.
        self._client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    def _session(self) -> aiohttp.ClientSession:
        if self._client is None:
            raise SequencerStopped("cluster stopped")
        return self._client

    async def close(self) -> None:
        """Leave every tree still joined, close the endpoint."""
        for member in list(self._members.values()):
            await self.leave(member.sequencer)
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _lock(self, db: Database, tree_id: int) -> LeaderLock:
        if db.dialect == "postgresql":
            return PostgresLock(db, tree_id)
        return FileLock(self._lock_dir / f"{tree_id}.sequencer.lock")

    async def join(
        self, sequencer: Sequencer, db: Database, store: SQLLogStore, signer: CheckpointSigner
    ) -> None:
        """Start ``sequencer`` as this tree's sequencer if elected, else as a follower once the
        tree has its genesis entry (the first sequencer commits it); then keep watching."""
        tree_id = sequencer.tree_id
        directory = _Directory(db)
        token = signer.derive_secret(_TOKEN_LABEL).hex()
        forwarder = _Forwarder(tree_id, sequencer, store, directory, token, self._session)
        member = _Member(sequencer, self._lock(db, tree_id), directory, forwarder, token)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _JOIN_DEADLINE
        while True:
            if await member.lock.acquire():
                try:
                    await self._lead(member, first=True)
                except BaseException:
                    await member.lock.release()
                    raise
                break
            head = await store.read_head(tree_id)
            if head is not None and head.size > 0:
                await sequencer.start(forwarder)
                break
            if loop.time() >= deadline:
                raise SequencingFailed(
                    f"tree {tree_id}: another process holds its sequencer lock but has not "
                    f"created the tree in {_JOIN_DEADLINE:.0f} s"
                )
            await asyncio.sleep(0.1)
        self._members[tree_id] = member
        member.watch = asyncio.create_task(self._watch(member), name=f"election-{tree_id}")
        _logger.info(
            "tree %d: %s",
            tree_id,
            "this process sequences it" if member.leading else "forwarding to its sequencer",
        )

    async def leave(self, sequencer: Sequencer) -> None:
        """Stop watching, commit what is queued (leader) or sent (follower), give up the lock."""
        member = self._members.pop(sequencer.tree_id, None)
        if member is None:
            await sequencer.stop()
            return
        if member.watch is not None:
            member.watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await member.watch
        await member.forwarder.close()
        await sequencer.stop()
        # Only now: a successor must not start before this sequencer's last commit.
        await member.lock.release()

    async def _lead(self, member: _Member, *, first: bool) -> None:
        sequencer = member.sequencer
        if first:
            await sequencer.start()
        else:
            await sequencer.lead()
        member.leading = True
        await member.directory.publish(sequencer.tree_id, self.url, int(self._clock() * 1000))

    async def _watch(self, member: _Member) -> None:
        tree_id = member.sequencer.tree_id
        while True:
            try:
                if member.leading:
                    await asyncio.sleep(_HEALTH_POLL)
                    if not await member.lock.held():
                        _logger.warning(
                            "tree %d: lost the sequencer lock; forwarding from now on", tree_id
                        )
                        member.leading = False
                        await member.sequencer.follow(member.forwarder)
                else:
                    await asyncio.sleep(ELECTION_POLL)
                    if await member.lock.acquire():
                        _logger.warning("tree %d: elected its sequencer", tree_id)
                        try:
                            await self._lead(member, first=False)
                        except Exception:
                            _logger.exception("tree %d: could not take over", tree_id)
                            member.leading = False
                            await member.lock.release()
                            await member.sequencer.follow(member.forwarder)
            except asyncio.CancelledError:
                raise
            except Exception:  # the database away for a moment: try again next round
                _logger.exception("tree %d: election round failed", tree_id)

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            member = self._members[int(request.match_info["tree"])]
        except (KeyError, ValueError):
            # Not (or no longer) served here: the caller looks the sequencer up again.
            return web.json_response(
                {"code": 409, "message": "this process does not sequence the tree"}, status=409
            )
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), member.token.encode()):
            return web.json_response({"code": 401, "message": "not a peer"}, status=401)
        if not member.leading:
            return web.json_response(
                {"code": 409, "message": "this process does not sequence the tree"}, status=409
            )
        entries = orjson.loads(await request.read())["entries"]
        sequencer = member.sequencer
        waiting: list[asyncio.Future[Receipt]] = []
        for e in entries:
            try:
                future = sequencer.enqueue(
                    _unb64(e["leaf"]),
                    e["keys"],
                    extra=None if e["extra"] is None else _unb64(e["extra"]),
                    want_proof=bool(e["proof"]),
                )
            except Exception as exc:  # refused before queueing: answered as such, in order
                future = asyncio.get_running_loop().create_future()
                future.set_exception(exc)
            waiting.append(future)
        # Futures, not coroutines: gather makes no task per entry.
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        heads: dict[int, int] = {}
        head_list: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                results.append(_error(outcome))
                continue
            head = outcome.head
            position = heads.get(head.size)
            if position is None:
                position = heads[head.size] = len(head_list)
                head_list.append(
                    {
                        "size": head.size,
                        "root": _b64(head.root),
                        "timestampMs": head.timestamp_ms,
                        "checkpoint": head.checkpoint,
                    }
                )
            results.append(
                {
                    "index": outcome.index,
                    "leafHash": _b64(outcome.leaf_hash),
                    "integratedTime": outcome.integrated_time,
                    "head": position,
                    "proof": _b64(b"".join(outcome.proof)),
                    "seal": None if outcome.seal is None else _b64(outcome.seal),
                }
            )
        return web.Response(
            body=compact({"heads": head_list, "results": results}), content_type="application/json"
        )
