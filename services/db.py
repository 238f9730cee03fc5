"""One database handle for SQLite (the embedded default) and PostgreSQL (scale-out).

Store code is written once, as plain functions of a synchronous SQLAlchemy ``Connection``, and
``Database`` runs them the cheapest way each database allows:

- PostgreSQL: on the asyncpg async engine through ``AsyncConnection.run_sync`` (greenlets, no
  threads; every statement is one network round trip anyway). The hot reads (tiles, entries,
  the tree head) skip that machinery: ``Database.fetch`` runs one SQL statement on a small
  asyncpg pool of its own, ~0.17 ms a read against ~1 ms through ``read`` (pool pre-ping,
  BEGIN, the statement and ROLLBACK, each a round trip, plus SQLAlchemy's layers).
- SQLite: on a synchronous pysqlite engine. Writes run on one dedicated writer thread; reads run
  inline on the event loop, because a read of a few pages costs tens of microseconds while a hop
  to another thread costs ~0.25 ms on these machines (measured: bench/bench_log.py), and aiosqlite
  pays that hop for every statement.

Every storage test runs on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

import asyncpg  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy import MetaData, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from services.errors import OperatorError

__all__ = ["Database", "DatabaseError", "display_url", "metadata", "parse_url", "sqlite_url"]

_logger = logging.getLogger(__name__)
_T = TypeVar("_T")

# Named constraints keep later migrations independent of what each database would have called
# them (alembic's "The Importance of Naming Constraints").
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def sqlite_url(path: Path) -> str:
    """Return the database URL of the SQLite file at ``path``."""
    return f"sqlite:///{path}"


class DatabaseError(OperatorError):
    """The database URL is unusable, or the database cannot be reached or opened."""


_URL_FORMS = "want sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE"


def parse_url(url: str) -> URL:
    """Parse a database URL; raise ``DatabaseError`` for one sigstead cannot use.

    ``postgres://`` is PostgreSQL too: libpq, Heroku and many a tutorial spell it so.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        # The text itself stays out of the message: it may hold a password.
        raise DatabaseError(f"the database URL cannot be parsed: {_URL_FORMS}") from None
    backend = parsed.get_backend_name()
    if backend == "postgres":
        return parsed.set(drivername="postgresql")
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseError(f"unsupported database {backend!r}: {_URL_FORMS}")
    return parsed


def display_url(url: str | URL) -> str:
    """The URL with its password, if any, replaced by ``***``: for messages and logs."""
    parsed = url if isinstance(url, URL) else parse_url(url)
    return parsed.render_as_string(hide_password=True)


def _why(exc: Exception, url: URL) -> str:
    """What an operator needs to know about a failed first connection."""
    if isinstance(exc, DBAPIError):
        reason = str(exc.orig).strip()
        if "database" in reason and "does not exist" in reason:
            return f"{reason} (create it, e.g. createdb {url.database}, or fix the URL)"
        if "role" in reason and "does not exist" in reason:
            return f"{reason} (create the role, or fix the user in the URL)"
        if "password" in reason:
            return f"{reason} (the password comes from PGPASSWORD or ~/.pgpass)"
        return reason
    if isinstance(exc, OSError):
        where = f"{url.host or 'localhost'}:{url.port or 5432}"
        return f"cannot connect to {where}: {exc.strerror or exc} (is PostgreSQL running there?)"
    raise exc


def _sqlite_engine(url: str) -> Engine:
    engine = sa.create_engine(
        url,
        # Connections move between the loop thread (reads) and the writer thread; the pool
        # hands each to one thread at a time.
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        # Reads run in autocommit mode and writes end their own transaction, so the pool's
        # rollback-on-checkin would be a wasted round trip on every read.
        pool_reset_on_return=None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # Autocommit at the driver level; transactions are begun explicitly below, so reads are
        # single statements that never take a lock, and writes take the lock up front.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed batch survives power loss, because a 201 means committed.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("sigstead_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# Connections of the read pool, per process. Reads wait for one when all are busy; more would
# not help a database server that has a few cores either.
_READ_POOL_SIZE = 10

# Errors that mean the pooled connection is gone (a server restart or failover, an idle timeout
# on the way, pg_terminate_backend): the statement never ran, or ran and its answer was lost.
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08 and "connection was closed"
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,  # "connection is closed"
    OSError,
)

# Keys of SQLAlchemy's asyncpg dialect that asyncpg.connect does not take.
_SQLALCHEMY_ONLY = (
    "async_creator_fn",
    "prepared_statement_cache_size",
    "prepared_statement_name_func",
)


async def _no_reset(_conn: Any) -> None:
    """Pool release without asyncpg's default RESET ALL/UNLISTEN round trip: read connections
    only ever run single statements outside a transaction, so there is no state to reset (an
    open transaction would still be rolled back by asyncpg itself)."""


def _abandon(pool: Any) -> None:
    """Close the sockets of a read pool made on another event loop, now maybe closed."""
    # "Event loop is closed" is a RuntimeError: the sockets are then closed as they are freed.
    with contextlib.suppress(RuntimeError):
        pool.terminate()


def _check_sqlite_folder(url: URL) -> None:
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        folder = Path(str(url.database)).absolute().parent
        if not folder.is_dir():
            raise DatabaseError(f"database {display_url(url)}: the folder {folder} does not exist")


class Database:
    """A database URL made usable from asyncio; see the module docstring for the strategy."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        parsed = parse_url(url)
        self.url = parsed
        self.dialect = parsed.get_backend_name()
        self._async: AsyncEngine | None = None
        self._sync: Engine | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._reads: Any = None  # the asyncpg pool of ``fetch``, made on first use
        self._reads_loop: asyncio.AbstractEventLoop | None = None
        self._reads_connect: dict[str, Any] = {}
        self._held: Any = None  # the pooled connection ``read_sqlite`` keeps, made on first use
        self._held_thread = 0  # the thread it was made on, the only one that uses it
        if self.dialect == "sqlite":
            self._sync = _sqlite_engine(parsed.set(drivername="sqlite").render_as_string(False))
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        elif self.dialect == "postgresql":
            engine_kwargs.setdefault("pool_pre_ping", True)
            async_url = parsed.set(drivername="postgresql+asyncpg")
            self._async = create_async_engine(async_url, **engine_kwargs)
            # The read pool connects exactly as the engine does: the same URL translation
            # (host, port, user, password, ssl, ...) and the same connect_args (the tests set
            # a search_path there).
            cargs, cparams = self._async.dialect.create_connect_args(async_url)
            assert not cargs
            cparams.update(engine_kwargs.get("connect_args", {}))
            # A statement cache of 0 is how PgBouncer's transaction mode is configured for
            # SQLAlchemy; asyncpg's own cache must then be off as well.
            cparams["statement_cache_size"] = cparams.get("prepared_statement_cache_size", 100)
            for key in _SQLALCHEMY_ONLY:
                cparams.pop(key, None)
            # The read statements are primary- or unique-key lookups whose plan does not depend
            # on the values bound: plan them once per connection, not on every execution (by
            # default PostgreSQL replans the first five and then any statement whose generic
            # plan looks costlier than its custom ones, ~0.1 ms of planning per read).
            settings = dict(cparams.get("server_settings") or {})
            settings.setdefault("plan_cache_mode", "force_generic_plan")
            cparams["server_settings"] = settings
            self._reads_connect = dict(cparams)
        else:  # pragma: no cover -- parse_url admits no other backend
            raise DatabaseError(f"unsupported database {self.dialect!r}")

    async def check(self) -> None:
        """Connect once; raise ``DatabaseError`` saying why if that fails.

        A SQLite file may be created, but never its folder: a missing one is a mistyped path.
        """
        _check_sqlite_folder(self.url)
        try:
            await self.read(lambda conn: conn.execute(sa.text("SELECT 1")))
        except (DBAPIError, OSError) as exc:
            raise DatabaseError(f"database {display_url(self.url)}: {_why(exc, self.url)}") from exc

    async def read(self, fn: Callable[[Connection], _T]) -> _T:
        """Run ``fn`` on a connection for reading (no transaction is committed)."""
        if self._sync is not None:
            with self._sync.connect() as conn:
                return fn(conn)
        assert self._async is not None
        async with self._async.connect() as aconn:
            return await aconn.run_sync(fn)

    async def read_sqlite(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """SQLite only: run ``fn`` on the sqlite3 connection this process keeps for hot reads.

        ``read`` checks a connection out of SQLAlchemy's pool and back in on every call, which
        costs about as much as a point read itself (~15-25 µs). This connection is checked out
        once and kept: ``fn`` is synchronous and runs on the calling (event loop) thread, so no
        two calls overlap. It is in autocommit mode like every connection of the pool (see
        ``_sqlite_engine``), so each statement sees what was committed when it began; ``fn``
        must consume its cursors, or an unfinished statement would pin an old snapshot.
        """
        if self._sync is None:
            raise TypeError(f"Database.read_sqlite is for SQLite, not {self.dialect}")
        if self._held is None:
            self._held = self._sync.raw_connection()
            self._held_thread = threading.get_ident()
        elif self._held_thread != threading.get_ident():
            # Another thread's event loop: the kept connection is not for sharing across
            # threads, so it reads as ``read`` does, on a pooled one.
            with self._sync.connect() as pooled:
                other = pooled.connection.driver_connection
                assert other is not None
                return fn(other)
        conn = self._held.driver_connection
        assert conn is not None
        return fn(conn)

    async def fetch(self, sql: str, *args: object) -> list[Sequence[Any]]:
        """PostgreSQL only: run one read-only statement (``$1``-style parameters) and return its
        rows (asyncpg Records: indexable, unpackable; bytea as bytes, bigint as int).

        One round trip: the statement runs on its own, outside any transaction, so it sees
        exactly what was committed when it started (one snapshot for the whole statement; a
        write transaction's rows appear all at once, at its COMMIT). asyncpg prepares it once
        per connection, and the connection plans it once (``plan_cache_mode`` is
        ``force_generic_plan`` there): a statement whose best plan depends on the values bound
        does not belong here.

        A pooled connection is not pinged before use; instead a read that finds its connection
        gone runs once more on a new one (reads are idempotent). A server that is down still
        fails the read, with the connection error.
        """
        if self.dialect != "postgresql":
            raise TypeError(f"Database.fetch is for PostgreSQL, not {self.dialect}")
        pool = await self._read_pool()
        for retry in (False, True):
            acquired = False
            try:
                async with pool.acquire() as conn:
                    acquired = True
                    return cast("list[Sequence[Any]]", await conn.fetch(sql, *args))
            except _CONNECTION_LOST:
                # Only a pooled connection that failed is retried (it may have died while
                # idle); failing to open one means the server is unreachable, and a second
                # attempt would only double the wait for that error. The pool drops a closed
                # connection on release and opens a new one on the next acquire.
                if retry or not acquired:
                    raise
                _logger.info("lost a read connection to %s; reading again", display_url(self.url))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read_pool(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._reads is not None and self._reads_loop is loop:
            return self._reads
        if self._reads is not None:
            # Made on another event loop (a CLI that runs asyncio.run twice with one Database):
            # its connections belong to that loop and cannot be used from this one.
            _abandon(self._reads)
        pool = asyncpg.create_pool(
            min_size=0,
            max_size=_READ_POOL_SIZE,
            reset=_no_reset,
            **self._reads_connect,
        )
        await pool  # with min_size=0 this opens no connection
        if self._reads is not None and self._reads_loop is loop:
            # Another task made one while this one waited: one pool per loop.
            await pool.close()
            return self._reads
        self._reads, self._reads_loop = pool, loop
        return pool

    async def write(self, fn: Callable[[Connection], _T]) -> _T:
        """Run ``fn`` in one write transaction; commit if it returns, roll back if it raises."""
        if self._sync is not None:
            assert self._writer is not None
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._writer, self._write_sync, fn)
        assert self._async is not None
        async with self._async.begin() as aconn:
            return await aconn.run_sync(fn)

    def _write_sync(self, fn: Callable[[Connection], _T]) -> _T:
        assert self._sync is not None
        with self._sync.connect().execution_options(sigstead_write=True) as conn, conn.begin():
            return fn(conn)

    async def dispose(self) -> None:
        """Close every pooled connection and the writer thread."""
        if self._reads is not None:
            reads, self._reads = self._reads, None
            if self._reads_loop is asyncio.get_running_loop():
                await reads.close()
            else:
                _abandon(reads)
        if self._async is not None:
            await self._async.dispose()
        if self._held is not None:
            held, self._held = self._held, None
            held.close()  # back to the pool, which the engine's dispose then closes
        if self._sync is not None:
            self._sync.dispose()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
