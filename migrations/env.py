"""Alembic environment (async template), shared by the CLI and sigstead's own start-up.

When sigstead migrates itself it passes an open connection in ``config.attributes["connection"]``
(alembic cookbook, "connection sharing"); from the command line the URL comes from
``SIGSTEAD_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from services.db import Database
from services.schema import metadata

config = context.config
target_metadata = metadata


# The key of the PostgreSQL advisory lock that every migration takes ("sigstead" in ASCII).
MIGRATION_LOCK = 0x7369677374656164


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Replicas starting together on an empty database would each create the tables, and all
        # but one fail on a duplicate. The lock lasts until this transaction ends: the next
        # migrator then finds the schema at head (read committed: each statement sees what
        # committed before it) and does nothing. On SQLite the write transaction's BEGIN
        # IMMEDIATE already serialises migrators.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    db = Database(url)
    try:
        await db.write(_run)
    finally:
        await db.dispose()


def run_migrations_online() -> None:
    """Run against a shared connection if sigstead handed one in, else against the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = os.environ.get("SIGSTEAD_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set SIGSTEAD_DATABASE_URL to the database to migrate")
    asyncio.run(_run_async(url))


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported")
run_migrations_online()
