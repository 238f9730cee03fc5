"""The head guard: a database rolled back (or forked) under a data directory refuses to start,
naming both heads; a deliberate rollback is accepted by deleting the file."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from services.db import Database, sqlite_url
from services.log.headguard import HeadGuard, RollbackDetected
from services.log.sequencer import Sequencer
from services.log.sqlstore import SQLLogStore
from services.migrate import upgrade
from tests.services.log.test_sequencer import TREE, make_sequencer


async def _sequencer(db: Database, guard: HeadGuard) -> Sequencer:
    s = make_sequencer(SQLLogStore(db), guard=guard, batch_max_age=0.0)
    await s.start()
    return s


async def _append(db: Database, guard: HeadGuard, *leaves: bytes) -> int:
    s = await _sequencer(db, guard)
    try:
        for leaf in leaves:
            await s.submit(leaf)
        return s.head.size
    finally:
        await s.stop()


async def _sqlite(path: Path) -> Database:
    db = Database(sqlite_url(path))
    await upgrade(db)
    return db


async def test_a_restored_older_database_refuses_to_start(tmp_path: Path) -> None:
    guard_file = tmp_path / "heads" / f"{TREE}.json"
    live = tmp_path / "live.db"
    db = await _sqlite(live)
    try:
        await _append(db, HeadGuard(guard_file, interval=0), b"a", b"b")
    finally:
        await db.dispose()
    shutil.copy(live, tmp_path / "backup.db")  # a backup at size 3 (genesis, a, b)
    db = await _sqlite(live)
    try:
        assert await _append(db, HeadGuard(guard_file, interval=0), b"c", b"d") == 5
    finally:
        await db.dispose()
    assert json.loads(guard_file.read_text())["size"] == 5
    assert guard_file.stat().st_mode & 0o777 == 0o600

    shutil.copy(tmp_path / "backup.db", live)  # restored in place
    db = await _sqlite(live)
    try:
        with pytest.raises(RollbackDetected, match=r"holds a tree of size 3.*committed size 5"):
            await _sequencer(db, HeadGuard(guard_file))
        # The operator decides: the remembered head goes, and the log starts from the backup.
        guard_file.unlink()
        assert await _append(db, HeadGuard(guard_file, interval=0), b"e") == 4
    finally:
        await db.dispose()


async def test_another_history_at_the_remembered_size_is_refused(
    db: Database, tmp_path: Path
) -> None:
    """Both databases: a remembered head whose root the tree does not have (a fork that grew
    past it, or a different database) is refused, and so is a remembered size beyond the tree."""
    guard_file = tmp_path / f"{TREE}.json"
    size = await _append(db, HeadGuard(guard_file, interval=0), b"x", b"y", b"z")
    real = json.loads(guard_file.read_text())
    forged = {"size": 2, "root": base64.b64encode(b"\x07" * 32).decode()}
    guard_file.write_text(json.dumps(forged))
    with pytest.raises(RollbackDetected, match=r"at size 2 .* holds another history"):
        await _sequencer(db, HeadGuard(guard_file))
    guard_file.write_text(json.dumps({**real, "size": size + 10}))
    with pytest.raises(RollbackDetected, match="rolled back"):
        await _sequencer(db, HeadGuard(guard_file))
    guard_file.write_text("not json")
    with pytest.raises(RollbackDetected, match="not a remembered tree head"):
        await _sequencer(db, HeadGuard(guard_file))
    guard_file.write_text(json.dumps(real))
    assert await _append(db, HeadGuard(guard_file, interval=0), b"w") == size + 1


def test_writes_are_throttled(tmp_path: Path) -> None:
    from services.log.sequencer import TreeHead

    now = [0.0]
    guard = HeadGuard(tmp_path / "h.json", interval=1.0, clock=lambda: now[0])
    guard.record(TreeHead(1, b"\x01" * 32, 0, ""))
    guard.record(TreeHead(2, b"\x02" * 32, 0, ""))  # within the interval: not written
    assert json.loads((tmp_path / "h.json").read_text())["size"] == 1
    now[0] = 1.5
    guard.record(TreeHead(3, b"\x03" * 32, 0, ""))
    assert json.loads((tmp_path / "h.json").read_text())["size"] == 3
