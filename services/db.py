"""Database engine factory and the one MetaData every service's tables hang off.

SQLite (the embedded default) and PostgreSQL (scale-out) are both first-class: every storage test
runs on both. The URL decides; nothing else branches on the dialect except the connection set-up
below.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["create_engine", "metadata", "sqlite_url"]

_logger = logging.getLogger(__name__)

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
    """Return the SQLAlchemy URL of the SQLite database file at ``path``."""
    return f"sqlite+aiosqlite:///{path}"


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Create the async engine for ``url`` with the settings sigstead relies on.

    On SQLite: WAL (readers never block the writer), ``synchronous=FULL`` (a committed batch
    survives power loss: a 201 means committed), a busy timeout, and ``BEGIN IMMEDIATE`` so a
    write transaction takes the write lock up front instead of failing on upgrade mid-batch.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(url, **kwargs)
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            # Hand transaction control to SQLAlchemy's "begin" event below; pysqlite's own
            # implicit BEGIN is deferred and would upgrade to a write lock too late.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(sync_engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)
