"""The timestamp authority's HTTP API (fulcio.md §7.1).

``create_app`` builds a stand-alone TSA application; ``add_routes`` mounts the same handlers
on another application (``sigstead up`` serves every service on one port), which must then set
``app[TSA]`` and ``app[TSA_CLOCK]`` before serving.

Signing stays on the event loop: a token costs ~70 µs of CPU, of which ~35 µs is the ECDSA
signature, and a thread hop costs about as much while the GIL keeps the work serial anyway
(bench/bench_tsa.py measures both). Scale out with processes instead (``serve tsa --workers``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from aiohttp import web

from services.tsa import keys
from services.tsa.authority import (
    BodyTooLarge,
    SigningFailed,
    TimestampAuthority,
    TSAError,
    UnsupportedMediaType,
    parse_der_request,
    parse_json_request,
)

__all__ = [
    "DER_QUERY",
    "DER_REPLY",
    "MAX_BODY",
    "PEM_CHAIN",
    "TSA",
    "TSA_CLOCK",
    "Clock",
    "add_routes",
    "create_app",
    "serve",
]

_logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
TSA = web.AppKey("tsa", TimestampAuthority)
TSA_CLOCK: web.AppKey[Clock] = web.AppKey("tsa_clock")

MAX_BODY = 1024 * 1024  # timestamp-authority's --max-request-body-size default
_READ_CHUNK = 64 * 1024

DER_QUERY = "application/timestamp-query"
DER_REPLY = "application/timestamp-reply"
PEM_CHAIN = "application/pem-certificate-chain"


def _error(exc: TSAError) -> web.Response:
    return web.json_response(exc.to_json(), status=exc.status)


async def _read_body(request: web.Request, max_body: int) -> bytes:
    """The whole body, refusing more than ``max_body`` bytes before buffering them.

    Behind ``services.limits.body_guard`` (``sigstead up``) the body is already buffered
    under the TSA's limit and this returns it; stand-alone, aiohttp's ``client_max_size``
    (set to ``max_body``) stops a chunked body while it is read."""
    if request.content_length is not None and request.content_length > max_body:
        raise BodyTooLarge(f"Content-Length {request.content_length} > {max_body}")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"more than {max_body} bytes") from None
    if len(body) > max_body:
        raise BodyTooLarge(f"more than {max_body} bytes")
    return body


def _timestamp_handler(max_body: int) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def timestamp(request: web.Request) -> web.Response:
        """POST /api/v1/timestamp: a DER or JSON request in, a DER TimeStampResp out."""
        try:
            ctype = request.content_type
            if ctype not in (DER_QUERY, "application/json"):
                raise UnsupportedMediaType(
                    message=f'unsupported media type "{ctype[:64]}", '
                    f"only [application/json {DER_QUERY}] are allowed"
                )
            body = await _read_body(request, max_body)
            parsed = parse_der_request(body) if ctype == DER_QUERY else parse_json_request(body)
            tsa = request.app[TSA]
            der = tsa.stamp(parsed, request.app[TSA_CLOCK]())
            if (metrics := request.app.get(TSA_ISSUED)) is not None:
                metrics.inc()
        except SigningFailed as exc:
            _logger.error("timestamp signing failed: %s", exc.detail)
            return _error(exc)
        except TSAError as exc:
            # Client mistakes are routine: DEBUG, no stack trace.
            _logger.debug("timestamp request refused (%d): %s", exc.status, exc)
            return _error(exc)
        except Exception:
            # Still a JSON error, and the service keeps serving; the trace is for the operator.
            _logger.exception("timestamp request failed unexpectedly")
            return _error(SigningFailed())
        return web.Response(body=der, content_type=DER_REPLY, headers={"Cache-Control": "no-cache"})

    return timestamp


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


TSA_ISSUED: web.AppKey[_Counter] = web.AppKey("tsa_issued")
"""A counter of timestamps signed (``sigstead up`` and ``serve tsa`` set the Prometheus one)."""


async def certchain(request: web.Request) -> web.Response:
    """GET /api/v1/timestamp/certchain: the PEM chain, TSA leaf first, root last."""
    return web.Response(
        body=keys.pem_chain(request.app[TSA].chain),
        content_type=PEM_CHAIN,
        headers={"Cache-Control": "max-age=86400, immutable"},
    )


async def ping(request: web.Request) -> web.Response:
    """GET /ping: timestamp-authority's heartbeat."""
    return web.Response(text="pong")


def add_routes(app: web.Application, *, max_body: int = MAX_BODY) -> None:
    """Mount the TSA's endpoints on ``app``; ``app[TSA]`` and ``app[TSA_CLOCK]`` must be set
    before the first request (a cleanup context may set them at start-up).
    """
    app.router.add_post("/api/v1/timestamp", _timestamp_handler(max_body))
    app.router.add_get("/api/v1/timestamp/certchain", certchain)


def create_app(
    authority: TimestampAuthority, *, clock: Clock, max_body: int = MAX_BODY
) -> web.Application:
    """A stand-alone TSA application; ``clock`` supplies each token's time (timezone-aware)."""
    # The handler reads the body itself; client_max_size only bounds aiohttp's own buffering.
    app = web.Application(client_max_size=max_body)
    app[TSA] = authority
    app[TSA_CLOCK] = clock
    add_routes(app, max_body=max_body)
    app.router.add_get("/ping", ping)
    return app


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def serve(
    data_dir: Path,
    host: str,
    port: int,
    *,
    clock: Clock = _utc_now,
    started: asyncio.Event | None = None,
) -> None:
    """Serve the TSA on ``host:port`` until cancelled, keys from ``data_dir/tsa`` (made on
    first start). ``started`` is set once the socket listens.
    """
    key, chain = keys.load_or_create(data_dir / "tsa", clock())
    app = create_app(TimestampAuthority(key, chain), clock=clock)
    # auto_decompress off: a compressed body is refused, never inflated past the limit.
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        _logger.info("TSA listening on http://%s:%d/api/v1/timestamp", host, port)
        if started is not None:
            started.set()
        await asyncio.Event().wait()  # until cancelled
    finally:
        await runner.cleanup()
