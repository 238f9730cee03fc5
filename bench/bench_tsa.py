"""Timestamps per second, in process and over HTTP, beside the ECDSA P-256 signing floor.

Run: ``python -m bench.bench_tsa [--n 5000] [--http 3000] [--concurrency 32]``

The floor is one ECDSA P-256 signature per token (the only unavoidable cryptographic cost),
measured in the same run. HTTP goes through a real ``sigstead up`` process on 127.0.0.1 with a
bounded number of requests from an aiohttp client in this process (two processes share the two
cores, so the HTTP figure includes the load generator's own cost).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from asn1crypto import tsp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from services.tsa import keys
from services.tsa.authority import TimestampAuthority, TimestampRequest
from tests.serverproc import start_server, stop_server


def floor_rate(n: int) -> float:
    key = ec.generate_private_key(ec.SECP256R1())
    msg = os.urandom(200)
    t = time.perf_counter()
    for _ in range(n):
        key.sign(msg, ec.ECDSA(hashes.SHA256()))
    return n / (time.perf_counter() - t)


def stamp_rate(n: int, workdir: Path) -> float:
    now = datetime.now(UTC)
    key, chain = keys.load_or_create(workdir / "tsa", now)
    tsa = TimestampAuthority(key, chain)
    req = TimestampRequest("sha256", hashlib.sha256(b"x").digest(), nonce=7, cert_req=True)
    t = time.perf_counter()
    for _ in range(n):
        tsa.stamp(req, now)
    return n / (time.perf_counter() - t)


def _der_body() -> bytes:
    der: bytes = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": hashlib.sha256(b"x").digest(),
            },
            "cert_req": True,
        }
    ).dump()
    return der


async def http_rate(url: str, n: int, concurrency: int) -> float:
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


def wrk_rate(url: str, body: bytes, seconds: int, connections: int) -> float | None:
    """Requests/s from wrk (a C load generator, far lighter than the Python one), if installed."""
    if shutil.which("wrk") is None:
        return None
    escaped = "".join(f"\\{b:03d}" for b in body)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            f'wrk.body = "{escaped}"\n'
            'wrk.headers["Content-Type"] = "application/timestamp-query"\n'
        )
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
    os.unlink(script.name)
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--http", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        floor = floor_rate(args.n)
        stamped = stamp_rate(args.n, workdir)
        server = start_server(workdir / "data")
        try:
            asyncio.run(http_rate(server.url, 200, 8))  # warm-up
            http = asyncio.run(http_rate(server.url, args.http, args.concurrency))
            wrk = wrk_rate(server.url, _der_body(), 5, args.concurrency)
        finally:
            stop_server(server)
        pool = start_server(workdir / "data", command=("serve", "tsa", "--workers", "2"))
        try:
            wrk2 = wrk_rate(pool.url, _der_body(), 5, args.concurrency)
        finally:
            stop_server(pool)
    print(f"{'path':<48}{'per second':>12}{'x floor':>9}")
    print(f"{'ECDSA P-256 sign (floor, 1 core)':<48}{floor:>12,.0f}{1:>9.2f}")
    print(f"{'TimestampAuthority.stamp() in process':<48}{stamped:>12,.0f}{stamped / floor:>9.2f}")
    label = f"HTTP, aiohttp client in-process (c={args.concurrency})"
    print(f"{label:<48}{http:>12,.0f}{http / floor:>9.2f}")
    if wrk is None:
        print("HTTP via wrk: not installed (apt-get install wrk)")
    else:
        label = f"HTTP, wrk -t1 -c{args.concurrency} -d5s, sigstead up"
        print(f"{label:<48}{wrk:>12,.0f}{wrk / floor:>9.2f}")
    if wrk2 is not None:
        label = "HTTP, wrk, sigstead serve tsa --workers 2"
        print(f"{label:<48}{wrk2:>12,.0f}{wrk2 / floor:>9.2f}")


if __name__ == "__main__":
    main()
