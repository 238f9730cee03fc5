"""services/limits.py: per-endpoint body limits, encodings, the body deadline, the in-flight
budget and JSON shape limits, through a real aiohttp server."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.limits import (
    MAX_CONTAINERS,
    MAX_DEPTH,
    BodyLimits,
    JSONTooComplex,
    body_guard,
    parse_json,
)


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"got": len(await request.read())})


def app(limits: BodyLimits) -> web.Application:
    a = web.Application(middlewares=[body_guard(limits)])
    for path in ("/api/v1/log/entries", "/api/v1/index/retrieve", "/ct/v1/add-chain", "/other"):
        a.router.add_post(path, echo)
    return a


async def test_each_endpoint_has_its_own_limit(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app(BodyLimits(max_body=200_000)))
    ok = await client.post("/api/v1/log/entries", data=b"x" * 200_000)
    assert (ok.status, await ok.json()) == (200, {"got": 200_000})
    big = await client.post("/api/v1/log/entries", data=b"x" * 200_001)
    assert big.status == 413
    assert (await big.json())["code"] == 413
    search = await client.post("/api/v1/index/retrieve", data=b"x" * (64 * 1024 + 1))
    assert search.status == 413
    ct = await client.post("/ct/v1/add-chain", data=b"x" * (512 * 1024 + 1))
    # CT answers in ctfe's plain-text format.
    assert ct.status == 413
    assert (await ct.text()).startswith("Request Entity Too Large")

    async def chunked() -> Any:
        for _ in range(100):
            yield b"x" * 1024

    streamed = await client.post("/other", data=chunked())
    assert streamed.status == 413


async def test_compressed_bodies_are_refused(unused_tcp_port: int) -> None:
    # Served as ``sigstead up`` serves (services/cli.py): aiohttp's own inflation off.
    runner = web.AppRunner(app(BodyLimits()), auto_decompress=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        async with aiohttp.ClientSession() as session:
            for encoding in ("gzip", "deflate", "br"):
                async with session.post(
                    f"http://127.0.0.1:{unused_tcp_port}/api/v1/log/entries",
                    data=b"\x1f\x8b garbage",
                    headers={"Content-Encoding": encoding},
                ) as resp:
                    assert resp.status == 415, encoding
                    assert "Content-Encoding" in (await resp.json())["message"]
    finally:
        await runner.cleanup()


async def test_a_trickled_body_times_out(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app(BodyLimits(deadline=0.3)))

    async def slow() -> Any:
        for _ in range(50):
            yield b" "
            await asyncio.sleep(0.05)

    resp = await client.post("/api/v1/log/entries", data=slow())
    assert resp.status == 408


async def test_bodies_in_flight_share_one_budget(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app(BodyLimits(budget=150_000, deadline=5)))
    gate = asyncio.Event()

    async def held() -> Any:
        yield b"x" * 1000
        await gate.wait()
        yield b"x"

    first = asyncio.create_task(
        client.post("/api/v1/log/entries", data=held(), headers={"Content-Length": "100001"})
    )
    await asyncio.sleep(0.2)
    second = await client.post("/api/v1/log/entries", data=b"y" * 100_000)
    assert second.status == 503
    gate.set()
    # The first body is 1001 bytes of a declared 100001: the client lied, the read fails.
    await first
    third = await client.post("/api/v1/log/entries", data=b"y" * 100_000)
    assert third.status == 200


def test_json_shape_limits() -> None:
    assert parse_json(b'{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    with pytest.raises(JSONTooComplex, match="arrays and objects"):
        parse_json(b"[" + b"[]," * MAX_CONTAINERS + b"[]]")
    with pytest.raises(JSONTooComplex, match="nested deeper"):
        parse_json(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    with pytest.raises(JSONTooComplex):
        parse_json(b"[" * 5000 + b"]" * 5000)
    with pytest.raises(ValueError, match="Expecting"):
        parse_json(b"{")
