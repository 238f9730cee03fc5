"""Timestamps per second, in process and over HTTP, beside the ECDSA P-256 signing floor.

Run: ``python -m bench.bench_tsa [--n 5000] [--http 3000] [--concurrency 32] [--seconds 5]
[--profile]``

The floor is one ECDSA P-256 signature per token (the only unavoidable cryptographic cost),
measured in the same run. HTTP goes to real server processes on 127.0.0.1: the TSA alone
(``services.tsa.app.serve``, no access log), ``sigstead up`` (every service, access log on) and
``sigstead serve tsa --workers 2``, loaded by wrk (a C load generator) for a bounded time, or by
a bounded number of aiohttp requests from this process if wrk is missing. Load generator and
server share the machine's two cores, so HTTP figures include the generator's own cost.
``--profile`` runs the lone TSA under cProfile for one wrk run and prints where its time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from asn1crypto import tsp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from bench.timing import rate
from services.tsa import keys
from services.tsa.app import serve
from services.tsa.authority import TimestampAuthority, parse_der_request
from tests.serverproc import free_port, start_server, stop_server


def floor_rate(n: int) -> float:
    key = ec.generate_private_key(ec.SECP256R1())
    msg = os.urandom(200)
    alg = ec.ECDSA(hashes.SHA256())
    return rate(n, lambda: key.sign(msg, alg))


def _der_body() -> bytes:
    """What sigstore-python sends: SHA-256 imprint, a 64-bit nonce, certReq."""
    der: bytes = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": hashlib.sha256(b"x").digest(),
            },
            "nonce": 0x1234_5678_9ABC_DEF0,
            "cert_req": True,
        }
    ).dump()
    return der


def in_process_rates(n: int, workdir: Path) -> tuple[float, float, float]:
    """(parse, stamp, parse + stamp) per second."""
    now = datetime.now(UTC)
    key, chain = keys.load_or_create(workdir / "tsa", now)
    tsa = TimestampAuthority(key, chain)
    body = _der_body()
    req = parse_der_request(body)
    return (
        rate(n, lambda: parse_der_request(body)),
        rate(n, lambda: tsa.stamp(req, now)),
        rate(n, lambda: tsa.stamp(parse_der_request(body), now)),
    )


async def http_rate(url: str, n: int, concurrency: int) -> float:
    """A bounded number of requests from an aiohttp client in this process."""
    body = _der_body()
    headers = {"Content-Type": "application/timestamp-query"}
    remaining = n

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.post(f"{url}/api/v1/timestamp", data=body, headers=headers) as r:
                assert r.status == 200
                await r.read()

    async with aiohttp.ClientSession() as session:
        t = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return n / (time.perf_counter() - t)


def wrk_rate(url: str, seconds: int, connections: int) -> float | None:
    """Requests/s from wrk for ``seconds``, or None if wrk is not installed."""
    if shutil.which("wrk") is None:
        return None
    escaped = "".join(f"\\{b:03d}" for b in _der_body())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            f'wrk.body = "{escaped}"\n'
            'wrk.headers["Content-Type"] = "application/timestamp-query"\n'
        )
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "-s",
                script.name,
                f"{url}/api/v1/timestamp",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


@dataclass(frozen=True, slots=True)
class _Lone:
    url: str
    process: subprocess.Popen[bytes]


def _lone_tsa(data_dir: Path, profile_out: Path | None) -> _Lone:
    """Start ``serve()`` in a child process (``--_serve``) and wait until it answers."""
    port = free_port()
    args = [sys.executable, "-m", "bench.bench_tsa", "--_serve", str(data_dir), str(port)]
    if profile_out is not None:
        args += ["--_profile-out", str(profile_out)]
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1):
                return _Lone(f"http://127.0.0.1:{port}", proc)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the TSA did not start in 30 s")


def _stop(lone: _Lone) -> None:
    lone.process.send_signal(signal.SIGINT)
    lone.process.wait(timeout=30)


def _serve_child(data_dir: Path, port: int, profile_out: Path | None) -> None:
    """The child side of ``_lone_tsa``: serve until SIGINT, optionally under cProfile."""

    async def run() -> None:
        task = asyncio.create_task(serve(data_dir, "127.0.0.1", port))
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    if profile_out is None:
        asyncio.run(run())
        return
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(run())
    profiler.disable()
    profiler.dump_stats(profile_out)


def _row(label: str, rate: float | None, floor: float) -> None:
    if rate is None:
        print(f"{label:<52}{'(no wrk)':>12}")
    else:
        print(f"{label:<52}{rate:>12,.0f}{rate / floor:>9.2f}")


def main() -> None:
    """Print the table (and, with ``--profile``, the lone TSA's profile)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000, help="in-process iterations")
    parser.add_argument("--http", type=int, default=3000, help="aiohttp-client requests")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--_serve", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--_profile-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._serve:
        _serve_child(Path(args._serve[0]), int(args._serve[1]), args._profile_out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        floor = floor_rate(args.n)
        parse, stamp, both = in_process_rates(args.n, workdir)
        lone = _lone_tsa(workdir / "lone", None)
        try:
            url = lone.url
            asyncio.run(http_rate(url, 200, 8))  # warm-up
            lone_client = asyncio.run(http_rate(url, args.http, args.concurrency))
            lone_wrk = wrk_rate(url, args.seconds, args.concurrency)
        finally:
            _stop(lone)
        up = start_server(workdir / "up")
        try:
            up_wrk = wrk_rate(up.url, args.seconds, args.concurrency)
        finally:
            stop_server(up)
        pool = start_server(workdir / "pool", command=("serve", "tsa", "--workers", "2"))
        try:
            pool_wrk = wrk_rate(pool.url, args.seconds, args.concurrency)
        finally:
            stop_server(pool)
        profile = None
        if args.profile:
            profile = workdir / "tsa.prof"
            profiled = _lone_tsa(workdir / "lone", profile)
            try:
                wrk_rate(profiled.url, args.seconds, args.concurrency)
            finally:
                _stop(profiled)
        c = args.concurrency
        print(f"{'path':<52}{'per second':>12}{'x floor':>9}")
        _row("ECDSA P-256 sign (the floor, one core)", floor, floor)
        _row("parse_der_request() in process", parse, floor)
        _row("TimestampAuthority.stamp() in process", stamp, floor)
        _row("parse + stamp in process", both, floor)
        _row(f"HTTP, TSA alone (serve()), aiohttp client c={c}", lone_client, floor)
        _row(f"HTTP, TSA alone (serve()), wrk c={c}", lone_wrk, floor)
        _row(f"HTTP, sigstead up (access log on), wrk c={c}", up_wrk, floor)
        _row(f"HTTP, sigstead serve tsa --workers 2, wrk c={c}", pool_wrk, floor)
        if profile is not None:
            print("\nTSA alone under cProfile (slower than unprofiled), by own time:")
            pstats.Stats(str(profile)).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
