"""The database handle and migrations, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from services.db import Database, sqlite_url
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
    with pytest.raises(ValueError, match="sqlite or postgresql"):
        Database("mysql://localhost/x")
