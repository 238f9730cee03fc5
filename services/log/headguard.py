"""A tree head kept outside the database, so that a database rolled back to an older state is
noticed before the log forks.

A restored backup, a replica promoted from a lagging standby or a hand-edited table all look
like a valid, smaller (or differently grown) tree to the sequencer, which would happily append
new entries at the old size: two histories for one origin, each signed by the log. Clients and
witnesses that saw the newer checkpoint would catch it later; the log should catch it first.

``HeadGuard`` remembers, in the data directory, the newest head this log has committed, and at
start-up requires the database's tree to contain it: same root at that size (the database may
be ahead: another replica, or a crash between the commit and this file). Anything else refuses
to start, naming both heads and the file to delete to accept the database as it is.

Crash points: the file is written after the commit returns (never ahead of the database), by a
synced temporary file and a rename (never torn). It is written at most once every
``interval`` seconds, so a rollback by less than that window is not seen; issue 14's witnesses
close that gap from outside.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.errors import OperatorError

if TYPE_CHECKING:
    from services.log.sequencer import Sequencer, TreeHead

__all__ = ["HeadGuard", "RollbackDetected"]


class RollbackDetected(OperatorError):
    """The database's tree does not contain the newest head this log committed."""


@dataclass(frozen=True, slots=True)
class _Remembered:
    size: int
    root: bytes


class HeadGuard:
    """The remembered head of one tree, in ``path`` (JSON, mode 0600)."""

    def __init__(
        self, path: Path, *, interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self._interval = interval
        self._clock = clock
        self._written_at: float | None = None
        self._written_size = -1

    def _read(self) -> _Remembered | None:
        try:
            data = json.loads(self.path.read_text())
            return _Remembered(int(data["size"]), base64.b64decode(data["root"], validate=True))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise RollbackDetected(
                f"{self.path} is not a remembered tree head ({exc}); delete it to start anyway"
            ) from None

    async def check(self, sequencer: Sequencer) -> None:
        """Raise ``RollbackDetected`` unless the sequencer's tree contains the remembered head."""
        remembered = self._read()
        if remembered is None:
            return
        head = sequencer.head
        way_out = (
            f"If the database was restored or replaced on purpose, and clients and witnesses "
            f"never relied on the newer head, delete {self.path} and start again; otherwise "
            f"restore the newer database."
        )
        if head.size < remembered.size:
            raise RollbackDetected(
                f"log {sequencer.origin!r}: the database holds a tree of size {head.size}, but "
                f"this log already committed size {remembered.size} (root "
                f"{remembered.root.hex()}): the database was rolled back, and appending now "
                f"would fork the log. {way_out}"
            )
        root = (
            head.root
            if head.size == remembered.size
            else await sequencer.proofs.root(remembered.size)
        )
        if root != remembered.root:
            raise RollbackDetected(
                f"log {sequencer.origin!r}: at size {remembered.size} the database's tree has root "
                f"{root.hex()}, but this log committed root {remembered.root.hex()} there: it "
                f"holds another history. {way_out}"
            )
        self._write(head)

    def record(self, head: TreeHead) -> None:
        """Remember ``head`` (called after each commit; throttled to one write per interval)."""
        now = self._clock()
        if head.size <= self._written_size:
            return
        if self._written_at is not None and now - self._written_at < self._interval:
            return
        self._write(head)
        self._written_at = now

    def _write(self, head: TreeHead) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        data = json.dumps({"size": head.size, "root": base64.b64encode(head.root).decode()})
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._written_size = head.size
