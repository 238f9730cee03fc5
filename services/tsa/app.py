"""The timestamp authority's HTTP API (fulcio.md §7.1), mountable on any aiohttp application."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from services.tsa.authority import (
    BadRequest,
    TimestampAuthority,
    TSAError,
    parse_der_request,
    parse_json_request,
)

__all__ = ["TSA", "TSA_CLOCK", "add_routes"]

_logger = logging.getLogger(__name__)

TSA = web.AppKey("tsa", TimestampAuthority)
Clock = Callable[[], datetime]
TSA_CLOCK: web.AppKey[Clock] = web.AppKey("tsa_clock")

MAX_BODY = 1024 * 1024


class _UnsupportedMediaType(TSAError):
    status = 415


def _error(exc: TSAError) -> web.Response:
    return web.Response(
        text=json.dumps(exc.to_json()) + "\n", status=exc.status, content_type="application/json"
    )


async def timestamp(request: web.Request) -> web.Response:
    """POST /api/v1/timestamp: DER or JSON request in, DER TimeStampResp out."""
    try:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response(
                {"code": 413, "message": "timestamp request is too large"}, status=413
            )
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return web.json_response(
                {"code": 413, "message": "timestamp request is too large"}, status=413
            )
        ctype = request.content_type
        if ctype == "application/timestamp-query":
            parsed = parse_der_request(body)
        elif ctype == "application/json":
            parsed = parse_json_request(body)
        else:
            raise _UnsupportedMediaType(f"unsupported content type {ctype!r}")
        tsa = request.app[TSA]
        der = tsa.stamp(parsed, request.app[TSA_CLOCK]())
    except TSAError as exc:
        _logger.debug("timestamp request refused: %s", exc.message)
        return _error(exc)
    return web.Response(
        body=der,
        content_type="application/timestamp-reply",
        headers={"Cache-Control": "no-cache"},
    )


async def certchain(request: web.Request) -> web.Response:
    """GET /api/v1/timestamp/certchain: PEM chain, TSA leaf first, root last."""
    chain = request.app[TSA].chain
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    return web.Response(
        body=pem,
        content_type="application/pem-certificate-chain",
        headers={"Cache-Control": "max-age=86400, immutable"},
    )


def add_routes(app: web.Application) -> None:
    """Mount the TSA on ``app``; ``app[TSA]`` and ``app[TSA_CLOCK]`` are set at start-up."""
    app.router.add_post("/api/v1/timestamp", timestamp)
    app.router.add_get("/api/v1/timestamp/certchain", certchain)


__all__ += ["BadRequest"]
