"""The ``sigstead`` command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.ca import keys as ca_keys
from services.db import Database, sqlite_url
from services.migrate import check_at_head
from tests.serverproc import free_port
from tests.services.ca.oidc_issuer import write_email_issuer_config


def test_db_upgrade_creates_a_migrated_database(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    subprocess.run(
        [sys.executable, "-m", "services.cli", "db", "upgrade", "--database-url", sqlite_url(path)],
        check=True,
    )

    async def check() -> None:
        db = Database(sqlite_url(path))
        try:
            await check_at_head(db)
        finally:
            await db.dispose()

    asyncio.run(check())


def test_database_url_from_the_environment(tmp_path: Path) -> None:
    """SIGSTEAD_DATABASE_URL stands in for --database-url (a password stays out of ``ps``)."""
    path = tmp_path / "env.db"
    env = {**os.environ, "SIGSTEAD_DATABASE_URL": sqlite_url(path)}
    subprocess.run([sys.executable, "-m", "services.cli", "db", "upgrade"], check=True, env=env)
    assert path.is_file()
    env.pop("SIGSTEAD_DATABASE_URL")
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "db", "upgrade"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert "the following arguments are required: --database-url" in done.stderr


def test_unknown_command_fails() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "frobnicate"], capture_output=True, check=False
    )
    assert proc.returncode == 2
    assert b"invalid choice" in proc.stderr


def oidc_config_file(tmp_path: Path) -> Path:
    """A Fulcio config with one email issuer that is never contacted (no test sends a token)."""
    return write_email_issuer_config(tmp_path / "fulcio.json", "http://127.0.0.1:1/idp")


def serve_ca(tmp_path: Path, *flags: str) -> tuple[str, list[str]]:
    """Run ``sigstead serve ca FLAGS`` until it answers; return its log and its trust bundle."""
    port = free_port()
    log_path = tmp_path / "serve-ca.log"
    command = [sys.executable, "-m", "services.cli", "serve", "ca", "--port", str(port)]
    command += [
        "--data-dir",
        str(tmp_path / "data"),
        "--oidc-config",
        str(oidc_config_file(tmp_path)),
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*command, *flags], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"exited with {proc.returncode}: {log_path.read_text()}")
            try:
                url = f"http://127.0.0.1:{port}/api/v2/trustBundle"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    bundle = json.load(resp)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    certificates: list[str] = bundle["chains"][0]["certificates"]
    return log_path.read_text(), certificates


def test_serve_ca_with_the_operators_key_files(tmp_path: Path) -> None:
    password = "pw-8d2e51-never-logged"
    _, ca_key, chain = ca_keys.generate(datetime.now(UTC))
    key_path, chain_path, password_path = (tmp_path / n for n in ("ca.key", "chain.pem", "pw"))
    key_path.write_bytes(
        ca_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password.encode()),
        )
    )
    key_path.chmod(0o600)
    chain_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    password_path.write_text(password + "\n")
    password_path.chmod(0o600)
    log, pems = serve_ca(
        tmp_path,
        *("--ca-key", str(key_path), "--ca-key-password-file", str(password_path)),
        *("--ca-chain", str(chain_path)),
    )
    assert [x509.load_pem_x509_certificate(p.encode()) for p in pems] == list(chain)
    assert not (tmp_path / "data" / "ca").exists()  # nothing generated beside the operator's
    assert password not in log


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ca-chain", "c.pem"], "the --ca-* flags need --oidc-config"),
        (["--ca-pkcs11-token", "t"], "--ca-pkcs11-* flags need --ca-pkcs11-module"),
        (["--ca-pkcs11-module", "m.so", "--ca-pkcs11-key-label", "k"], "needs the token label"),
        (["--ca-pkcs11-module", "m.so", "--ca-pkcs11-token", "t"], "a key label or a key id"),
        (["--ca-key", "k.pem", "--config"], "a CA key file needs its chain file"),
        (["--ca-chain", "c.pem", "--config"], "needs a CA key file or a PKCS#11 key"),
    ],
)
def test_ca_key_flags_are_checked(tmp_path: Path, flags: list[str], message: str) -> None:
    if flags[-1] == "--config":
        flags = [*flags[:-1], "--oidc-config", str(oidc_config_file(tmp_path))]
    command = [sys.executable, "-m", "services.cli", "serve", "ca", "--port", "1"]
    proc = subprocess.run(
        [*command, "--data-dir", str(tmp_path / "data"), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def _trust_export(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "trust",
            "export",
            "--data-dir",
            str(data),
            "--public-url",
            "http://sigstead.internal:3000",
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_trust_export_refuses_a_data_directory_without_keys(tmp_path: Path) -> None:
    """A mistyped --data-dir must not become a trust root for keys no server holds."""
    data, out = tmp_path / "typo", tmp_path / "trust"
    done = _trust_export(data, out)
    assert done.returncode == 1
    assert f"sigstead: {data} holds no keys/rekor.pub, keys/ctlog.pub" in done.stderr
    assert "(or pass --init)" in done.stderr
    assert "Traceback" not in done.stderr
    assert not data.exists()
    assert not out.exists()

    done = _trust_export(data, out, "--init")
    assert done.returncode == 0, done.stderr
    assert (out / "trusted_root.json").is_file()
    assert (data / "keys" / "rekor.pem").is_file()
    # The keys exist now: a plain export reads them and changes nothing.
    before = (out / "trusted_root.json").read_bytes()
    done = _trust_export(data, out)
    assert done.returncode == 0, done.stderr
    assert (out / "trusted_root.json").read_bytes() == before


def test_keys_init_creates_every_key_once(tmp_path: Path) -> None:
    data = tmp_path / "data"

    def init() -> list[str]:
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "keys", "init", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "PRIVATE KEY" not in done.stdout + done.stderr
        return done.stdout.splitlines()

    first = init()
    assert [line.split()[0] for line in first] == ["rekor", "CT", "CA", "TSA"]
    assert data.stat().st_mode & 0o777 == 0o700
    for key in [data / "keys" / "rekor.pem", data / "keys" / "ctlog.pem", data / "ca" / "ca.key"]:
        assert key.stat().st_mode & 0o777 == 0o600, key
    assert init() == first  # a second run reads the same keys
    # What it prints is what the trust documents publish.
    exported = _trust_export(data, tmp_path / "trust")
    assert exported.returncode == 0, exported.stderr
    root = json.loads((tmp_path / "trust" / "trusted_root.json").read_text())
    assert root["tlogs"][0]["logId"]["keyId"] == first[0].split()[3]
    assert root["ctlogs"][0]["logId"]["keyId"] == first[1].split()[3]


def test_backup_through_the_command(tmp_path: Path) -> None:
    data = tmp_path / "data"

    def backup(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "backup", "--data-dir", str(data), *args],
            capture_output=True,
            text=True,
            check=False,
            env={k: v for k, v in os.environ.items() if k != "SIGSTEAD_DATABASE_URL"},
        )

    done = backup("--out", str(tmp_path / "b1"))
    assert done.returncode == 1
    assert done.stderr == f"sigstead: not backed up: {data}: not a data directory\n"
    init = subprocess.run(
        [sys.executable, "-m", "services.cli", "keys", "init", "--data-dir", str(data)],
        capture_output=True,
        check=False,
    )
    assert init.returncode == 0
    done = backup("--out", str(tmp_path / "b1"), "--database-url", "postgresql://u@db/sigstead")
    assert done.returncode == 0, done.stderr
    files = [p for p in data.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert done.stdout.splitlines() == [
        f"wrote {tmp_path / 'b1'}: {len(files)} key and TUF files",
        "database: not SQLite; back it up now with pg_dump (docs/deploy.md)",
    ]
    done = backup("--out", str(tmp_path / "b1"), "--database-url", "postgresql://u@db/sigstead")
    assert done.returncode == 1
    assert "a backup never overwrites one" in done.stderr
    assert "Traceback" not in done.stderr
