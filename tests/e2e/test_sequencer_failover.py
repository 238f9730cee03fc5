"""Two ``serve log`` replicas on one PostgreSQL elect one sequencer; the other forwards to it.
Killing the sequencer with -9 under load loses no acknowledged entry, and writes resume at
the other replica within 5 s (issue 13)."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from clients.bench import prepare_writes
from services.cli import main
from tests.serverproc import Server, start_server, stop_server

pytestmark = pytest.mark.postgres

_LOAD = 24  # concurrent clients


def _roles(server: Server) -> list[str]:
    return [
        line.rsplit(": ", 1)[1]
        for line in server.log.read_text().splitlines()
        if "services.log.cluster: tree" in line
    ]


async def _load(
    a: Server, b: Server, bodies: Iterator[bytes], kill_after: float, run_for: float
) -> tuple[list[tuple[float, bytes, dict[str, object]]], list[tuple[float, str, int]], float]:
    """Post distinct entries to both replicas, then kill ``a`` with -9 and go on posting to
    ``b``; return every acknowledged entry (time, body, response), every failure and the
    moment of the kill."""
    acked: list[tuple[float, bytes, dict[str, object]]] = []
    failed: list[tuple[float, str, int]] = []
    start = time.monotonic()
    killed_at = 0.0

    async def client(n: int, session: aiohttp.ClientSession) -> None:
        while time.monotonic() - start < run_for:
            body = next(bodies)
            target = b if killed_at or n % 2 else a
            try:
                async with session.post(
                    f"{target.url}/api/v1/log/entries",
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    if resp.status == 201:
                        acked.append((time.monotonic(), body, await resp.json()))
                    else:
                        failed.append((time.monotonic(), target.url, resp.status))
            except aiohttp.ClientError:
                # A request to the replica that died: unacknowledged, may or may not be stored.
                failed.append((time.monotonic(), target.url, 0))

    async def killer() -> None:
        nonlocal killed_at
        await asyncio.sleep(kill_after)
        a.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(killer(), *(client(n, session) for n in range(_LOAD)))
    return acked, failed, killed_at


def test_killing_the_sequencer_replica_loses_no_acknowledged_entry(
    tmp_path: Path, empty_postgres: Iterator[str], capsys: pytest.CaptureFixture[str]
) -> None:
    database = next(empty_postgres)
    data = tmp_path / "data"
    flags = ("--database-url", database)
    a = start_server(data, *flags, command=("serve", "log"))
    b = start_server(data, *flags, command=("serve", "log"))
    try:
        assert set(_roles(a)) == {"this process sequences it"}
        assert set(_roles(b)) == {"forwarding to its sequencer"}
        bodies = iter(prepare_writes(20_000))
        acked, failed, killed_at = asyncio.run(_load(a, b, bodies, kill_after=2.0, run_for=8.0))
        assert a.process.wait(timeout=5) == -signal.SIGKILL

        # Only requests to the killed replica failed; the survivor answered every one with 201.
        assert not [f for f in failed if f[1] == b.url], failed[:5]
        before = [t for t, _, _ in acked if t < killed_at]
        after = sorted(t for t, _, _ in acked if t >= killed_at)
        assert before
        assert after
        # The survivor was elected and committed again within 5 s of the kill.
        assert after[0] - killed_at < 5.0, after[0] - killed_at
        assert "elected its sequencer" in b.log.read_text()

        # Every acknowledged entry is in the log, at the index it was acknowledged with.
        indices: set[int] = set()

        async def check_all() -> None:
            async with aiohttp.ClientSession() as session:
                for _, body, response in acked:
                    ((uuid, entry),) = response.items()
                    assert isinstance(entry, dict)
                    index = entry["logIndex"]
                    assert isinstance(index, int)
                    indices.add(index)
                    async with session.get(
                        f"{b.url}/api/v1/log/entries", params={"logIndex": str(index)}
                    ) as resp:
                        assert resp.status == 200
                        ((stored_uuid, stored),) = (await resp.json()).items()
                    assert stored_uuid == uuid
                    assert json.loads(base64.b64decode(stored["body"])) == json.loads(body)

        asyncio.run(check_all())
        assert len(indices) == len(acked)
    finally:
        for server in (a, b):
            if server.process.poll() is None:
                stop_server(server)
    # And the log as a whole is what its checkpoints say.
    capsys.readouterr()
    assert main(["fsck", "--data-dir", str(data), "--database-url", database]) == 0
    print(
        f"acknowledged {len(acked)}; failed at the killed replica {len(failed)}; first commit "
        f"{after[0] - killed_at:.2f} s after the kill"
    )
