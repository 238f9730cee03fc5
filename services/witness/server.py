"""``sigstead witness serve``: the witness app on its state directory and logs file."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from aiohttp import web

from services.db import Database
from services.errors import OperatorError
from services.witness.app import create_witness_app
from services.witness.note import NoteError
from services.witness.state import WitnessStore
from services.witness.statedir import database_url, load_cosigner
from services.witness.witness import Witness, load_logs

__all__ = ["LogsFileError", "read_logs", "serve"]

_logger = logging.getLogger("sigstead.witness")


class LogsFileError(OperatorError):
    """The file of trusted logs cannot be read or holds a bad line."""


def read_logs(path: Path) -> dict[str, tuple[str, ...]]:
    """The logs file at ``path`` (origin → vkeys); see ``load_logs`` for its lines."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LogsFileError(f"{path}: {exc}") from None
    try:
        logs = load_logs(lines)
    except NoteError as exc:
        raise LogsFileError(f"{path}: {exc}") from None
    if not logs:
        raise LogsFileError(f"{path}: no logs (one '<vkey> [<origin>]' a line)")
    return logs


def serve(
    state_dir: Path, logs_file: Path, sockets: list[socket.socket], *, access_log: bool
) -> None:
    """Run the witness on ``sockets`` until SIGINT/SIGTERM."""
    cosigner = load_cosigner(state_dir)
    logs = read_logs(logs_file)
    db = Database(database_url(state_dir))
    witness = Witness(WitnessStore(db), cosigner)
    app = create_witness_app(witness)
    where = state_dir.absolute()
    listen = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in sockets)

    async def start(_app: web.Application) -> None:
        await witness.store.create()
        await witness.configure(logs)
        _logger.info(
            "witness %s: cosigning %d logs (%s), listening on %s; state directory %s",
            cosigner.vkey,
            len(logs),
            ", ".join(repr(origin) for origin in logs),
            listen,
            where,
        )

    async def stop(_app: web.Application) -> None:
        await db.dispose()
        _logger.info("witness %s: stopped", cosigner.name)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    web.run_app(
        app,
        sock=sockets,
        print=None,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
    )
