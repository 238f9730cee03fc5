"""Bring a database to the newest schema with the alembic scripts shipped in ``migrations/``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

import migrations
from services.db import Database
from services.errors import OperatorError

__all__ = ["SchemaNotAtHead", "alembic_config", "check_at_head", "upgrade"]


class SchemaNotAtHead(OperatorError):
    """The database schema is not the one this code expects."""


def alembic_config() -> Config:
    """Return an alembic config pointing at the packaged migration scripts."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return cfg


def _upgrade(conn: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


def _check(conn: Connection) -> None:
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    current = set(MigrationContext.configure(conn).get_current_heads())
    if current != heads:
        raise SchemaNotAtHead(f"database is at {sorted(current)}, code expects {sorted(heads)}")


async def upgrade(db: Database) -> None:
    """Apply every pending migration in one transaction."""
    await db.write(_upgrade)


async def check_at_head(db: Database) -> None:
    """Raise ``SchemaNotAtHead`` unless the database is fully migrated."""
    await db.read(_check)
