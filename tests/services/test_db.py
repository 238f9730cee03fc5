"""The database handle and migrations, on both databases."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from services.db import Database, DatabaseError, display_url, parse_url, sqlite_url
from services.migrate import SchemaNotAtHead, check_at_head
from tests.conftest import POSTGRES_URL


async def test_migrated_database_is_at_head(db: Database) -> None:
    await check_at_head(db)


async def test_empty_database_is_not_at_head(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path / "empty.db"))
    try:
        with pytest.raises(SchemaNotAtHead, match="code expects"):
            await check_at_head(db)
    finally:
        await db.dispose()


async def test_write_rolls_back_on_error(db: Database) -> None:
    class Boom(Exception):
        pass

    def fail(conn: Connection) -> None:
        conn.execute(
            text("INSERT INTO tree_heads VALUES (1, 'o', 0, :r, 0, 'c')"), {"r": b"r" * 32}
        )
        raise Boom

    with pytest.raises(Boom):
        await db.write(fail)
    count = await db.read(lambda c: c.execute(text("SELECT count(*) FROM tree_heads")).scalar())
    assert count == 0


def test_unsupported_database() -> None:
    with pytest.raises(DatabaseError, match="unsupported database 'mysql': want sqlite"):
        Database("mysql://localhost/x")


def test_an_unparsable_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(DatabaseError, match="cannot be parsed") as err:
        Database("pw-4711-secret")
    assert "pw-4711" not in str(err.value)


def test_postgres_is_postgresql() -> None:
    """libpq's, Heroku's and many a tutorial's spelling."""
    assert parse_url("postgres://u@h/d").get_backend_name() == "postgresql"
    assert display_url("postgres://u:pw@h/d") == "postgresql://u:***@h/d"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:////nonexistent-sigstead/x.db", "the folder /nonexistent-sigstead does not exist"),
        (
            "postgresql://postgres:pw@127.0.0.1:1/test",
            "postgresql://postgres:***@127.0.0.1:1/test: cannot connect to 127.0.0.1:1",
        ),
    ],
)
async def test_check_says_why_a_database_cannot_be_used(url: str, message: str) -> None:
    db = Database(url)
    try:
        with pytest.raises(DatabaseError, match=re.escape(message)):
            await db.check()
    finally:
        await db.dispose()


# -- Database.fetch: PostgreSQL's read pool ----------------------------------------------------


async def test_fetch_is_for_postgresql(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path / "x.db"))
    try:
        with pytest.raises(TypeError, match="for PostgreSQL, not sqlite"):
            await db.fetch("SELECT 1")
    finally:
        await db.dispose()


async def test_read_sqlite_is_for_sqlite() -> None:
    db = Database(POSTGRES_URL)
    try:
        with pytest.raises(TypeError, match="for SQLite, not postgresql"):
            await db.read_sqlite(lambda conn: conn.execute("SELECT 1").fetchall())
    finally:
        await db.dispose()


async def test_read_sqlite_keeps_one_connection_that_sees_each_commit(tmp_path: Path) -> None:
    """The kept connection holds no snapshot between reads: a commit made after its first read
    is seen by the next one, and the connection is the same one throughout."""
    db = Database(sqlite_url(tmp_path / "x.db"))
    try:
        await db.write(lambda c: c.execute(text("CREATE TABLE t (x INTEGER)")))
        seen: list[tuple[int, list[tuple[int]]]] = []

        def count(conn: sqlite3.Connection) -> tuple[int, list[tuple[int]]]:
            return id(conn), conn.execute("SELECT count(*) FROM t").fetchall()

        for value in range(3):
            await db.write(lambda c: c.execute(text(f"INSERT INTO t VALUES ({value})")))  # noqa: B023 - awaited at once
            seen.append(await db.read_sqlite(count))
        assert [rows for _, rows in seen] == [[(1,)], [(2,)], [(3,)]]
        assert len({conn for conn, _ in seen}) == 1
        # A loop in another thread reads on a pooled connection, not the kept one.
        elsewhere = await asyncio.to_thread(asyncio.run, db.read_sqlite(count))
        assert elsewhere[1] == [(3,)]
        assert elsewhere[0] != seen[0][0]
    finally:
        await db.dispose()
    assert db._held is None


@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_fetch_sees_only_committed_rows(db: Database) -> None:
    """A read outside any transaction sees a write transaction's rows at its COMMIT, not
    before, and reads the same schema (search path) as the engine."""
    (search_path,) = (await db.fetch("SHOW search_path"))[0]
    assert search_path == await db.read(lambda c: c.execute(text("SHOW search_path")).scalar())
    url = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(False)
    writer = await asyncpg.connect(url, server_settings={"search_path": search_path})
    try:
        async with writer.transaction():
            await writer.execute("INSERT INTO tree_heads VALUES (7, 'o', 3, $1, 9, 'c')", b"r" * 32)
            assert await db.fetch("SELECT size FROM tree_heads WHERE tree_id = $1", 7) == []
        rows = await db.fetch("SELECT size, root FROM tree_heads WHERE tree_id = $1", 7)
        assert [tuple(r) for r in rows] == [(3, b"r" * 32)]
    finally:
        await writer.close()


@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_fetch_reads_again_when_its_connection_dies(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """In place of a pre-ping: a statement whose pooled connection is lost mid-read (here its
    server process is terminated) runs once more on a new connection."""

    async def kill_the_sleeper() -> int:
        for _ in range(200):
            rows = await db.fetch(
                "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                " AND query LIKE 'SELECT pg_backend_pid(), pg_sleep(%'"
            )
            if rows:
                pid = int(rows[0][0])
                await db.fetch("SELECT pg_terminate_backend($1)", pid)
                return pid
            await asyncio.sleep(0.01)
        raise AssertionError("the read never started")

    caplog.set_level(logging.INFO, logger="services.db")
    read = asyncio.create_task(db.fetch("SELECT pg_backend_pid(), pg_sleep(0.5)"))
    killed = await kill_the_sleeper()
    ((pid, _),) = await read
    assert pid != killed
    assert "lost a read connection" in caplog.text


async def test_fetch_does_not_retry_a_failed_connect(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="services.db")
    db = Database("postgresql://postgres@127.0.0.1:1/test")
    try:
        with pytest.raises(OSError, match="Connect call failed"):
            await db.fetch("SELECT 1")
    finally:
        await db.dispose()
    assert "lost a read connection" not in caplog.text


@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_fetch_plans_each_statement_once(db: Database) -> None:
    """Read connections use generic plans (see services.db), beside the caller's own settings
    (the fixture's search path); the engine's connections keep PostgreSQL's default."""
    assert await db.fetch("SHOW plan_cache_mode") == [("force_generic_plan",)]
    assert (await db.fetch("SHOW search_path"))[0][0].startswith("t_")
    assert await db.read(lambda c: c.execute(text("SHOW plan_cache_mode")).scalar()) == "auto"


@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_concurrent_first_reads_share_one_bounded_pool(db: Database) -> None:
    rows = await asyncio.gather(
        *(db.fetch("SELECT pg_backend_pid(), pg_sleep(0.05)") for _ in range(40))
    )
    pids = {r[0][0] for r in rows}
    assert 1 < len(pids) <= 10  # services.db._READ_POOL_SIZE
