"""compose.yaml's layout without Docker: every service in its own process on one PostgreSQL
database and one data directory, two log replicas, and deploy/nginx.conf's routing in front
(tests/e2e/gateway.py applies it). sigstore-python signs and verifies through the gateway.

The steps are compose.yaml's: ``db upgrade`` and ``keys init`` once, then ``serve log``
twice, ``serve ca``, ``serve tsa`` and ``serve trust``, all with the gateway's URL as public URL.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import POSTGRES_URL
from tests.e2e.idp import start_idp
from tests.e2e.stack import IDENTITY, client_env, sigstead
from tests.serverproc import Server, free_port, start_server, stop_server
from tests.services.ca.oidc_issuer import write_email_issuer_config

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

NGINX = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"


def _dsn(database: str) -> str:
    url = make_url(POSTGRES_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


@pytest.fixture
def database() -> Iterator[str]:
    """A PostgreSQL database of this test's own, as compose's ``postgres`` service gives."""
    name = f"sigstead_e2e_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        # CREATE/DROP DATABASE cannot run inside a transaction.
        url = make_url(POSTGRES_URL).set(database="postgres")
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _dsn(name)
    finally:
        asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


def _wait(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("gateway did not answer in 30 s")


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        doc: dict[str, object] = json.load(resp)
        return doc


def test_signing_through_the_gateway_with_two_log_replicas_on_postgres(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGSTEAD_DATABASE_URL", database)
    data, trust = tmp_path / "data", tmp_path / "trust"
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"

    # compose's one-shot services: the schema, then every key.
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "db", "upgrade"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    idp = start_idp(tmp_path)
    oidc = write_email_issuer_config(tmp_path / "fulcio.json", idp.url)
    done = sigstead("keys", "init", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr

    servers: dict[str, Server] = {}
    gateway: subprocess.Popen[bytes] | None = None
    try:
        common = ("--public-url", public_url)
        for name, command, extra in [
            ("log-1", ("serve", "log"), ("--access-log",)),
            ("log-2", ("serve", "log"), ("--access-log",)),
            ("ca", ("serve", "ca"), ("--oidc-config", str(oidc))),
            ("tsa", ("serve", "tsa"), ()),
            ("trust", ("serve", "trust"), ()),
        ]:
            servers[name] = start_server(data, *common, *extra, command=command)
        backends = [f"{name}={s.url.removeprefix('http://')}" for name, s in servers.items()]
        gateway = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.gateway", str(NGINX), str(port), *backends]
        )
        _wait(f"{public_url}/api/v1/log", gateway)

        # What an operator hands to clients: the documents the trust service publishes.
        done = sigstead(
            "trust", "export", "--data-dir", str(data), "--public-url", public_url,
            "--out", str(trust),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

        home = tmp_path / "home"
        home.mkdir()
        indexes = []
        for i in range(4):
            artifact = tmp_path / f"artifact-{i}.txt"
            artifact.write_text(f"release {i}\n")
            bundle = tmp_path / f"artifact-{i}.sigstore.json"
            signed = _sigstore(
                home, trust, "sign", "--identity-token", idp.token(), "--bundle", str(bundle),
                str(artifact),
            )  # fmt: skip
            assert signed.returncode == 0, signed.stderr
            verified = _sigstore(
                home, trust, "verify", "identity", "--cert-identity", IDENTITY,
                "--cert-oidc-issuer", idp.url, "--bundle", str(bundle), str(artifact),
            )  # fmt: skip
            assert verified.returncode == 0, verified.stderr
            entry = json.loads(bundle.read_text())["verificationMaterial"]["tlogEntries"][0]
            indexes.append(int(entry["logIndex"]))
        assert sorted(indexes) == [1, 2, 3, 4]  # after the log's genesis entry

        # Both replicas took entries (the gateway alternates), and both see one tree.
        for name in ("log-1", "log-2"):
            log = (data.parent / f"sigstead-{servers[name].url.rsplit(':', 1)[1]}.log").read_text()
            assert '"POST /api/v1/log/entries HTTP/1.1" 201' in log, name
        heads = [_get(f"{servers[n].url}/api/v1/log") for n in ("log-1", "log-2")]
        assert heads[0]["treeSize"] == heads[1]["treeSize"] == 5
        assert heads[0]["rootHash"] == heads[1]["rootHash"]
        # Every entry is readable on both, whichever of them logged it.
        for name in ("log-1", "log-2"):
            for index in range(5):
                (entry,) = _get(f"{servers[name].url}/api/v1/log/entries?logIndex={index}").values()
                assert entry["logIndex"] == index  # type: ignore[index]
        # The CT log in the CA process holds the four precertificates.
        assert (
            _get(f"{public_url}/ct/v1/get-sth")["tree_size"] == 5
        )  # genesis and four precertificates
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(timeout=10)
        for server in servers.values():
            if server.process.poll() is None:
                stop_server(server)
        idp.stop()


def _sigstore(home: Path, trust: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = str(trust / "client_trust_config.json")
    return subprocess.run(
        [sys.executable, "-m", "sigstore", "--trust-config", config, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=client_env(home),
        check=False,
    )
