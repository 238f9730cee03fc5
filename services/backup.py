"""``sigstead backup``: an online copy of a deployment that is itself a data directory.

What is copied: every key (``keys/``, ``ca/``, ``tsa/``), the TUF repository with its keys
(``tuf/``), and the SQLite database when the deployment uses one, taken with SQLite's online
backup API while the server runs. A PostgreSQL database is ``pg_dump``'s to copy
(docs/deploy.md); the files are copied all the same.

Order: the database first, then the files. Keys are made before anything is signed with them and
are never deleted, so every key the database snapshot depends on is already on disk when the
files are copied; the other order could miss a key made in between (a first start) and leave a
database whose log no key in the backup can continue. The TUF repository is copied under its
publishers' lock, so it is never caught half re-signed.

The result is written under a temporary name and renamed into place once complete and checked
(every private key loads, the database passes ``quick_check``): a backup that exists is whole.
Restoring is ``cp -a BACKUP NEW_DATA_DIR`` (and ``pg_restore`` for PostgreSQL).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from services.db import sqlite_url
from services.keys import KeyFileError, load_private_key
from services.trust.tuf import TufRepository

__all__ = ["DATABASE_FILE", "KEY_DIRECTORIES", "Backup", "BackupError", "backup"]

# What a data directory holds besides the database; anything else in it (locks, temporaries,
# a first start's staging directories) is not state.
KEY_DIRECTORIES = ("keys", "ca", "tsa", "tuf")
# Where ``sigstead up`` looks for its SQLite database by default.
DATABASE_FILE = "sigstead.db"


class BackupError(Exception):
    """The backup cannot be made; nothing was left at the destination."""


@dataclass(frozen=True, slots=True)
class Backup:
    """What one backup holds."""

    path: Path
    files: tuple[Path, ...]
    database: Path | None
    # (origin, size) of every log tree in the copied SQLite database.
    trees: tuple[tuple[str, int], ...] = field(default=())


def _sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite URL; ``None`` for another database (PostgreSQL: ``pg_dump``)."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise BackupError(f"cannot parse the database URL {database_url!r}") from None
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        raise BackupError(f"{database_url}: not a SQLite file")
    return Path(url.database)


def _copy_sqlite(source: Path, target: Path) -> tuple[tuple[str, int], ...]:
    """Copy a live SQLite database with the online backup API; return its trees' sizes."""
    if not source.is_file():
        raise BackupError(f"{source}: no such database")
    try:
        # mode=rw: never create an empty database where the real one was expected.
        source_conn = sqlite3.connect(f"file:{source}?mode=rw", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise BackupError(f"{source}: {exc}") from None
    with closing(source_conn) as src, closing(sqlite3.connect(target)) as dst:
        # One step (pages=-1): a single read transaction, so the copy is one consistent
        # snapshot; in WAL mode the server's writers carry on meanwhile.
        try:
            src.backup(dst)
        except sqlite3.Error as exc:
            raise BackupError(f"{source}: {exc}") from None
        # A single file without a -wal beside it; the server switches back to WAL on open.
        dst.execute("PRAGMA journal_mode=DELETE")
        (check,) = dst.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise BackupError(f"{source}: the copy fails quick_check: {check}")
        try:
            rows = dst.execute("SELECT origin, size FROM tree_heads ORDER BY origin").fetchall()
        except sqlite3.OperationalError:
            rows = []  # a database that was never migrated has no trees yet
    return tuple((str(origin), int(size)) for origin, size in rows)


def _files(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        # Locks, temporaries (.name.tmp) and staging directories of an interrupted first start.
        if not any(part.startswith(".") for part in relative.parts) and path.is_file():
            yield path


def _copy_tree(source: Path, target: Path) -> list[Path]:
    """Copy ``source``'s files with their modes and times (a log key's file time is published)."""
    copied = []
    for path in _files(source):
        to = target / path.relative_to(source)
        to.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy2(path, to)
        copied.append(to)
    return copied


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_private_key(path: Path) -> bool:
    with open(path, "rb") as fh:
        return b"PRIVATE KEY-----" in fh.read(64)


def backup(data_dir: Path, out: Path, *, database_url: str | None = None) -> Backup:
    """Copy the deployment whose data directory is ``data_dir`` into the new directory ``out``.

    ``database_url`` is the server's (default: SQLite in the data directory); a database that
    is not SQLite is left to ``pg_dump``. Raises ``BackupError`` and leaves nothing at ``out``
    if the copy cannot be made whole.
    """
    if out.exists() or out.is_symlink():
        raise BackupError(f"{out} exists: a backup never overwrites one")
    if not data_dir.is_dir():
        raise BackupError(f"{data_dir}: not a data directory")
    present = [name for name in KEY_DIRECTORIES if (data_dir / name).is_dir()]
    if "keys" not in present:
        raise BackupError(
            f"{data_dir} holds no keys/: name the data directory the server runs with"
        )
    database = _sqlite_path(database_url or sqlite_url(data_dir / DATABASE_FILE))
    if not out.parent.is_dir():
        raise BackupError(f"{out.parent}: no such directory")
    staging = out.parent / f".{out.name}.partial-{secrets.token_hex(8)}"
    staging.mkdir(mode=0o700)
    try:
        trees: tuple[tuple[str, int], ...] = ()
        if database is not None:
            trees = _copy_sqlite(database, staging / DATABASE_FILE)
        files: list[Path] = []
        for name in present:
            if name == "tuf":
                # The repository and its keys as one publication: the publishers wait meanwhile.
                with TufRepository(data_dir / name).locked():
                    files += _copy_tree(data_dir / name, staging / name)
            else:
                files += _copy_tree(data_dir / name, staging / name)
        for path in files:
            if _is_private_key(path):
                try:
                    load_private_key(path)
                except KeyFileError as exc:
                    raise BackupError(f"the copy of {path.relative_to(staging)}: {exc}") from None
        synced = [*files, *([staging / DATABASE_FILE] if database is not None else [])]
        for path in synced:
            _fsync(path)
        for directory in sorted({p.parent for p in synced} | {staging}, reverse=True):
            _fsync(directory)
        # Complete and checked: from here on the backup exists whole, or not at all.
        staging.rename(out)
        _fsync(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Backup(
        path=out,
        files=tuple(out / p.relative_to(staging) for p in files),
        database=out / DATABASE_FILE if database is not None else None,
        trees=trees,
    )
