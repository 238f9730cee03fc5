"""compose.yaml's layout without Docker, and its backup and restore, with the real programs.

Every service runs in its own process on what its container would see (``tests.compose.view``:
its secrets and bind mounts, nothing else), on one PostgreSQL database, with the real nginx in
front running deploy/nginx.conf over TLS (``tests.e2e.nginx``). sigstore-python signs and
verifies through it, ``sigstead log`` audits it. The steps are compose.yaml's: ``db upgrade``
and ``keys init`` once, then ``serve log`` twice, ``serve ca``, ``serve tsa --workers 2`` and
``serve trust``, all with the gateway's https URL as public URL.

Backup and restore follow docs/deploy.md: ``pg_dump`` then ``sigstead backup`` while everything
runs, then a new deployment (new database, new directories) from the backup alone. The SQLite
variant backs ``sigstead up`` up while entries are being written.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from services.trust.publish import tuf_repository
from tests import compose
from tests.conftest import POSTGRES_URL
from tests.e2e import nginx
from tests.e2e.idp import IdP, start_idp
from tests.e2e.stack import IDENTITY, client_env
from tests.serverproc import Server, free_port, start_server, stop_server
from tests.services.ca.oidc_issuer import write_email_issuer_config
from tests.services.log.rekor.material import hashedrekord_body

pytestmark = [pytest.mark.e2e]

NGINX_CONF = compose.ROOT / "deploy" / "nginx.conf"


def _dsn(database: str) -> str:
    url = make_url(POSTGRES_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


@pytest.fixture
def databases() -> Iterator[Callable[[], str]]:
    """Make PostgreSQL databases of this test's own (compose's ``postgres`` gives one each
    deployment); each is dropped at the end."""
    made: list[str] = []

    async def admin(sql: str) -> None:
        # CREATE/DROP DATABASE cannot run inside a transaction.
        url = make_url(POSTGRES_URL).set(database="postgres")
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    def make() -> str:
        name = f"sigstead_e2e_{uuid.uuid4().hex[:12]}"
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return _dsn(name)

    yield make
    for name in made:
        asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


@dataclass
class Layout:
    """One deployment: the host's sigstead-data, each service's view of it, the processes."""

    public_url: str
    plain_url: str
    host: Path
    resolved: dict[str, Any]
    views: dict[str, Path] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)
    gateway: nginx.Nginx | None = None

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        for server in self.servers.values():
            if server.process.poll() is None:
                stop_server(server)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(args), capture_output=True, text=True, timeout=180, check=False, env=env
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def sigstead(*args: str, ca_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The ``sigstead`` command line, trusting the gateway's TLS certificate if given."""
    env = {**os.environ, "SSL_CERT_FILE": str(ca_file)} if ca_file else None
    return _run(sys.executable, "-m", "services.cli", *args, env=env)


def start_layout(
    directory: Path,
    *,
    database: str,
    oidc: Path,
    https_port: int,
    tls: Path,
    ca_file: Path,
    publication: Sequence[str] = (),
) -> Layout:
    """compose.yaml run as processes: its one-shot jobs, then each service on its own view;
    ``publication`` flags go to the trust service (what an operator adds to its command)."""
    host = directory / "sigstead-data"
    host.mkdir(parents=True, mode=0o700, exist_ok=True)  # the operator's `install -d`
    public_url = f"https://127.0.0.1:{https_port}"
    resolved = compose.resolve(
        SIGSTEAD_DB_PASSWORD="unused: the test database has no password",
        SIGSTEAD_PUBLIC_URL=public_url,
        SIGSTEAD_DATA_DIR=str(host),
        SIGSTEAD_TLS_DIR=str(tls),
    )
    layout = Layout(public_url, f"http://127.0.0.1:{free_port()}", host, resolved)
    services = compose.sigstead_services(resolved)
    try:
        for service in services.values():
            if compose.parse(service).command == "db":
                done = sigstead("db", "upgrade", "--database-url", database)
                assert done.returncode == 0, done.stderr
        for name, service in services.items():
            if compose.parse(service).command == "keys":
                layout.views[name] = compose.view(resolved, name, directory / "views")
                done = sigstead("keys", "init", "--data-dir", str(layout.views[name]))
                assert done.returncode == 0, done.stderr
        for name, service in services.items():
            args = compose.parse(service)
            if args.command != "serve":
                continue
            view = layout.views[name] = compose.view(resolved, name, directory / "views")
            extra = ["--public-url", args.public_url]
            if "PGPASSWORD" in service.get("environment", {}):
                extra += ["--database-url", database]
            if args.component == "ca":
                extra += ["--oidc-config", str(oidc)]
            if args.component == "log":
                extra += ["--access-log"]
            if args.component == "trust":
                extra += list(publication)
            if getattr(args, "workers", 1) > 1:  # serve tsa only
                extra += ["--workers", str(args.workers)]
            layout.servers[name] = start_server(view, *extra, command=("serve", args.component))
        site = nginx.rewrite(
            NGINX_CONF.read_text(),
            http=layout.plain_url.removeprefix("http://"),
            https=f"127.0.0.1:{https_port}",
            hosts={name: s.url.removeprefix("http://") for name, s in layout.servers.items()},
            tls_dir=tls,
        )
        layout.gateway = nginx.start(
            site, directory / "nginx", f"{public_url}/healthz/log", ca_file=ca_file
        )
    except BaseException:
        layout.stop()
        raise
    return layout


def _get(url: str, ca_file: Path) -> Any:
    context = ssl.create_default_context(cafile=str(ca_file))
    with urllib.request.urlopen(url, timeout=5, context=context) as resp:
        return json.load(resp)


def _sigstore(
    home: Path, trust: Path, ca_file: Path | None, *args: str
) -> subprocess.CompletedProcess[str]:
    tls = {} if ca_file is None else {"REQUESTS_CA_BUNDLE": str(ca_file)}
    env = client_env(home, **tls)
    config = str(trust / "client_trust_config.json")
    return _run(sys.executable, "-m", "sigstore", "--trust-config", config, *args, env=env)


@dataclass
class Signer:
    """sigstore-python, signing and verifying through one deployment's trust documents."""

    idp: IdP
    home: Path
    ca_file: Path | None  # the gateway's TLS CA; None over plain HTTP

    def sign(self, trust: Path, artifact: Path) -> Path:
        bundle = artifact.with_suffix(".sigstore.json")
        done = _sigstore(
            self.home, trust, self.ca_file, "sign", "--identity-token", self.idp.token(),
            "--bundle", str(bundle), str(artifact),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        self.verify(trust, artifact)
        return bundle

    def verify(self, trust: Path, artifact: Path) -> None:
        done = _sigstore(
            self.home, trust, self.ca_file, "verify", "identity", "--cert-identity", IDENTITY,
            "--cert-oidc-issuer", self.idp.url, "--bundle",
            str(artifact.with_suffix(".sigstore.json")), str(artifact),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr


def _log_index(bundle: Path) -> int:
    entry = json.loads(bundle.read_text())["verificationMaterial"]["tlogEntries"][0]
    # proto3 JSON leaves out a zero index.
    return int(entry.get("logIndex", "0"))


def _export(layout: Layout, out: Path, *publication: str) -> Path:
    """``trust export`` where compose.yaml says to run it: in the trust container."""
    done = sigstead(
        "trust", "export", "--data-dir", str(layout.views["trust"]),
        "--public-url", layout.public_url, "--out", str(out), *publication,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def _audit(url: str, state: Path, *args: str, ca_file: Path | None = None) -> dict[str, Any]:
    """``sigstead log --json …`` (checkpoint signature and consistency with ``state`` checked)."""
    done = sigstead(
        "log", "--url", url, "--state-dir", str(state), "--json", *args, ca_file=ca_file
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _files(directory: Path) -> dict[Path, tuple[bytes, int]]:
    return {
        p.relative_to(directory): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and "tuf" not in p.relative_to(directory).parts
    }


@pytest.mark.postgres
def test_signing_through_the_tls_gateway_with_isolated_keys_and_two_log_replicas(
    databases: Callable[[], str], tmp_path: Path
) -> None:
    idp = start_idp(tmp_path)
    oidc = write_email_issuer_config(tmp_path / "fulcio.json", idp.url)
    ca_file = nginx.make_tls(tmp_path / "tls")
    layout = start_layout(
        tmp_path / "deployment", database=databases(), oidc=oidc, https_port=free_port(),
        tls=tmp_path / "tls", ca_file=ca_file,
    )  # fmt: skip
    try:
        keys_before = _files(layout.host)
        trust = _export(layout, tmp_path / "trust")
        signer = Signer(idp, tmp_path / "home", ca_file)
        signer.home.mkdir()
        start = _get(f"{layout.public_url}/api/v1/log", ca_file)["treeSize"]
        ct_start = _get(f"{layout.public_url}/ct/v1/get-sth", ca_file)["tree_size"]
        indexes = []
        for i in range(4):
            artifact = tmp_path / f"artifact-{i}.txt"
            artifact.write_text(f"release {i}\n")
            indexes.append(_log_index(signer.sign(trust, artifact)))
        assert sorted(indexes) == list(range(start, start + 4))

        # Both replicas took entries (nginx alternates), and both see one tree.
        servers = layout.servers
        for name in ("log-1", "log-2"):
            port = servers[name].url.rsplit(":", 1)[1]
            log = (layout.views[name].parent / f"sigstead-{port}.log").read_text()
            assert '"POST /api/v1/log/entries HTTP/1.1" 201' in log, name
        heads = [_get(f"{servers[n].url}/api/v1/log", ca_file) for n in ("log-1", "log-2")]
        assert heads[0]["treeSize"] == heads[1]["treeSize"] == start + 4
        assert heads[0]["rootHash"] == heads[1]["rootHash"]
        for name in ("log-1", "log-2"):
            for index in indexes:
                url = f"{servers[name].url}/api/v1/log/entries?logIndex={index}"
                (entry,) = _get(url, ca_file).values()
                assert entry["logIndex"] == index
        # The CT log in the CA process holds the four precertificates.
        assert _get(f"{layout.public_url}/ct/v1/get-sth", ca_file)["tree_size"] == ct_start + 4

        # Each service ran on its container's files alone, and changed none of them.
        assert _files(layout.host) == keys_before
        for view in layout.views.values():
            assert not (view / "sigstead.db").exists(), "a service fell back to SQLite"
    finally:
        layout.stop()
        idp.stop()


def _v2_checkpoint(url: str, ca_file: Path) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(ca_file))
    with urllib.request.urlopen(f"{url}/api/v2/checkpoint", timeout=5, context=context) as resp:
        lines = resp.read().decode().split("\n")
    return int(lines[1]), lines[2]


@pytest.mark.postgres
def test_rekor_v2_through_the_gateway_on_two_log_replicas(
    databases: Callable[[], str], tmp_path: Path
) -> None:
    """The Rekor v2 client flow on the production layout: the trust service publishes v2
    first, sigstore-python signs to it through nginx (either replica takes the write) with a
    TSA timestamp, verifies, and both replicas serve one v2 tree."""
    idp = start_idp(tmp_path)
    oidc = write_email_issuer_config(tmp_path / "fulcio.json", idp.url)
    ca_file = nginx.make_tls(tmp_path / "tls")
    v2 = ("--rekor-version", "2")
    layout = start_layout(
        tmp_path / "deployment", database=databases(), oidc=oidc, https_port=free_port(),
        tls=tmp_path / "tls", ca_file=ca_file, publication=v2,
    )  # fmt: skip
    try:
        trust = _export(layout, tmp_path / "trust", *v2)
        signer = Signer(idp, tmp_path / "home", ca_file)
        signer.home.mkdir()
        start, _ = _v2_checkpoint(layout.public_url, ca_file)
        indexes = []
        for i in range(4):
            artifact = tmp_path / f"artifact-{i}.txt"
            artifact.write_text(f"release {i}\n")
            bundle = json.loads(signer.sign(trust, artifact).read_text())
            entry = bundle["verificationMaterial"]["tlogEntries"][0]
            assert entry["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}
            assert bundle["verificationMaterial"]["timestampVerificationData"]
            indexes.append(int(entry.get("logIndex", "0")))
        assert sorted(indexes) == list(range(start, start + 4))
        replicas = [_v2_checkpoint(layout.servers[n].url, ca_file) for n in ("log-1", "log-2")]
        assert replicas[0] == replicas[1]
        assert replicas[0][0] == start + 4
    finally:
        layout.stop()
        idp.stop()


@pytest.mark.postgres
def test_plain_http_and_the_gateway_health_check(
    databases: Callable[[], str], tmp_path: Path
) -> None:
    idp = start_idp(tmp_path)
    oidc = write_email_issuer_config(tmp_path / "fulcio.json", idp.url)
    ca_file = nginx.make_tls(tmp_path / "tls")
    https_port = free_port()
    layout = start_layout(
        tmp_path / "deployment", database=databases(), oidc=oidc, https_port=https_port,
        tls=tmp_path / "tls", ca_file=ca_file,
    )  # fmt: skip
    try:
        # Reads over plain HTTP are sent to https; anything else is refused, never forwarded.
        opener = urllib.request.build_opener(_NoRedirect())
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(f"{layout.plain_url}/api/v1/log?x=1", timeout=5)
        assert err.value.code == 301
        assert err.value.headers["Location"] == "https://127.0.0.1/api/v1/log?x=1"
        request = urllib.request.Request(
            f"{layout.plain_url}/api/v2/signingCert", data=b"{}", method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(request, timeout=5)
        assert err.value.code == 403
        assert json.loads(err.value.read()) == {
            "code": 403,
            "message": "sigstead answers over https only",
        }
        for name in layout.servers:
            port = layout.servers[name].url.rsplit(":", 1)[1]
            log = (layout.views[name].parent / f"sigstead-{port}.log").read_text()
            assert "signingCert" not in log, "a plain-HTTP request reached a service"

        # compose's own health check command, run against this gateway.
        kind, test = layout.resolved["services"]["gateway"]["healthcheck"]["test"]
        assert kind == "CMD-SHELL"
        command = test.replace("$$", "$").replace("127.0.0.1:8443", f"127.0.0.1:{https_port}")
        if shutil.which("curl") is None:
            pytest.fail("curl is not installed: apt-get install curl")
        assert subprocess.run(["sh", "-c", command], check=False, timeout=30).returncode == 0
        for component in ("log", "ca", "tsa", "trust"):
            health = _get(f"{layout.public_url}/healthz/{component}", ca_file)
            assert health == {"status": "ok"}, component
        # One service down: the gateway is unhealthy, and says which.
        stop_server(layout.servers["tsa"])
        assert subprocess.run(["sh", "-c", command], check=False, timeout=30).returncode != 0
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(f"{layout.public_url}/healthz/tsa", ca_file)
        assert err.value.code == 502
        assert _get(f"{layout.public_url}/healthz/ca", ca_file) == {"status": "ok"}
    finally:
        layout.stop()
        idp.stop()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.mark.postgres
def test_backup_and_restore_into_a_new_deployment(
    databases: Callable[[], str], tmp_path: Path
) -> None:
    """pg_dump and ``sigstead backup`` of a running deployment; a new one, with a new database
    and new directories, made from the backup alone: the old bundles verify there, the trust
    documents are the same bytes, and the log continues from the checkpoint a monitor holds."""
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.fail("pg_dump is not installed: apt-get install postgresql-client")
    idp = start_idp(tmp_path)
    oidc = write_email_issuer_config(tmp_path / "fulcio.json", idp.url)
    ca_file = nginx.make_tls(tmp_path / "tls")
    https_port = free_port()
    signer = Signer(idp, tmp_path / "home", ca_file)
    signer.home.mkdir()
    monitor = tmp_path / "monitor"
    backup = tmp_path / "backup"
    backup.mkdir(mode=0o700)

    old_db = databases()
    old = start_layout(
        tmp_path / "old", database=old_db, oidc=oidc, https_port=https_port,
        tls=tmp_path / "tls", ca_file=ca_file,
    )  # fmt: skip
    try:
        old_trust = _export(old, tmp_path / "old-trust")
        artifacts = [tmp_path / f"old-{i}.txt" for i in range(2)]
        bundles = []
        for artifact in artifacts:
            artifact.write_text(f"signed before the backup: {artifact.name}\n")
            bundles.append(signer.sign(old_trust, artifact))
        seen = _audit(old.public_url, monitor, "info", ca_file=ca_file)
        ct_seen = _get(f"{old.public_url}/ct/v1/get-sth", ca_file)["tree_size"]
        published = tuf_repository(old.host).published()

        # docs/deploy.md's order, everything running: the database, then the files.
        done = _run("pg_dump", "--format=custom", "--file", str(backup / "sigstead.pgdump"), old_db)
        assert done.returncode == 0, done.stderr
        done = sigstead(
            "backup", "--data-dir", str(old.host), "--out", str(backup / "sigstead-data"),
            "--database-url", old_db,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "back it up now with pg_dump" in done.stdout
    finally:
        old.stop()

    # A new deployment from the backup alone: a new database, new directories, and the public
    # URL the clients know (the same port: the old gateway has gone).
    new_db = databases()
    done = _run("pg_restore", "--no-owner", "--exit-on-error", "--dbname", new_db,
                str(backup / "sigstead.pgdump"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    (tmp_path / "new").mkdir()
    done = _run("cp", "-a", str(backup / "sigstead-data"), str(tmp_path / "new" / "sigstead-data"))
    assert done.returncode == 0, done.stderr
    new = start_layout(
        tmp_path / "new", database=new_db, oidc=oidc, https_port=https_port,
        tls=tmp_path / "tls", ca_file=ca_file,
    )  # fmt: skip
    try:
        # The same trust documents, byte for byte, and the same TUF versions: clients notice
        # nothing.
        new_trust = _export(new, tmp_path / "new-trust")
        for name in ("trusted_root.json", "signing_config.v0.2.json"):
            assert (new_trust / name).read_bytes() == (old_trust / name).read_bytes(), name
        assert tuf_repository(new.host).published() == published

        # The old bundles verify there, and their entries are in the restored log, proven
        # against checkpoints consistent with the one the monitor saw before the backup.
        assert _audit(new.public_url, monitor, "info", ca_file=ca_file) == seen
        for artifact, bundle in zip(artifacts, bundles, strict=True):
            signer.verify(new_trust, artifact)
            entry = _audit(
                new.public_url, monitor, "get", "--index", str(_log_index(bundle)),
                ca_file=ca_file,
            )  # fmt: skip
            body = json.loads(bundle.read_text())["verificationMaterial"]["tlogEntries"][0]
            assert entry["index"] == _log_index(bundle)
            assert entry["kind"] == body["kindVersion"]["kind"]

        # New signatures work, and the log continues right after the last entry backed up.
        artifact = tmp_path / "new-0.txt"
        artifact.write_text("signed after the restore\n")
        assert _log_index(signer.sign(new_trust, artifact)) == seen["treeSize"]
        grown = _audit(new.public_url, monitor, "info", ca_file=ca_file)
        assert grown["treeSize"] == seen["treeSize"] + 1
        assert _get(f"{new.public_url}/ct/v1/get-sth", ca_file)["tree_size"] == ct_seen + 1
    finally:
        new.stop()
        idp.stop()


def _writer(url: str, stop: threading.Event, written: list[int], limit: int = 0) -> None:
    """Log hashedrekord entries from a throwaway key, as other signers would, until ``stop`` is
    set or (with ``limit``) ``written`` counts that many."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    while not stop.is_set() and not (limit and len(written) >= limit):
        artifact = f"someone else's artifact {uuid.uuid4()}".encode()
        body = hashedrekord_body(
            key_pem,
            key.sign(artifact, ec.ECDSA(hashes.SHA256())),
            hashlib.sha256(artifact).hexdigest(),
        )
        request = urllib.request.Request(
            f"{url}/api/v1/log/entries", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 201
            written.append(1)


def _wait_for(written: list[int], count: int) -> None:
    while len(written) < count:
        threading.Event().wait(0.01)


def test_sqlite_backup_while_the_server_writes_and_restore(tmp_path: Path) -> None:
    """``sigstead backup`` of a running ``sigstead up`` that is taking entries, restored as a
    new data directory; what was logged after the backup is not in it, and a monitor that saw
    it catches the fork."""
    idp = start_idp(tmp_path)
    oidc = write_email_issuer_config(tmp_path / "fulcio.json", idp.url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    signer = Signer(idp, tmp_path / "home", ca_file=None)
    signer.home.mkdir()
    data, restored = tmp_path / "old" / "data", tmp_path / "new" / "data"
    data.parent.mkdir()
    server = start_server(data, "--oidc-config", str(oidc), port=port)
    try:
        trust = tmp_path / "trust"
        done = sigstead("trust", "export", "--data-dir", str(data), "--public-url", url,
                        "--out", str(trust))  # fmt: skip
        assert done.returncode == 0, done.stderr
        artifacts = [tmp_path / f"old-{i}.txt" for i in range(2)]
        for artifact in artifacts:
            artifact.write_text(f"signed before the backup: {artifact.name}\n")
            signer.sign(trust, artifact)
        seen = _audit(url, tmp_path / "monitor", "info")

        # The backup, while other signers keep writing.
        stop, written = threading.Event(), list[int]()
        writers = [threading.Thread(target=_writer, args=(url, stop, written)) for _ in range(4)]
        for thread in writers:
            thread.start()
        try:
            _wait_for(written, 20)
            before = len(written)
            done = sigstead("backup", "--data-dir", str(data), "--out", str(tmp_path / "backup"))
            after = len(written)
            _wait_for(written, after + 20)
        finally:
            stop.set()
            for thread in writers:
                thread.join()
        assert done.returncode == 0, done.stderr
        assert after > before, "no entry was written while the backup ran"
        (tree_line,) = [line for line in done.stdout.splitlines() if line.startswith("database:")]
        # One "'<origin>' at size N" per tree (Rekor v1, Rekor v2, CT): the v1 log's.
        sizes = dict(re.findall(r"'([^']+)' at size (\d+)", tree_line))
        backed_up = int(sizes[seen["origin"]])
        assert seen["treeSize"] + before <= backed_up <= seen["treeSize"] + after
        lost = _audit(url, tmp_path / "saw-more", "info")
        assert lost["treeSize"] > backed_up
    finally:
        stop_server(server)

    # The backup is a data directory: restoring it is copying it where the server runs.
    restored.parent.mkdir()
    done = _run("cp", "-a", str(tmp_path / "backup"), str(restored))
    assert done.returncode == 0, done.stderr
    server = start_server(restored, "--oidc-config", str(oidc), port=port)
    try:
        # The same trust documents, so the clients' exported files keep working.
        again = tmp_path / "trust-again"
        done = sigstead("trust", "export", "--data-dir", str(restored), "--public-url", url,
                        "--out", str(again))  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (again / "trusted_root.json").read_bytes() == (
            trust / "trusted_root.json"
        ).read_bytes()
        for artifact in artifacts:
            signer.verify(trust, artifact)
        restart = _audit(url, tmp_path / "monitor", "info")
        assert restart["treeSize"] == backed_up
        artifact = tmp_path / "new.txt"
        artifact.write_text("signed after the restore\n")
        assert _log_index(signer.sign(trust, artifact)) == backed_up
        assert _audit(url, tmp_path / "monitor", "info")["treeSize"] == backed_up + 1

        # Entries acknowledged after the backup are gone; once the restored log grows past
        # the checkpoint a monitor saw then, that monitor proves the fork.
        _writer(url, threading.Event(), [], limit=lost["treeSize"] - backed_up)
        done = sigstead("log", "--url", url, "--state-dir", str(tmp_path / "saw-more"), "info")
        assert done.returncode == 1
        assert "the log forked or rewrote history" in done.stderr
    finally:
        stop_server(server)
        idp.stop()
