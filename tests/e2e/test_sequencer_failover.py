"""Processes serving one log elect one sequencer; the others forward to it. Killing the
sequencer with -9 under load loses no acknowledged entry, and writes resume within 5 s
(issue 13): two ``serve log`` replicas on one PostgreSQL, and a ``sigstead up`` worker pool."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from clients.bench import prepare_writes
from services.cli import main
from tests.serverproc import Server, start_server, stop_server

_LOAD = 24  # concurrent clients
_TOOK = ("this process sequences it", "elected its sequencer")
_KILL_AFTER = 2.0
_GO_ON = 6.0


def _resumed(acked: list[tuple[float, bytes, dict[str, object]]], killed_at: float) -> float:
    """Entries were acknowledged before the kill, and again within 5 s of it: return when."""
    assert [t for t, _, _ in acked if t < killed_at]
    after = sorted(t for t, _, _ in acked if t >= killed_at)
    assert after
    assert after[0] - killed_at < 5.0, after[0] - killed_at
    return after[0] - killed_at


def _roles(server: Server) -> list[str]:
    return [
        line.rsplit(": ", 1)[1]
        for line in server.log.read_text().splitlines()
        if "services.log.cluster: tree" in line
    ]


async def _load(
    before: list[str], after: str, kill: Callable[[], None], bodies: Iterator[bytes]
) -> tuple[list[tuple[float, bytes, dict[str, object]]], list[tuple[float, str, int]], float]:
    """Post distinct entries to the ``before`` URLs in turn, then ``kill`` and go on posting to
    ``after``; return every acknowledged entry (time, body, response), every failure (time,
    URL, status) and the moment of the kill."""
    acked: list[tuple[float, bytes, dict[str, object]]] = []
    failed: list[tuple[float, str, int]] = []
    start = time.monotonic()
    killed_at = 0.0

    async def client(n: int, session: aiohttp.ClientSession) -> None:
        while time.monotonic() - start < _KILL_AFTER + _GO_ON:
            body = next(bodies)
            target = after if killed_at else before[n % len(before)]
            try:
                async with session.post(
                    f"{target}/api/v1/log/entries",
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    if resp.status == 201:
                        acked.append((time.monotonic(), body, await resp.json()))
                    else:
                        failed.append((time.monotonic(), target, resp.status))
            except aiohttp.ClientError:
                # A request to a process that died: unacknowledged, may or may not be stored.
                failed.append((time.monotonic(), target, 0))

    async def killer() -> None:
        nonlocal killed_at
        await asyncio.sleep(_KILL_AFTER)
        kill()
        killed_at = time.monotonic()

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(killer(), *(client(n, session) for n in range(_LOAD)))
    return acked, failed, killed_at


def _check_acknowledged(url: str, acked: list[tuple[float, bytes, dict[str, object]]]) -> None:
    """Every acknowledged entry is in the log, at the index it was acknowledged with."""
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
                    f"{url}/api/v1/log/entries", params={"logIndex": str(index)}
                ) as resp:
                    assert resp.status == 200
                    ((stored_uuid, stored),) = (await resp.json()).items()
                assert stored_uuid == uuid
                assert json.loads(base64.b64decode(stored["body"])) == json.loads(body)

    asyncio.run(check_all())
    assert len(indices) == len(acked)


@pytest.mark.postgres
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
        acked, failed, killed_at = asyncio.run(
            _load(
                [a.url, b.url],
                b.url,
                lambda: a.process.send_signal(signal.SIGKILL),
                iter(prepare_writes(20_000)),
            )
        )
        assert a.process.wait(timeout=5) == -signal.SIGKILL

        # Only requests to the killed replica failed; the survivor answered every one with 201.
        assert not [f for f in failed if f[1] == b.url], failed[:5]
        after = _resumed(acked, killed_at)
        assert "elected its sequencer" in b.log.read_text()
        _check_acknowledged(b.url, acked)
    finally:
        for server in (a, b):
            if server.process.poll() is None:
                stop_server(server)
    # And the log as a whole is what its checkpoints say.
    capsys.readouterr()
    assert main(["fsck", "--data-dir", str(data), "--database-url", database]) == 0
    print(
        f"acknowledged {len(acked)}; failed at the killed replica {len(failed)}; first commit "
        f"{after:.2f} s after the kill"
    )


def test_killing_the_sequencing_worker_of_a_pool_loses_nothing_and_it_comes_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sigstead up --workers 2`` on SQLite: process 0 sequences and answers no requests;
    killed with -9 under load, a serving worker is elected, the pool starts process 0 again,
    and nothing acknowledged is lost."""
    data = tmp_path / "data"
    server = start_server(data, "--workers", "2")
    try:
        pid = server.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children")
        deadline = time.monotonic() + 20
        while len(children.read_text().split()) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        first_worker = int(children.read_text().split()[0])
        acked, failed, killed_at = asyncio.run(
            _load(
                [server.url],
                server.url,
                lambda: os.kill(first_worker, signal.SIGKILL),
                iter(prepare_writes(20_000)),
            )
        )
        after = _resumed(acked, killed_at)
        log = server.log.read_text()
        assert "worker 0 exited (-9); starting it again" in log
        # Both logs got a new sequencer: the other worker, elected, or the new worker 0, if it
        # took the lock first.
        took = [line for line in log.splitlines() if line.endswith(_TOOK)]
        assert len(took) == 4, took
        # It held no client connection: its entries in flight were answered by the workers.
        assert not failed, failed[:5]
        _check_acknowledged(server.url, acked)
        assert len(children.read_text().split()) == 3  # process 0 is back
    finally:
        assert stop_server(server) == 0
    capsys.readouterr()
    assert main(["fsck", "--data-dir", str(data)]) == 0
    print(
        f"acknowledged {len(acked)}; cut {len(failed)}; first commit {after:.2f} s after the kill"
    )


@pytest.mark.parametrize(
    ("flags", "processes", "announced"),
    [
        ((), 3, "(2 workers and a sequencer process)"),
        (("--no-sequencer-process",), 2, "(2 worker processes)"),
    ],
)
def test_a_pool_sequences_in_a_process_of_its_own_unless_told_not_to(
    tmp_path: Path, flags: tuple[str, ...], processes: int, announced: str
) -> None:
    server = start_server(tmp_path / "data", "--workers", "2", *flags)
    try:
        pid = server.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children")
        deadline = time.monotonic() + 20
        while len(children.read_text().split()) < processes and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(children.read_text().split()) == processes
        assert announced in server.log.read_text()
        # Whichever process sequences, a write through the port is committed and readable.
        request = urllib.request.Request(
            f"{server.url}/api/v1/log/entries",
            data=prepare_writes(1)[0],
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as created:
            assert created.status == 201
    finally:
        assert stop_server(server) == 0
