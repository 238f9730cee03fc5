"""What one request may cost before sigstead spends memory or event-loop time on it.

Every limit here exists because a single client once hurt every other client of a server
without them (issue 10): a 32 MiB body of nested empty lists took a server from 107 MB to
3.6 GB and stalled the event loop for 22 s; a body trickled a byte at a time held a
connection for ever. ``body_guard`` is the one place that reads request bodies: it fixes a
limit per endpoint that fits what the endpoint takes, refuses compressed bodies, gives the
whole body a deadline, and keeps the bodies of all requests in flight under one budget.
``parse_json`` then bounds what parsing may build. ``docs/limits.md`` lists every limit with
its status code.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = [
    "BodyLimits",
    "JSONTooComplex",
    "body_guard",
    "check_json_shape",
    "parse_json",
    "parse_json_async",
]

KiB = 1024
MiB = 1024 * KiB

# (path prefix, bytes): the first prefix that matches decides. Sized to the largest honest
# request with room to spare: a Rekor entry carries an artifact's signature and key or a DSSE
# envelope (rekor's own default is 32 MiB for whole artifacts, which sigstead does not take:
# hashedrekord and dsse carry digests); a search is a handful of hashes; a certificate request
# is a token and a key; a CT chain is at most ``MAX_CT_CHAIN`` certificates.
ENDPOINTS: tuple[tuple[str, int], ...] = (
    ("/api/v1/log/entries/retrieve", 64 * KiB),
    ("/api/v1/log/entries", -1),  # --max-body
    ("/api/v2/log/entries", -1),  # Rekor v2: rekor-tiles' default is 4 MiB too
    ("/api/v1/index/retrieve", 64 * KiB),
    ("/api/v2/index/retrieve", 64 * KiB),
    ("/api/v1/signingCert", 64 * KiB),
    ("/api/v2/signingCert", 64 * KiB),
    ("/ct/v1/", 512 * KiB),
    ("/api/v1/timestamp", 1 * MiB),
)
# Anything else that takes a body (nothing today) gets the smallest limit.
DEFAULT_LIMIT = 64 * KiB
# A body larger than this is parsed in a worker thread, off the event loop.
OFF_LOOP_PARSE = 64 * KiB
# JSON shape limits: no honest request here nests deeper than 10 or holds more than a few
# dozen arrays and objects (in-toto statements are inside base64, parsed separately).
MAX_DEPTH = 64
MAX_CONTAINERS = 10_000
MAX_CT_CHAIN = 10


class JSONTooComplex(ValueError):
    """A JSON text nests deeper or holds more arrays and objects than a request may."""


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """The server-wide knobs: ``max_body`` is the Rekor entry limit (``--max-body``), the
    only endpoint whose honest bodies grow with what users sign (DSSE envelopes)."""

    max_body: int = 4 * MiB
    deadline: float = 30.0
    budget: int = 256 * MiB

    def for_path(self, path: str) -> int:
        for prefix, limit in ENDPOINTS:
            if path.startswith(prefix):
                return self.max_body if limit < 0 else limit
        return DEFAULT_LIMIT


def _render_error(request: web.Request, status: int, message: str) -> web.StreamResponse:
    """The refusal in the wire format of the endpoint's own errors."""
    if request.path.startswith("/ct/"):
        # ctfe's http.Error: plain text.
        return web.Response(status=status, text=f"{message}\n")
    # Rekor, Fulcio (grpc-gateway) and timestamp-authority all answer {code, message}.
    return web.json_response({"code": status, "message": message}, status=status)


class _Budget:
    """Bytes of request bodies held in memory across all requests in flight."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


def body_guard(limits: BodyLimits) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware reading every request body under ``limits`` before a handler sees it.

    The handler gets a request whose body is already buffered (``await request.read()``
    returns it at once). Invariant: a body is in memory only while its reservation is held,
    so the bodies of all requests in flight never exceed ``limits.budget``.
    """
    budget = _Budget(limits.budget)

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.body_exists:
            return await handler(request)
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # A compressed body's size says nothing about what it inflates to; no client of
            # these APIs compresses requests.
            return _render_error(
                request, 415, f"Content-Encoding {encoding[:32]!r} is not accepted"
            )
        limit = limits.for_path(request.path)
        too_large = f"Request Entity Too Large. Limit set to {limit} bytes"
        declared = request.content_length
        if declared is not None and declared > limit:
            return _render_error(request, 413, too_large)
        reserved = declared if declared is not None else limit
        if not budget.take(reserved):
            return _render_error(request, 503, "too many request bodies in flight; retry shortly")
        try:
            limited = request.clone(client_max_size=limit)
            try:
                if request.content.is_eof():
                    # Already all here (most bodies arrive with their headers): no deadline to
                    # arm and cancel, which is a timer on the loop for every request.
                    await limited.read()
                else:
                    async with asyncio.timeout(limits.deadline):
                        await limited.read()
            except TimeoutError:
                return _render_error(
                    request, 408, f"request body not received within {limits.deadline:g} s"
                )
            except web.HTTPRequestEntityTooLarge:
                return _render_error(request, 413, too_large)
            return await handler(limited)
        finally:
            budget.give(reserved)

    return middleware


def check_json_shape(text: str | bytes) -> None:
    """Refuse, before parsing, a JSON text with more than ``MAX_CONTAINERS`` arrays and objects:
    a body of nothing but empty arrays costs 56 bytes of memory per two bytes of input (issue
    10: 32 MiB of them took a server to 3.6 GB)."""
    # str/bytes.count runs in C at memory speed; brackets inside strings are counted too,
    # which only makes the cap stricter, and honest bodies carry binary parts in base64.
    if isinstance(text, bytes):
        count = text.count(b"[") + text.count(b"{")
    else:
        count = text.count("[") + text.count("{")
    if count > MAX_CONTAINERS:
        raise JSONTooComplex(f"more than {MAX_CONTAINERS} JSON arrays and objects")


def _check_depth(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise JSONTooComplex(f"JSON nested deeper than {MAX_DEPTH}")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def parse_json(raw: bytes) -> Any:
    """``json.loads`` with the shape limits; raises ``ValueError`` (``JSONTooComplex`` for the
    limits, ``json.JSONDecodeError``/``UnicodeDecodeError`` for bad text)."""
    check_json_shape(raw)
    try:
        value = json.loads(raw)
    except RecursionError:
        raise JSONTooComplex(f"JSON nested deeper than {MAX_DEPTH}") from None
    _check_depth(value)
    return value


async def parse_json_async(raw: bytes) -> Any:
    """``parse_json``, in a worker thread when the body is large enough to stall the loop."""
    if len(raw) <= OFF_LOOP_PARSE:
        return parse_json(raw)
    return await asyncio.get_running_loop().run_in_executor(None, parse_json, raw)
