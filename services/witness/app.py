"""The witness over HTTP (c2sp.org/tlog-witness): ``POST /add-checkpoint`` and, for monitors,
``GET /<hex SHA-256 of the origin>/checkpoint``.

Answers are ``text/plain`` lines: the cosignature on 200, the witness's size on 409 (as
``text/x.tlog.size``, which clients parse), and otherwise one line saying why.

The clock is the one thing the handler reads from the outside world; it is an argument, so the
security code below it never reads the time itself.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from aiohttp import web

from services.witness.state import SizeConflict
from services.witness.witness import Witness, WitnessError

__all__ = ["MAX_BODY", "WITNESS", "create_witness_app"]

_logger = logging.getLogger(__name__)

WITNESS: web.AppKey[Witness] = web.AppKey("witness", Witness)
_CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("witness_clock")

# 63 proof lines and a checkpoint with dozens of ML-DSA cosignatures (3.3 kB each in base64) fit.
MAX_BODY = 256 * 1024
_ORIGIN_HASH = re.compile(r"[0-9a-f]{64}")


def _text(body: str, status: int, content_type: str = "text/plain") -> web.Response:
    return web.Response(text=body, status=status, content_type=content_type, charset="utf-8")


async def add_checkpoint(request: web.Request) -> web.Response:
    """POST /add-checkpoint."""
    witness = request.app[WITNESS]
    body = await request.read()
    now = int(request.app[_CLOCK]())
    try:
        line = await witness.add_checkpoint(body, now)
    except SizeConflict as exc:
        return web.Response(text=f"{exc.size}\n", status=409, content_type="text/x.tlog.size")
    except WitnessError as exc:
        return _text(f"{exc}\n", exc.status)
    return _text(line, 200)


async def checkpoint(request: web.Request) -> web.Response:
    """GET /<origin hash>/checkpoint: the latest checkpoint this witness cosigned."""
    hashed = request.match_info["origin_hash"]
    note = None
    if _ORIGIN_HASH.fullmatch(hashed):
        note = await request.app[WITNESS].store.latest_checkpoint(hashed)
    if note is None:
        return _text("no checkpoint cosigned for this log\n", 404)
    return _text(note, 200)


def create_witness_app(witness: Witness, clock: Callable[[], float] = time.time) -> web.Application:
    """The witness's aiohttp application."""
    app = web.Application(client_max_size=MAX_BODY)
    app[WITNESS] = witness
    app[_CLOCK] = clock
    app.router.add_post("/add-checkpoint", add_checkpoint)
    app.router.add_get("/{origin_hash}/checkpoint", checkpoint)
    return app
