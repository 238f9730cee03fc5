"""``GET /metrics`` and ``GET /readyz`` on a running app: request counts by route template and
status, batch histograms and tree sizes per log, in Prometheus' text format as its own parser
reads it; readiness that drops while a log is about to push back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from aiohttp.web import Application
from prometheus_client.parser import text_string_to_metric_families

from services.app import Settings, create_app
from services.db import Database
from tests.services.log.rekor.test_api import Signer

AiohttpClient = Callable[[Application], Awaitable[TestClient[Any, Any]]]


async def _scrape(
    client: TestClient[Any, Any],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = await client.get("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(await reply.text()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_count_requests_batches_and_tree_sizes(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", public_url="http://log.example:3000")
    client = await aiohttp_client(create_app(settings, database=db, components=("log",)))
    for i in range(3):
        reply = await client.post("/api/v1/log/entries", json=Signer().hashedrekord(b"m%d" % i))
        assert reply.status == 201
    first = await client.get("/api/v1/log/entries?logIndex=1")
    uuid = next(iter(await first.json()))
    assert (await client.get(f"/api/v1/log/entries/{uuid}")).status == 200
    assert (await client.post("/api/v1/log/entries", data=b"{")).status == 400
    assert (await client.get("/nothing-here")).status == 404

    seen = await _scrape(client)
    requests = "sigstead_http_requests_total"
    assert (
        seen[(requests, (("method", "POST"), ("route", "/api/v1/log/entries"), ("status", "201")))]
        == 3
    )
    assert (
        seen[(requests, (("method", "POST"), ("route", "/api/v1/log/entries"), ("status", "400")))]
        == 1
    )
    # The route template, not the path: one series for every entry ID.
    assert (
        seen[
            (
                requests,
                (
                    ("method", "GET"),
                    ("route", "/api/v1/log/entries/{uuid}"),
                    ("status", "200"),
                ),
            )
        ]
        == 1
    )
    assert seen[(requests, (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    # Genesis and three entries; v2 has its genesis only.
    assert seen[("sigstead_log_tree_size", (("log", "rekor"),))] == 4
    assert seen[("sigstead_log_tree_size", (("log", "rekor-v2"),))] == 1
    assert seen[("sigstead_log_queue_depth", (("log", "rekor"),))] == 0
    # Alone (on PostgreSQL: elected), the process sequences its logs.
    assert seen[("sigstead_log_sequencer_leader", (("log", "rekor"),))] == 1
    assert seen[("sigstead_log_batch_entries_sum", (("log", "rekor"),))] == 4
    assert seen[("sigstead_log_commit_seconds_count", (("log", "rekor"),))] >= 2


async def test_unused_methods_share_one_series(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path
) -> None:
    # Methods no route takes (WebDAV's, which aiohttp's C parser knows) count as "other".
    settings = Settings(data_dir=tmp_path / "data", public_url="http://log.example:3000")
    client = await aiohttp_client(create_app(settings, database=db, components=("log",)))
    for method in ("PROPFIND", "MKCOL", "LOCK"):
        assert (await client.request(method, "/api/v1/log")).status == 405
    assert (await client.get("/api/v1/log")).status == 200
    seen = await _scrape(client)
    counted = {
        labels: value
        for (name, labels), value in seen.items()
        if name == "sigstead_http_requests_total"
    }
    # No route answers a 405: it is counted as unmatched.
    assert counted == {
        (("method", "other"), ("route", "unmatched"), ("status", "405")): 3,
        (("method", "GET"), ("route", "/api/v1/log"), ("status", "200")): 1,
    }
    timed = "sigstead_http_request_seconds_count"
    assert seen[(timed, (("method", "other"), ("route", "unmatched")))] == 3
    assert seen[(timed, (("method", "GET"), ("route", "/api/v1/log")))] == 1


async def test_readyz_is_health_plus_room_in_the_queue(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path
) -> None:
    """``/readyz`` answers 503 while a log is about to push back, ``/healthz`` stays 200."""
    from services.log.rekor.api import REKOR_LOG

    settings = Settings(
        data_dir=tmp_path / "data", public_url="http://log.example:3000", max_pending=10
    )
    client = await aiohttp_client(create_app(settings, database=db, components=("log",)))
    assert (await client.get("/readyz")).status == 200
    sequencer = client.app[REKOR_LOG].sequencer
    # Nine queued submissions of ten allowed, as under a burst the sequencer has not drained.
    blocked = asyncio.Event()
    real_commit = sequencer._store.commit_batch

    async def slow_commit(*args: Any) -> None:
        await blocked.wait()
        await real_commit(*args)

    sequencer._store.commit_batch = slow_commit
    try:
        first = asyncio.create_task(sequencer.submit(b"in flight"))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(sequencer.submit(b"q%d" % i)) for i in range(9)]
        await asyncio.sleep(0.05)
        assert sequencer.saturated
        reply = await client.get("/readyz")
        assert reply.status == 503
        assert await reply.json() == {"status": "saturated"}
        assert (await client.get("/healthz")).status == 200
    finally:
        blocked.set()
        await asyncio.gather(first, *queued)
    assert (await client.get("/readyz")).status == 200
