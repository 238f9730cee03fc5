"""``backup``: an online, consistent copy that is itself a data directory, or nothing at all."""

from __future__ import annotations

import asyncio
import datetime
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from services.backup import KEY_DIRECTORIES, Backup, BackupError, backup
from services.db import Database, sqlite_url
from services.log import merkle
from services.log.checkpoint import CheckpointSigner
from services.log.sequencer import Genesis, Sequencer
from services.log.sqlstore import SQLLogStore
from services.migrate import upgrade
from services.trust.material import ensure_keys
from services.trust.publish import TrustOptions, publish, tuf_repository

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
TREE = 42
_KEY = ec.generate_private_key(ec.SECP256R1())


def _sequencer(db: Database) -> Sequencer:
    return Sequencer(
        SQLLogStore(db),
        tree_id=TREE,
        origin=f"log.example - {TREE}",
        signer=CheckpointSigner("log.example", _KEY),
        genesis=lambda _now: Genesis(b"the backed-up tree's genesis leaf"),
        batch_max_size=8,
        batch_max_age=0.001,
    )


def _tree(database: Path) -> tuple[int, bytes, list[bytes]]:
    """The stored head (size, root) and every leaf of the tree, read with plain sqlite3."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        size, root = conn.execute(
            "SELECT size, root FROM tree_heads WHERE tree_id = ?", (TREE,)
        ).fetchone()
        leaves = [
            r[0]
            for r in conn.execute(
                "SELECT leaf FROM entries WHERE tree_id = ? ORDER BY idx", (TREE,)
            )
        ]
    return size, root, leaves


def _state(directory: Path) -> dict[Path, tuple[bytes, int, int]]:
    """Every file's bytes, mode and modification time (what a restore must get back)."""
    return {
        p.relative_to(directory): (p.read_bytes(), p.stat().st_mode, p.stat().st_mtime_ns)
        for p in directory.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def _check_copy(data: Path, out: Path, made: Backup) -> int:
    """The copy's tree is a whole number of committed batches, head and leaves agreeing, and
    every key and the TUF repository are there with bytes, modes and times; return its size."""
    size, root, leaves = _tree(out / "sigstead.db")
    assert len(leaves) == size
    assert merkle.root([merkle.hash_leaf(leaf) for leaf in leaves]) == root
    assert made.trees == ((f"log.example - {TREE}", size),)
    assert not (out / "sigstead.db-wal").exists()
    assert {k: v for k, v in _state(out).items() if k != Path("sigstead.db")} == {
        k: v for k, v in _state(data).items() if k.parts[0] in KEY_DIRECTORIES
    }
    assert sorted(p.relative_to(out) for p in made.files) == sorted(
        k for k in _state(data) if k.parts[0] in KEY_DIRECTORIES
    )
    assert out.stat().st_mode & 0o777 == 0o700
    # No lock, no temporaries, no staging directory left beside it.
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []
    return size


async def test_an_online_backup_is_a_consistent_data_directory_that_continues(
    tmp_path: Path,
) -> None:
    data, out = tmp_path / "data", tmp_path / "backup"
    ensure_keys(data, NOW)
    publish(data, TrustOptions("https://sigstore.corp.example"), NOW, create_keys=False)
    db = Database(sqlite_url(data / "sigstead.db"))
    await upgrade(db)
    seq = _sequencer(db)
    await seq.start()

    underway = asyncio.Event()

    async def write(first: int, count: int) -> None:
        for start in range(first, first + count, 8):
            await asyncio.gather(*(seq.submit(b"entry %d" % i) for i in range(start, start + 8)))
            if start >= 300:
                underway.set()

    try:
        await write(0, 200)
        writer = asyncio.create_task(write(200, 800))
        # The copy runs while batches keep committing.
        await underway.wait()
        made = await asyncio.to_thread(backup, data, out)
        await writer
    finally:
        await seq.stop()
        await db.dispose()
    size = await asyncio.to_thread(_check_copy, data, out, made)
    assert 300 <= size <= 1000

    # Restored, it is a data directory the log continues from.
    db = Database(sqlite_url(out / "sigstead.db"))
    try:
        await upgrade(db)
        seq = _sequencer(db)
        await seq.start()
        receipt = await seq.submit(b"after the restore")
        assert receipt.index == size
        await seq.stop()
    finally:
        await db.dispose()
    assert tuf_repository(out).published() == tuf_repository(data).published()


def test_postgres_leaves_the_database_to_pg_dump(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ensure_keys(data, NOW)
    (data / "sigstead.db").write_bytes(b"not the deployment's database")
    made = backup(data, tmp_path / "out", database_url="postgresql://sigstead@db/sigstead")
    assert made.database is None
    assert not (tmp_path / "out" / "sigstead.db").exists()
    assert (tmp_path / "out" / "keys" / "rekor.pem").read_bytes() == (
        data / "keys" / "rekor.pem"
    ).read_bytes()


def test_the_tuf_repository_is_copied_between_publications(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ensure_keys(data, NOW)
    publish(data, TrustOptions("https://sigstore.corp.example"), NOW, create_keys=False)
    done = threading.Event()

    def run() -> None:
        backup(data, tmp_path / "out", database_url="postgresql://sigstead@db/sigstead")
        done.set()

    with tuf_repository(data).locked():
        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.3)
        assert not done.is_set(), "the backup copied the repository during a publication"
    thread.join(timeout=10)
    assert done.is_set()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("exists", "out exists: a backup never overwrites one"),
        ("no data", "data: not a data directory"),
        ("no keys", "data holds no keys/: name the data directory the server runs with"),
        ("no database", "data/sigstead.db: no such database"),
        ("open key", "the copy of keys/rekor.pem: "),
        ("bad url", "cannot parse the database URL 'nonsense'"),
    ],
)
def test_refusals_leave_nothing_behind(tmp_path: Path, case: str, message: str) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    url = None
    if case != "no data":
        ensure_keys(data, NOW)
        sqlite3.connect(data / "sigstead.db").close()
    if case == "exists":
        out.mkdir()
    elif case == "no keys":
        shutil.rmtree(data / "keys")
    elif case == "no database":
        (data / "sigstead.db").unlink()
    elif case == "open key":
        (data / "keys" / "rekor.pem").chmod(0o644)
    elif case == "bad url":
        url = "nonsense"
    with pytest.raises(BackupError) as err:
        backup(data, out, database_url=url)
    assert message in str(err.value).replace(str(tmp_path) + "/", "")
    assert out.exists() == (case == "exists")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
