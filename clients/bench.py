"""``sigstead bench``: load a deployment the way its clients do, to size it.

Each workload sends what a real client sends, prepared before the clock starts so the load
generator spends its time on the wire: distinct, validly signed ``hashedrekord`` entries (a
transparency log refuses duplicates), entry reads at random indices, certificate requests with
a proof of possession, and RFC 3161 timestamp requests. Every figure is printed beside two
baselines measured in the same run on the same machine: ECDSA P-256 verifications per second on
one core (the unavoidable cost of a log write) and a trivial HTTP "hello" server loaded by the
same generator (what the generator and the machine can do at all).

The generator is wrk (a C load generator, with a Lua script) when it is installed, otherwise
an asyncio client in this process; say which in any figure you quote, because on a small
machine the generator competes with the server for the same cores.
"""

from __future__ import annotations

# Only what building the command line needs is imported here: ``sigstead --help`` must stay
# fast, so the generator's own imports happen when a run starts.
import argparse
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from clients.errors import ClientError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Result", "add_bench_parser", "run_bench"]

WORKLOADS = ("write", "write-v2", "read", "tile", "cert", "timestamp")
TILE_WIDTH = 256  # hashes (or entries) in a full C2SP tile

_LUA = r"""
-- sigstead bench: cycles through prepared bodies, counts statuses, prints JSON at the end.
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- The bodies file is "<length>\n<body>" records (bodies may be binary, e.g. DER). Each thread
-- keeps its share as finished requests, so a request costs a table lookup: the generator shares
-- the server's cores, and whatever it spends per request or at set-up is taken from the server.
local function load_requests(file)
  local out = {}
  local handle = assert(io.open(file, "rb"))
  local data = handle:read("*a")
  handle:close()
  local at, n = 1, 0
  while at <= #data do
    local eol = string.find(data, "\n", at, true)
    local length = tonumber(string.sub(data, at, eol - 1))
    if n % nthreads == id then
      local body = string.sub(data, eol + 1, eol + length)
      if paths then
        table.insert(out, wrk.format(method, body, headers))
      else
        table.insert(out, wrk.format(method, path, headers, body))
      end
    end
    at = eol + 1 + length
    n = n + 1
  end
  return out
end

function init(args)
  method, path, ctype, bodies_file, nthreads, read_max = args[1], args[2], args[3], args[4],
    tonumber(args[5]), tonumber(args[6])
  headers = {}
  if ctype ~= "-" then headers["Content-Type"] = ctype end
  if args[7] ~= nil and args[7] ~= "-" then headers["Authorization"] = "Bearer " .. args[7] end
  paths = args[8] == "paths"
  requests = {}
  if bodies_file ~= "-" then requests = load_requests(bodies_file) end
  position = 0
  wrapped = 0
  statuses = {}
  math.randomseed(os.time() + id)
end

function request()
  if read_max > 0 then
    return wrk.format(method, path .. math.random(1, read_max), headers)
  end
  if #requests == 0 then return wrk.format(method, path, headers) end
  position = position + 1
  if position > #requests then position = 1; wrapped = wrapped + 1 end
  return requests[position]
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  local wraps = 0
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for k, v in pairs(s) do merged[k] = (merged[k] or 0) + v end
    wraps = wraps + thread:get("wrapped")
  end
  local parts = {}
  for k, v in pairs(merged) do table.insert(parts, string.format('"%s":%d', k, v)) end
  io.write(string.format(
    'SIGSTEAD_BENCH {"requests":%d,"seconds":%f,"socket_errors":%d,"p50":%f,"p90":%f,' ..
    '"p99":%f,"wrapped":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    wraps, table.concat(parts, ",")))
end
"""


@dataclass(frozen=True, slots=True)
class Load:
    """One workload ready to send: method, path, and the prepared bodies (or none)."""

    name: str
    method: str
    path: str
    content_type: str | None = None
    bodies: Sequence[bytes] = ()
    token: str | None = None
    read_max: int = 0  # reads: the path ends in a random index in [1, read_max]
    distinct: bool = False  # the server refuses a repeated body (a log's duplicate entry)
    paths: bool = False  # GETs: each of ``bodies`` is a path to fetch, not a body


@dataclass(slots=True)
class Result:
    """What one run measured. Latencies in milliseconds."""

    name: str
    engine: str
    concurrency: int
    requests: int
    seconds: float
    p50: float
    p90: float
    p99: float
    statuses: dict[str, int] = field(default_factory=dict)
    socket_errors: int = 0
    wrapped: int = 0
    distinct: bool = False

    @property
    def good(self) -> int:
        """Requests answered with the workload's success status."""
        return sum(n for s, n in self.statuses.items() if s in ("200", "201"))

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return self.good / self.seconds if self.seconds else 0.0


# -- preparing what clients send ---------------------------------------------------------------


def _p256() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def prepare_writes(n: int) -> list[bytes]:
    """``n`` distinct hashedrekord 0.0.1 bodies as sigstore-python posts them (one key)."""
    import base64
    import json

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    key = _p256()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_b64 = base64.b64encode(pem).decode()
    alg = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    bodies = []
    for _ in range(n):
        digest = os.urandom(32)  # the digest of an artifact nobody needs to hold
        sig = base64.b64encode(key.sign(digest, alg)).decode()
        bodies.append(
            json.dumps(
                {
                    "apiVersion": "0.0.1",
                    "kind": "hashedrekord",
                    "spec": {
                        "signature": {"content": sig, "publicKey": {"content": key_b64}},
                        "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
                    },
                },
                separators=(",", ":"),
            ).encode()
        )
    return bodies


def prepare_writes_v2(n: int) -> list[bytes]:
    """``n`` distinct Rekor v2 ``hashedRekordRequestV002`` bodies (one P-256 key)."""
    import base64
    import json

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    key = _p256()
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    verifier = {
        "publicKey": {"rawBytes": base64.b64encode(spki).decode()},
        "keyDetails": "PKIX_ECDSA_P256_SHA_256",
    }
    alg = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    bodies = []
    for _ in range(n):
        digest = os.urandom(32)
        request = {
            "hashedRekordRequestV002": {
                "digest": base64.b64encode(digest).decode(),
                "signature": {
                    "content": base64.b64encode(key.sign(digest, alg)).decode(),
                    "verifier": verifier,
                },
            }
        }
        bodies.append(json.dumps(request, separators=(",", ":")).encode())
    return bodies


def tile_paths(size: int, n: int = 4096, level: int | str = 0) -> list[bytes]:
    """Paths of random full tiles at ``level`` of a v2 tree of ``size`` (C2SP tlog-tiles);
    ``level`` "entries" for entry bundles."""
    import random

    full = size // TILE_WIDTH if level == "entries" else size // TILE_WIDTH ** (int(level) + 1)
    if full == 0:
        raise ClientError(
            f"tile: the Rekor v2 log has no full tile at level {level} yet; run `write-v2` first"
        )
    out = []
    for _ in range(n):
        index = random.randrange(full)  # noqa: S311 -- load, not secrets
        groups = f"{index:03d}" if index < 1000 else ""
        if not groups:
            digits, parts = str(index), list[str]()
            while digits:
                parts.insert(0, digits[-3:].rjust(3, "0"))
                digits = digits[:-3]
            groups = "/".join([*(f"x{p}" for p in parts[:-1]), parts[-1]])
        out.append(f"/api/v2/tile/{level}/{groups}".encode())
    return out


def _token_subject(token: str) -> str:
    """What Fulcio's proof of possession signs: the verified email, else the subject."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise ClientError(f"--identity-token is not a JWT: {exc}") from None
    if claims.get("email") and claims.get("email_verified") is True:
        return str(claims["email"])
    return str(claims.get("sub", ""))


def prepare_certs(token: str, n: int) -> list[bytes]:
    """``n`` signingCert requests (fresh key, proof of possession) as cosign sends them."""
    import base64
    import json

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    subject = _token_subject(token).encode()
    bodies = []
    for _ in range(n):
        key = _p256()
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        proof = key.sign(subject, ec.ECDSA(hashes.SHA256()))
        bodies.append(
            json.dumps(
                {
                    "publicKeyRequest": {
                        "publicKey": {"algorithm": "ECDSA", "content": pem.decode()},
                        "proofOfPossession": base64.b64encode(proof).decode(),
                    }
                }
            ).encode()
        )
    return bodies


def prepare_timestamps(n: int) -> list[bytes]:
    """``n`` DER TimeStampReqs as sigstore-python sends them (SHA-256, nonce, certReq)."""
    from asn1crypto import tsp

    return [
        tsp.TimeStampReq(
            {
                "version": "v1",
                "message_imprint": {
                    "hash_algorithm": {"algorithm": "sha256"},
                    "hashed_message": os.urandom(32),
                },
                "nonce": int.from_bytes(os.urandom(8), "big"),
                "cert_req": True,
            }
        ).dump()
        for _ in range(n)
    ]


# -- engines -----------------------------------------------------------------------------------


def _wrk_run(url: str, load: Load, concurrency: int, seconds: float, workdir: Path) -> Result:
    import json
    import subprocess

    script = workdir / "bench.lua"
    script.write_text(_LUA)
    bodies_file = "-"
    if load.bodies:
        bodies_file = str(workdir / f"{load.name}.bodies")
        with open(bodies_file, "wb") as out:
            for body in load.bodies:
                out.write(b"%d\n%s" % (len(body), body))
    threads = max(1, min(concurrency, os.cpu_count() or 1))
    cmd = [
        "wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s",
        "--timeout", "30s", "-s", str(script), url, "--",
        load.method, load.path, load.content_type or "-", bodies_file, str(threads),
        str(load.read_max), load.token or "-", "paths" if load.paths else "-",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    line = next((x for x in done.stdout.splitlines() if x.startswith("SIGSTEAD_BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise ClientError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    data = json.loads(line.split(" ", 1)[1])
    return Result(
        load.name,
        "wrk",
        concurrency,
        int(data["requests"]),
        float(data["seconds"]),
        float(data["p50"]),
        float(data["p90"]),
        float(data["p99"]),
        {str(k): int(v) for k, v in data["statuses"].items()},
        int(data["socket_errors"]),
        int(data["wrapped"]),
        load.distinct,
    )


def _percentile(sorted_ms: Sequence[float], p: float) -> float:
    if not sorted_ms:
        return 0.0
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p / 100))]


async def _asyncio_run(url: str, load: Load, concurrency: int, seconds: float) -> Result:
    import asyncio
    import random
    import time
    from collections import Counter

    import aiohttp

    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    errors = 0
    wrapped = 0
    position = 0
    deadline = time.perf_counter() + seconds
    headers = {}
    if load.content_type:
        headers["Content-Type"] = load.content_type
    if load.token:
        headers["Authorization"] = f"Bearer {load.token}"

    def next_request() -> tuple[str, bytes | None]:
        nonlocal position, wrapped
        if load.read_max:
            return f"{url}{load.path}{random.randint(1, load.read_max)}", None  # noqa: S311
        if not load.bodies:
            return url + load.path, None
        if position == len(load.bodies):
            position, wrapped = 0, wrapped + 1
        position += 1
        if load.paths:
            return url + load.bodies[position - 1].decode(), None
        return url + load.path, load.bodies[position - 1]

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            target, body = next_request()
            started = time.perf_counter()
            try:
                async with session.request(load.method, target, data=body, headers=headers) as r:
                    await r.read()
                    statuses[str(r.status)] += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Result(
        load.name,
        "asyncio",
        concurrency,
        sum(statuses.values()),
        elapsed,
        _percentile(latencies, 50),
        _percentile(latencies, 90),
        _percentile(latencies, 99),
        dict(statuses),
        errors,
        wrapped,
        load.distinct,
    )


def run_load(
    url: str, load: Load, *, concurrency: int, seconds: float, engine: str = "auto"
) -> Result:
    """Run one workload against ``url`` for ``seconds`` with ``concurrency`` connections."""
    import asyncio
    import shutil
    import tempfile
    from pathlib import Path

    use_wrk = engine == "wrk" or (engine == "auto" and shutil.which("wrk") is not None)
    if engine == "wrk" and shutil.which("wrk") is None:
        raise ClientError("--engine wrk: wrk is not installed (Debian: apt-get install wrk)")
    if use_wrk:
        with tempfile.TemporaryDirectory(prefix="sigstead-bench-") as tmp:
            return _wrk_run(url, load, concurrency, seconds, Path(tmp))
    return asyncio.run(_asyncio_run(url, load, concurrency, seconds))


# -- baselines ---------------------------------------------------------------------------------


def ecdsa_verify_rate(seconds: float = 1.0) -> float:
    """ECDSA P-256 verifications per second on one core (what each log write must pay)."""
    import time

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = _p256()
    message = os.urandom(64)
    sig = key.sign(message, ec.ECDSA(hashes.SHA256()))
    public = key.public_key()
    alg = ec.ECDSA(hashes.SHA256())
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            public.verify(sig, message, alg)
        n += 100
    return n / (time.perf_counter() - start)


def _hello_server(port: int) -> None:
    """A one-process aiohttp server answering ``hello``: the generator's and machine's ceiling."""
    from aiohttp import web

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def hello_server() -> Any:
    """A context manager: start the hello server in a child process; yield its URL."""
    import contextlib

    return contextlib.contextmanager(_hello_server_process)()


def _hello_server_process() -> Iterator[str]:
    import contextlib
    import socket
    import subprocess
    import sys
    import time

    port = _free_port()
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", f"from clients.bench import _hello_server; _hello_server({port})"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- the command -------------------------------------------------------------------------------


def _log_size(url: str) -> int:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{url}/api/v1/log", timeout=30) as resp:  # noqa: S310
        size: int = json.loads(resp.read())["treeSize"]
        return size


def _v2_size(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{url}/api/v2/checkpoint", timeout=30) as resp:  # noqa: S310
        return int(resp.read().decode().splitlines()[1])


def build_load(name: str, url: str, args: argparse.Namespace) -> Load:
    """Prepare workload ``name`` before the clock starts."""
    expected = max(1000, int(args.expect * args.seconds * 1.5))
    if name == "write":
        return Load(
            name,
            "POST",
            "/api/v1/log/entries",
            "application/json",
            prepare_writes(expected),
            distinct=True,
        )
    if name == "write-v2":
        return Load(
            name,
            "POST",
            "/api/v2/log/entries",
            "application/json",
            prepare_writes_v2(expected),
            distinct=True,
        )
    if name == "tile":
        return Load(name, "GET", "", bodies=tile_paths(_v2_size(url)), paths=True)
    if name == "read":
        size = _log_size(url)
        if size < 2:
            raise ClientError("read: the log holds no client entries yet; run `write` first")
        return Load(name, "GET", "/api/v1/log/entries?logIndex=", read_max=size - 1)
    if name == "cert":
        if not args.identity_token:
            raise ClientError("cert needs --identity-token (e.g. from `sigstead dev-issuer token`)")
        return Load(
            name,
            "POST",
            "/api/v2/signingCert",
            "application/json",
            prepare_certs(args.identity_token, min(expected, 2000)),
            token=args.identity_token,
        )
    if name == "timestamp":
        return Load(
            name,
            "POST",
            "/api/v1/timestamp",
            "application/timestamp-query",
            prepare_timestamps(1000),
        )
    raise ClientError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")


def add_bench_parser(sub: Any) -> None:
    """Register ``bench`` on an argparse subparsers object."""
    bench = sub.add_parser(
        "bench",
        help="load a deployment as its clients do; rates and latency beside same-run baselines",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bench.add_argument("workloads", nargs="+", choices=WORKLOADS, help="what to send")
    bench.add_argument(
        "--url",
        default=os.environ.get("SIGSTEAD_URL", "http://127.0.0.1:3000"),
        help="the deployment's base URL ($SIGSTEAD_URL)",
    )
    bench.add_argument("--concurrency", "-c", type=int, default=64, help="open connections")
    bench.add_argument("--seconds", "-d", type=float, default=10.0, help="length of each run")
    bench.add_argument(
        "--expect",
        type=float,
        default=5000.0,
        help="writes/s to prepare distinct entries for (too few: later writes are duplicates)",
    )
    bench.add_argument("--identity-token", help="an ID token the CA accepts (for `cert`)")
    bench.add_argument(
        "--engine", choices=("auto", "wrk", "asyncio"), default="auto", help="load generator"
    )
    bench.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    bench.add_argument("--json", action="store_true", help="one JSON object per line")


def _row(r: Result) -> str:
    others = {s: n for s, n in sorted(r.statuses.items()) if s not in ("200", "201")}
    extra = f"  other statuses {others}" if others else ""
    if r.socket_errors:
        extra += f"  socket errors {r.socket_errors}"
    if r.wrapped and r.distinct:
        extra += "  (prepared entries ran out, later ones were duplicates: raise --expect)"
    return (
        f"{r.name:<10} {r.rate:>9.0f}/s  p50 {r.p50:7.1f} ms  p90 {r.p90:7.1f} ms  "
        f"p99 {r.p99:7.1f} ms  c={r.concurrency} {r.engine}{extra}"
    )


def run_bench(args: argparse.Namespace) -> int:
    """Run ``sigstead bench``; 0 unless a run could not be made."""
    import json

    url = args.url.rstrip("/")
    results: list[Result] = []
    for name in args.workloads:
        load = build_load(name, url, args)
        result = run_load(
            url, load, concurrency=args.concurrency, seconds=args.seconds, engine=args.engine
        )
        results.append(result)
        print(json.dumps(asdict(result) | {"rate": result.rate}) if args.json else _row(result))
    if not args.no_baselines:
        verify = ecdsa_verify_rate()
        with hello_server() as hello_url:
            hello = run_load(
                hello_url,
                Load("hello", "GET", "/"),
                concurrency=args.concurrency,
                seconds=min(args.seconds, 5.0),
                engine=args.engine,
            )
        if args.json:
            print(json.dumps({"name": "ecdsa_p256_verify_per_core", "rate": verify}))
            print(json.dumps(asdict(hello) | {"rate": hello.rate}))
        else:
            print(f"{'baseline':<10} ECDSA P-256 verify {verify:,.0f}/s on one core")
            print(_row(hello))
    return 0
