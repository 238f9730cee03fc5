"""The witness's memory: per log, the trusted keys and the latest checkpoint it cosigned.

One row per known log. ``advance`` is a compare-and-swap on (size, root): two add-checkpoint
requests that both checked against the same stored state cannot both win, so a slow request for
a smaller tree can never roll the witness back after a faster one for a larger tree (the race
c2sp.org/tlog-witness spells out). The CAS is a single ``UPDATE … WHERE size = ? AND root = ?``,
atomic on SQLite (one writer) and on PostgreSQL (the row lock makes a concurrent update re-check
its WHERE clause against the committed row).

The table lives in its own ``MetaData``, created by ``create`` rather than by the log's alembic
migrations: a witness is an independent party with its own database, never the log's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Column, LargeBinary, MetaData, String, Table, Text, select
from sqlalchemy.engine import Connection

from services.db import Database
from services.log.merkle import EMPTY_ROOT

__all__ = ["LogState", "SizeConflict", "WitnessStore", "origin_hash", "witness_logs"]

witness_metadata = MetaData(
    naming_convention={
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

witness_logs = Table(
    "witness_logs",
    witness_metadata,
    Column("origin", Text, primary_key=True),
    # Lowercase hex SHA-256 of the origin: the monitoring path's name for the log.
    Column("origin_hash", String(64), nullable=False, unique=True),
    # The log's trusted vkeys, one a line, as last configured; empty once the log is no longer
    # configured (its state is kept: a log put back resumes where the witness left it).
    Column("vkeys", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    # The latest cosigned checkpoint: its text, the log signatures that verified, and ours.
    Column("checkpoint", Text),
    Column("cosigned_at", BigInteger),
)


def origin_hash(origin: str) -> str:
    """The lowercase hex SHA-256 of a log origin (tlog-witness's monitoring path)."""
    return hashlib.sha256(origin.encode()).hexdigest()


class SizeConflict(Exception):
    """The witness's latest size for the log is not the one the request assumed."""

    def __init__(self, origin: str, size: int) -> None:
        super().__init__(f"the witness's latest size for {origin!r} is {size}")
        self.size = size


@dataclass(frozen=True, slots=True)
class LogState:
    """One known log as stored."""

    origin: str
    vkeys: tuple[str, ...]
    size: int
    root: bytes
    checkpoint: str | None


def _row_state(row: Sequence[Any]) -> LogState:
    origin, vkeys, size, root, checkpoint = row
    return LogState(origin, tuple(vkeys.splitlines()), size, bytes(root), checkpoint)


_STATE_COLUMNS = (
    witness_logs.c.origin,
    witness_logs.c.vkeys,
    witness_logs.c.size,
    witness_logs.c.root,
    witness_logs.c.checkpoint,
)


class WitnessStore:
    """The witness's table on a ``Database`` (SQLite in the state directory, or any other)."""

    __slots__ = ("_db",)

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self) -> None:
        """Create the table if it does not exist."""
        await self._db.write(lambda conn: witness_metadata.create_all(conn))

    async def configure(self, logs: Mapping[str, Sequence[str]]) -> None:
        """Make ``logs`` (origin → vkeys) the trusted logs, in one transaction: new origins start
        at size 0, known ones keep their state under the new keys, and origins missing from
        ``logs`` are no longer served (their state is kept)."""

        def run(conn: Connection) -> None:
            known = set(conn.execute(select(witness_logs.c.origin)).scalars())
            for origin in known - logs.keys():
                conn.execute(
                    witness_logs.update().where(witness_logs.c.origin == origin).values(vkeys="")
                )
            for origin, vkeys in logs.items():
                text = "\n".join(vkeys)
                if origin in known:
                    conn.execute(
                        witness_logs.update()
                        .where(witness_logs.c.origin == origin)
                        .values(vkeys=text)
                    )
                else:
                    conn.execute(
                        witness_logs.insert().values(
                            origin=origin,
                            origin_hash=origin_hash(origin),
                            vkeys=text,
                            size=0,
                            root=EMPTY_ROOT,
                        )
                    )

        await self._db.write(run)

    async def get(self, origin: str) -> LogState | None:
        """The stored state of ``origin``, if it is a known log."""

        def run(conn: Connection) -> LogState | None:
            row = conn.execute(
                select(*_STATE_COLUMNS).where(witness_logs.c.origin == origin)
            ).first()
            return None if row is None else _row_state(row)

        return await self._db.read(run)

    async def latest_checkpoint(self, hashed_origin: str) -> str | None:
        """The latest cosigned checkpoint of the log whose origin hashes to ``hashed_origin``."""

        def run(conn: Connection) -> str | None:
            value: str | None = conn.execute(
                select(witness_logs.c.checkpoint).where(witness_logs.c.origin_hash == hashed_origin)
            ).scalar()
            return value

        return await self._db.read(run)

    async def advance(
        self,
        origin: str,
        old: tuple[int, bytes],
        new: tuple[int, bytes],
        checkpoint: str,
        now: int,
    ) -> None:
        """Move ``origin`` from ``old`` (size, root) to ``new`` and record ``checkpoint``,
        committed when this returns; raise ``SizeConflict`` with the stored size if the stored
        state is no longer ``old`` (another request won)."""

        def run(conn: Connection) -> None:
            done = conn.execute(
                witness_logs.update()
                .where(
                    witness_logs.c.origin == origin,
                    witness_logs.c.size == old[0],
                    witness_logs.c.root == old[1],
                )
                .values(size=new[0], root=new[1], checkpoint=checkpoint, cosigned_at=now)
            )
            if done.rowcount != 1:
                size = conn.execute(
                    select(witness_logs.c.size).where(witness_logs.c.origin == origin)
                ).scalar_one()
                raise SizeConflict(origin, size)

        await self._db.write(run)
