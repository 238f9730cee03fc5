"""The database handle and migrations, on both databases."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from services.db import Database, DatabaseError, display_url, parse_url, sqlite_url
from services.migrate import SchemaNotAtHead, check_at_head


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
