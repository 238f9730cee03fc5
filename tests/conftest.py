"""Shared fixtures: a migrated database on SQLite *and* on the real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.db import create_engine, sqlite_url
from services.migrate import upgrade

POSTGRES_URL = os.environ.get(
    "SIGSTEAD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


async def _postgres_engine() -> AsyncIterator[AsyncEngine]:
    # One throwaway schema per test keeps tests independent without the cost of CREATE DATABASE.
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        await upgrade(engine)
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def _sqlite_engine(path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(sqlite_url(path))
    try:
        await upgrade(engine)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A freshly migrated database engine, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        async for e in _sqlite_engine(tmp_path / "sigstead.db"):
            yield e
    else:
        async for e in _postgres_engine():
            yield e
