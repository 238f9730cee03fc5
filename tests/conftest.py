"""Shared fixtures: a migrated database on SQLite *and* on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
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


async def _admin(sql: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction.
    engine = create_async_engine(make_url(POSTGRES_URL).set(database="postgres"))
    try:
        async with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


@pytest.fixture
def empty_postgres() -> Iterator[Iterator[str]]:
    """A source of empty PostgreSQL databases, as ``postgresql://`` URLs for a command line;
    each is dropped after the test. (A database, not a schema: a command line cannot set the
    search path.)"""
    created: list[str] = []

    def databases() -> Iterator[str]:
        while True:
            name = f"sigstead_t_{uuid.uuid4().hex[:12]}"
            asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
            created.append(name)
            url = make_url(POSTGRES_URL).set(drivername="postgresql", database=name)
            yield url.render_as_string(hide_password=False)

    try:
        yield databases()
    finally:
        for name in created:
            asyncio.run(_admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A freshly created ``sigstead up`` on SQLite in a temporary data directory."""
    s = start_server(tmp_path / "data")
    try:
        yield s
    finally:
        if s.process.poll() is None:
            stop_server(s)
