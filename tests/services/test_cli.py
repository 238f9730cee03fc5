"""The ``sigstead`` command line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from services.db import Database, sqlite_url
from services.migrate import check_at_head


def test_db_upgrade_creates_a_migrated_database(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    subprocess.run(
        [sys.executable, "-m", "services.cli", "db", "upgrade", "--database-url", sqlite_url(path)],
        check=True,
    )

    async def check() -> None:
        db = Database(sqlite_url(path))
        try:
            await check_at_head(db)
        finally:
            await db.dispose()

    asyncio.run(check())


def test_unknown_command_fails() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "frobnicate"], capture_output=True, check=False
    )
    assert proc.returncode == 2
    assert b"invalid choice" in proc.stderr
