"""Shared fixtures: a migrated database on SQLite *and* on the real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.db import Database, sqlite_url
from services.migrate import upgrade
from tests.serverproc import Server, start_server, stop_server

POSTGRES_URL = os.environ.get(
    "SIGSTEAD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


async def _postgres_db() -> AsyncIterator[Database]:
    # One throwaway schema per test keeps tests independent without the cost of CREATE DATABASE.
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(POSTGRES_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    db = Database(POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        await upgrade(db)
        yield db
    finally:
        await db.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def _sqlite_db(path: Path) -> AsyncIterator[Database]:
    db = Database(sqlite_url(path))
    try:
        await upgrade(db)
        yield db
    finally:
        await db.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A freshly migrated database, once on SQLite and once on the real PostgreSQL."""
    if request.param == "sqlite":
        async for d in _sqlite_db(tmp_path / "sigstead.db"):
            yield d
    else:
        async for d in _postgres_db():
            yield d


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A freshly created ``sigstead up`` on SQLite in a temporary data directory."""
    s = start_server(tmp_path / "data")
    try:
        yield s
    finally:
        if s.process.poll() is None:
            stop_server(s)
