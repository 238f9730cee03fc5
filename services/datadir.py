"""The data directory: checked before anything is written, and claimed by every server using it.

A claim is a set of ``flock`` locks, which the kernel drops when the process ends however it
ends (exit, crash, ``kill -9``), so a claim never outlives its server and never needs cleaning up:

- ``server.lock``: ``sigstead up`` holds it exclusively, as the directory's one owner. The
  processes of the production layout (``sigstead serve log|ca|tsa|trust``, log replicas
  included) share it: they run on one directory by design, and none of them may run beside an
  ``up``.
- ``tuf/publisher.lock``: held exclusively by whoever publishes the trust documents (``up``,
  ``serve trust``, ``trust publish``, an export that makes the first publication): one publisher
  means one public URL in the TUF repository, never two taking turns. It lives beside the
  repository, so it is shared wherever the repository is (compose.yaml's trust container
  mounts only ``tuf/``).
- ``servers/<host>-<pid>-<random>.json``: each claimant's record (command, pid, host, URL, start
  time), under an exclusive lock of its own while the claimant lives. A refused start names the
  claimants whose records it cannot lock; a record it can lock is a dead process's, and goes.

The lock files stay in place (removing one would let two processes lock two different files).
A worker process forked by a claimant inherits the locks; the claim ends with the last of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from services.errors import OperatorError

__all__ = ["Claim", "DataDirError", "InUseError", "Owner", "check", "claim", "owners"]

SERVER_LOCK = "server.lock"
PUBLISHER_LOCK = Path("tuf") / "publisher.lock"
OWNERS_DIR = "servers"


class DataDirError(OperatorError):
    """The data directory cannot be used: not a directory, no parent, not writable."""


class InUseError(DataDirError):
    """Another process holds the data directory (or its publisher role)."""


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a claim: what an operator needs to find the process."""

    command: str
    pid: int
    host: str
    url: str | None
    since: str
    publisher: bool

    def __str__(self) -> str:
        url = f", {self.url}" if self.url else ""
        return f"`sigstead {self.command}` (pid {self.pid} on {self.host}{url}, since {self.since})"


def check(data_dir: Path) -> None:
    """Raise ``DataDirError`` unless ``data_dir`` is, or can be made, a writable directory.

    Its parent must exist: a mistyped path is an error, not a new tree of directories.
    """
    try:
        mode = data_dir.stat().st_mode
    except FileNotFoundError:
        parent = data_dir.absolute().parent
        if not parent.is_dir():
            raise DataDirError(
                f"data directory {data_dir}: {parent} does not exist (create it, or check "
                "--data-dir)"
            ) from None
        if not os.access(parent, os.W_OK | os.X_OK):
            raise DataDirError(
                f"data directory {data_dir} cannot be created: {parent} is not writable by this "
                "user"
            ) from None
        return
    except NotADirectoryError:
        raise DataDirError(f"data directory {data_dir}: part of the path is a file") from None
    except PermissionError:
        raise DataDirError(f"data directory {data_dir}: permission denied") from None
    if not stat.S_ISDIR(mode):
        raise DataDirError(f"data directory {data_dir} is a file, not a directory")
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise DataDirError(f"data directory {data_dir} is not writable by this user")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _try_lock(fh: IO[bytes], operation: int) -> bool:
    try:
        fcntl.flock(fh, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def owners(data_dir: Path) -> list[Owner]:
    """The live claimants of ``data_dir``; records of dead processes are removed on the way."""
    found = []
    directory = data_dir / OWNERS_DIR
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            continue  # its claimant just ended
        with fh:
            if _try_lock(fh, fcntl.LOCK_SH):
                # Nobody holds it: its process is gone.
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            try:
                found.append(Owner(**json.loads(fh.read())))
            except (ValueError, TypeError):
                continue  # a record being written; its claimant is still starting
    return sorted(found, key=lambda o: (o.since, o.command, o.pid))


class Claim:
    """A held claim on a data directory; ``release`` (or process exit) gives it up."""

    def __init__(self, files: list[IO[bytes]], record: Path) -> None:
        self._files = files
        self.record = record

    def detach(self) -> None:
        """Close this process's copies of the locks, leaving the claim to the process that
        made it: a forked worker, which must not keep its parent's claim alive after the
        parent ends (flock belongs to the open file, shared across fork)."""
        for fh in self._files:
            fh.close()
        self._files = []

    def release(self) -> None:
        """Give the claim up: remove the record, then drop the locks."""
        with contextlib.suppress(OSError):
            self.record.unlink()
        for fh in reversed(self._files):
            fh.close()
        self._files = []


def _refusal(data_dir: Path, holders: list[Owner], role: str, advice: str) -> InUseError:
    if not holders:
        # Its record is elsewhere (a container with its own view of the data directory) or not
        # written yet (a start under way).
        names = "another sigstead process (in another container, or just starting)"
    else:
        names = "; ".join(str(o) for o in holders)
    return InUseError(f"{data_dir} is {role} {names}: {advice}")


def claim(
    data_dir: Path,
    *,
    command: str,
    url: str | None = None,
    exclusive: bool,
    publisher: bool,
) -> Claim:
    """Claim ``data_dir`` (created 0700 if missing); raise ``InUseError`` naming the holders.

    ``exclusive``: the directory's one owner (``sigstead up``), else a sharer (``serve``);
    ``publisher``: the one process that publishes the trust documents.
    """
    check(data_dir)
    data_dir.mkdir(mode=0o700, exist_ok=True)
    files: list[IO[bytes]] = []
    try:
        server = (data_dir / SERVER_LOCK).open("ab")
        files.append(server)
        if not _try_lock(server, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH):
            holders = owners(data_dir)
            if exclusive:
                advice = "stop it first, or give another --data-dir"
            else:
                holders = [o for o in holders if o.command == "up"] or holders
                advice = "`sigstead up` owns its data directory alone; stop it first"
            raise _refusal(data_dir, holders, "in use by", advice)
        if publisher:
            (data_dir / PUBLISHER_LOCK).parent.mkdir(mode=0o700, exist_ok=True)
            publishing = (data_dir / PUBLISHER_LOCK).open("ab")
            files.append(publishing)
            if not _try_lock(publishing, fcntl.LOCK_EX):
                holders = [o for o in owners(data_dir) if o.publisher]
                raise _refusal(
                    data_dir,
                    holders,
                    "published by",
                    "one process publishes the trust documents of a data directory; stop it first",
                )
        directory = data_dir / OWNERS_DIR
        directory.mkdir(mode=0o700, exist_ok=True)
        host = socket.gethostname()
        # The random part: containers sharing a volume may have equal host names and pids.
        record = directory / f"{host}-{os.getpid()}-{secrets.token_hex(4)}.json"
        owner = Owner(command, os.getpid(), host, url, _now(), publisher)
        # Locked and written under another name, then renamed: a record that ``owners`` can see
        # is always locked and complete, so it is never taken for a dead process's.
        staging = record.with_suffix(".tmp")
        mine = os.fdopen(os.open(staging, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644), "r+b")
        files.append(mine)
        fcntl.flock(mine, fcntl.LOCK_EX)
        mine.write(json.dumps(asdict(owner)).encode())
        mine.flush()
        staging.rename(record)
        owners(data_dir)  # and the records of processes that died go
    except BaseException:
        for fh in reversed(files):
            fh.close()
        raise
    return Claim(files, record)


@contextlib.contextmanager
def claimed(
    data_dir: Path, *, command: str, url: str | None = None, exclusive: bool, publisher: bool
) -> Iterator[Claim]:
    """``claim`` for the length of a ``with`` block."""
    held = claim(data_dir, command=command, url=url, exclusive=exclusive, publisher=publisher)
    try:
        yield held
    finally:
        held.release()
