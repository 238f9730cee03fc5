"""The ``sigstead`` command line, run as a user runs it: a fresh process per command.

Every ordinary mistake is refused with one line saying what is wrong (and no traceback), before
anything is created; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.ca import devissuer
from services.ca import keys as ca_keys
from services.cli import DEV_ISSUER, _freeze_heap, _parser
from services.db import Database, sqlite_url
from services.migrate import check_at_head
from tests.serverproc import free_port, start_server, stop_server
from tests.services.ca.oidc_issuer import write_email_issuer_config


def sigstead(
    *args: str, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def refused(done: subprocess.CompletedProcess[str], message: str) -> str:
    """Assert a refusal: exit status 1 and one ``sigstead:`` line holding ``message``, with no
    traceback (log lines of what started before the mistake showed may precede it)."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("sigstead: ")]
    assert len(lines) == 1, done.stderr
    assert message in lines[0], lines[0]
    return lines[0]


def unprivileged() -> tuple[str, ...]:
    """A command prefix under which file permissions apply (root ignores them otherwise)."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")


def oidc_config_file(tmp_path: Path) -> Path:
    """A Fulcio config with one email issuer that is never contacted (no test sends a token)."""
    return write_email_issuer_config(tmp_path / "fulcio.json", "http://127.0.0.1:1/idp")


# --- the parser ---------------------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_every_option_says_what_it_does() -> None:
    for parser in _parsers(_parser()):
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{parser.prog} {action.option_strings or action.dest}"


def test_help_shows_defaults_and_the_environment() -> None:
    done = sigstead("--help")
    assert done.returncode == 0
    for name in ("SIGSTEAD_URL", "SIGSTEAD_STATE_DIR", "SIGSTEAD_DATABASE_URL", "PGPASSWORD"):
        assert name in done.stdout
    assert "-v" in done.stdout
    up = " ".join(sigstead("up", "--help").stdout.split())
    assert "(default: 127.0.0.1)" in up
    assert "(default: 3000)" in up
    assert "(default: sigstead-data)" in up
    log = " ".join(sigstead("log", "--help").stdout.split())
    assert "SIGSTEAD_URL" in log
    assert "pinned on first use" in log


def test_serve_takes_only_the_options_of_its_service() -> None:
    log = sigstead("serve", "log", "--help").stdout
    assert "--database-url" in log
    for foreign in ("--oidc-config", "--ca-key", "--operator", "--services"):
        assert foreign not in log, foreign
    # Replicas on one database elect a sequencer and forward to it.
    assert "--sequencer-url" in log
    tsa = sigstead("serve", "tsa", "--help").stdout
    assert "--workers" in tsa
    assert "--database-url" not in tsa
    done = sigstead("serve", "log", "--oidc-config", "x.yaml")
    assert done.returncode == 2
    assert "unrecognized arguments: --oidc-config" in done.stderr


def test_the_command_line_loads_no_service_library_until_a_command_runs() -> None:
    """What keeps ``sigstead --help`` fast (about 0.1 s, against 1.1 s with eager imports)."""
    code = (
        "import sys; from services.cli import _parser; _parser().format_help(); "
        "loaded = {m.split('.')[0] for m in sys.modules}; "
        "print(sorted(loaded & {'aiohttp', 'sqlalchemy', 'cryptography', 'tuf', 'alembic'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_dev_issuer_default_is_the_dev_issuers() -> None:
    assert DEV_ISSUER == devissuer.DEFAULT_ISSUER


def test_unknown_command_fails() -> None:
    done = sigstead("frobnicate")
    assert done.returncode == 2
    assert "invalid choice" in done.stderr


def test_verbose_adds_the_traceback(tmp_path: Path) -> None:
    data = tmp_path / "file"
    data.write_text("")
    refused(sigstead("up", "--data-dir", str(data)), "is a file")
    done = sigstead("up", "-v", "--data-dir", str(data))
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert "DataDirError" in done.stderr


# --- database -----------------------------------------------------------------------------------


def test_db_upgrade_creates_a_migrated_database(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    done = sigstead("db", "upgrade", "--database-url", sqlite_url(path))
    assert done.returncode == 0, done.stderr
    assert f"{sqlite_url(path)}: at the newest schema" in done.stdout

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
    assert sigstead("db", "upgrade", env=env).returncode == 0
    assert path.is_file()
    env.pop("SIGSTEAD_DATABASE_URL")
    done = sigstead("db", "upgrade", env=env)
    assert done.returncode == 2
    assert "the following arguments are required: --database-url" in done.stderr


@pytest.mark.postgres
def test_a_postgres_url_simply_works(empty_postgres: Iterator[str], tmp_path: Path) -> None:
    url = next(empty_postgres).replace("postgresql://", "postgres://", 1)
    assert url.startswith("postgres://")
    server = start_server(tmp_path / "data", "--database-url", url)
    try:
        with urllib.request.urlopen(f"{server.url}/api/v1/log", timeout=5) as resp:
            assert json.load(resp)["treeSize"] == 1  # the log's own genesis entry
    finally:
        assert stop_server(server) == 0
    assert "database postgresql://" in server.log.read_text()  # as it was understood


# --- ordinary mistakes: one line, nothing created ---------------------------------------------

Case = Callable[[Path], tuple[list[str], str]]


def _port_in_use(tmp_path: Path) -> tuple[list[str], str]:
    port = free_port()
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    _held.append(holder)
    return ["--port", str(port)], f"cannot listen on 127.0.0.1:{port}: Address already in use"


_held: list[socket.socket] = []


def _data_dir_is_a_file(tmp_path: Path) -> tuple[list[str], str]:
    (tmp_path / "data").write_text("")
    return [], "is a file, not a directory"


def _data_dir_without_parent(tmp_path: Path) -> tuple[list[str], str]:
    return ["--data-dir", str(tmp_path / "missing" / "data")], "missing does not exist"


def _oidc(text: str, message: str) -> Case:
    def case(tmp_path: Path) -> tuple[list[str], str]:
        config = tmp_path / "fulcio.yaml"
        config.write_text(text)
        return ["--oidc-config", str(config)], f"{config}: {message}"

    return case


def _database(url: str, message: str) -> Case:
    return lambda tmp_path: (["--database-url", url.format(tmp=tmp_path)], message)


MISTAKES: dict[str, Case] = {
    "port in use": _port_in_use,
    "data dir is a file": _data_dir_is_a_file,
    "data dir without parent": _data_dir_without_parent,
    "oidc config missing": lambda tmp_path: (
        ["--oidc-config", str(tmp_path / "nope.yaml")],
        f"{tmp_path / 'nope.yaml'}: No such file or directory",
    ),
    "oidc config broken yaml": _oidc("oidc-issuers: [unclosed\n", "neither JSON nor YAML"),
    "oidc config wrong shape": _oidc("- a\n- b\n", "configuration: want a mapping, got list"),
    "oidc config unknown type": _oidc(
        "oidc-issuers:\n  https://idp.example:\n    client-id: s\n    type: bogus\n",
        "oidc-issuers[\"https://idp.example\"].type: unknown issuer type 'bogus'",
    ),
    "oidc config no issuers": _oidc("oidc-issuers: {}\n", "no issuers configured"),
    "oidc config http issuer": _oidc(
        "oidc-issuers:\n  http://idp.example:\n    client-id: s\n    type: email\n",
        'oidc-issuers["http://idp.example"]: http://idp.example is plain http; set '
        "allow-insecure-http on this issuer",
    ),
    "database url unparsable": _database("not a url", "the database URL cannot be parsed"),
    "database url unsupported": _database("mysql://u@h/d", "unsupported database 'mysql'"),
    "database url sqlite missing folder": _database(
        "sqlite:///{tmp}/nowhere/s.db", "nowhere does not exist"
    ),
    "database url refused": _database(
        f"postgresql://postgres:pw@127.0.0.1:{free_port()}/test", "cannot connect to 127.0.0.1"
    ),
    "port out of range": lambda tmp_path: (["--port", "99999"], "--port 99999: not a TCP port"),
    "host unknown": lambda tmp_path: (["--host", "sigstead.invalid"], "--host sigstead.invalid: "),
    "public url with a path": lambda tmp_path: (
        ["--public-url", "http://sigstead.example/log"],
        "no path, clients expect the services at the root",
    ),
    "oidc url without a CA": lambda tmp_path: (
        ["--oidc-url", "https://idp.example"],
        "--oidc-url names where clients sign in for the CA, and there is no CA",
    ),
    "ca flags without a CA": lambda tmp_path: (
        ["--ca-chain", "c.pem"],
        "the --ca-* flags need --oidc-config",
    ),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_an_ordinary_mistake_is_one_line_and_creates_nothing(tmp_path: Path, case: str) -> None:
    data = tmp_path / "data"
    try:
        flags, message = MISTAKES[case](tmp_path)
        done = sigstead("up", "--data-dir", str(data), "--port", str(free_port()), *flags)
    finally:
        for held in _held:
            held.close()
        _held.clear()
    line = refused(done, message)
    assert "pw" not in line.replace("postgres:***", "")  # a password is never echoed
    if case != "data dir is a file":
        assert not data.exists()
    assert not (tmp_path / "missing").exists()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"database": "sigstead_no_such_db"}, 'database "sigstead_no_such_db" does not exist'),
        ({"username": "sigstead_no_such_role"}, 'role "sigstead_no_such_role" does not exist'),
    ],
)
def test_a_database_that_is_not_there_is_one_line(
    tmp_path: Path, change: dict[str, str], message: str
) -> None:
    from sqlalchemy.engine import make_url

    from tests.conftest import POSTGRES_URL

    url = make_url(POSTGRES_URL).set(drivername="postgresql", **change)  # type: ignore[arg-type]
    data = tmp_path / "data"
    done = sigstead("up", "--data-dir", str(data), "--database-url", url.render_as_string(False))
    refused(done, message)
    assert not data.exists()


def test_a_port_in_use_stops_a_worker_pool_before_it_forks(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    with holder:
        done = sigstead(
            "serve", "tsa", "--workers", "2", "--data-dir", str(tmp_path / "d"), "--port", str(port)
        )
    refused(done, f"cannot listen on 127.0.0.1:{port}: Address already in use")
    assert not (tmp_path / "d").exists()


def test_an_unwritable_data_directory_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o500)
    done = sigstead("up", "--data-dir", str(data), prefix=unprivileged())
    refused(done, "is not writable by this user")
    assert list(data.iterdir()) == []


def test_a_key_file_others_can_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert sigstead("keys", "init", "--data-dir", str(data)).returncode == 0
    key = data / "keys" / "rekor.pem"
    key.chmod(0o644)
    done = sigstead("up", "--data-dir", str(data), "--port", str(free_port()))
    refused(done, f"permissions 644 are too open for a private key, want 600 (chmod 600 {key})")


def test_serve_ca_without_a_config_refuses_to_start(tmp_path: Path) -> None:
    done = sigstead("serve", "ca", "--data-dir", str(tmp_path / "data"))
    refused(done, "the CA needs --oidc-config: with no identity provider it has nothing to serve")
    assert not (tmp_path / "data").exists()


def test_trust_export_onto_a_file_is_one_line(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "trust"
    assert sigstead("keys", "init", "--data-dir", str(data)).returncode == 0
    out.write_text("not a directory")
    done = sigstead(
        "trust", "export", "--data-dir", str(data), "--public-url", "http://h:1", "--out", str(out)
    )
    refused(done, f"--out {out} is a file; give a directory to write into")


def test_a_dev_issuer_token_before_init_is_one_line(tmp_path: Path) -> None:
    directory = tmp_path / "dev-issuer"
    done = sigstead("dev-issuer", "token", "--dir", str(directory), "--email", "a@example.com")
    refused(done, f"{directory} holds no dev issuer: run `sigstead dev-issuer init")
    assert not directory.exists()


def test_a_dev_issuer_token_to_a_file_is_private_and_has_no_newline(tmp_path: Path) -> None:
    directory, token = tmp_path / "dev-issuer", tmp_path / "token"
    assert sigstead("dev-issuer", "init", "--dir", str(directory)).returncode == 0
    args = ("dev-issuer", "token", "--dir", str(directory), "--email", "a@example.com")
    done = sigstead(*args, "--out", str(token))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert token.stat().st_mode & 0o777 == 0o600
    assert token.read_text().count(".") == 2
    assert not token.read_text().endswith("\n")
    refused(sigstead(*args, "--out", str(tmp_path / "missing" / "t")), "cannot write the token to")


# --- the CA's key flags ---------------------------------------------------------------------------


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
    assert "serve ca: serving CA with its CT log at http://127.0.0.1:" in log


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ca-pkcs11-token", "t"], "--ca-pkcs11-* flags need --ca-pkcs11-module"),
        (["--ca-pkcs11-module", "m.so", "--ca-pkcs11-key-label", "k"], "needs the token label"),
        (["--ca-pkcs11-module", "m.so", "--ca-pkcs11-token", "t"], "a key label or a key id"),
        (["--ca-key", "k.pem"], "a CA key file needs its chain file"),
        (["--ca-chain", "c.pem"], "needs a CA key file or a PKCS#11 key"),
        (["--ca-key", "k.pem", "--ca-chain", "c.pem"], "c.pem: No such file or directory"),
    ],
)
def test_ca_key_flags_are_checked(tmp_path: Path, flags: list[str], message: str) -> None:
    config = str(oidc_config_file(tmp_path))
    data = tmp_path / "data"
    done = sigstead("serve", "ca", "--data-dir", str(data), "--oidc-config", config, *flags)
    refused(done, message)
    assert not data.exists()


# --- keys and trust -------------------------------------------------------------------------------


def _trust_export(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return sigstead(
        "trust",
        "export",
        "--data-dir",
        str(data),
        "--public-url",
        "http://sigstead.internal:3000",
        "--out",
        str(out),
        *extra,
    )


def test_trust_export_refuses_a_data_directory_without_keys(tmp_path: Path) -> None:
    """A mistyped --data-dir must not become a trust root for keys no server holds."""
    data, out = tmp_path / "typo", tmp_path / "trust"
    done = _trust_export(data, out)
    refused(done, f"sigstead: {data} holds no keys/rekor.pub, keys/ctlog.pub")
    assert "(or pass --init)" in done.stderr
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
        done = sigstead("keys", "init", "--data-dir", str(data))
        assert done.returncode == 0, done.stderr
        assert "PRIVATE KEY" not in done.stdout + done.stderr
        return done.stdout.splitlines()

    first = init()
    assert [" ".join(line.split()[:2]) for line in first[:3]] == ["rekor log", "rekor v2", "CT log"]
    assert [line.split()[0] for line in first[3:]] == ["CA", "TSA"]
    assert data.stat().st_mode & 0o777 == 0o700
    for key in [data / "keys" / "rekor.pem", data / "keys" / "ctlog.pem", data / "ca" / "ca.key"]:
        assert key.stat().st_mode & 0o777 == 0o600, key
    assert init() == first  # a second run reads the same keys
    # What it prints is what the trust documents publish.
    exported = _trust_export(data, tmp_path / "trust")
    assert exported.returncode == 0, exported.stderr
    root = json.loads((tmp_path / "trust" / "trusted_root.json").read_text())
    assert root["tlogs"][0]["logId"]["keyId"] == first[0].split()[3]
    assert root["tlogs"][1]["logId"]["keyId"] == first[1].split()[3]
    assert root["ctlogs"][0]["logId"]["keyId"] == first[2].split()[3]


def test_keys_init_makes_the_key_types_asked_for_once(tmp_path: Path) -> None:
    """A P-256 CA (its signatures ~7x cheaper than P-384's) and an Ed25519 Rekor v2 log;
    a type is chosen when a key is made, and a later run keeps what exists."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from services.ca.keys import CAKeyType
    from services.keys import load_private_key
    from services.settings import CA_KEY_TYPES

    assert set(CA_KEY_TYPES) == {t.value for t in CAKeyType}
    data = tmp_path / "data"
    for key_types in (["ecdsa-p256", "ed25519"], ["rsa-3072", "ecdsa-p256"]):
        done = sigstead(
            "keys", "init", "--data-dir", str(data),
            "--ca-key-type", key_types[0], "--rekor-v2-key-type", key_types[1],
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "rekor v2 key   ed25519:" in done.stdout  # its log ID needs the host
        ca = load_private_key(data / "ca" / "ca.key")
        assert isinstance(ca, ec.EllipticCurvePrivateKey)
        assert ca.curve.name == "secp256r1"
        root = load_private_key(data / "ca" / "root.key")
        assert isinstance(root, ec.EllipticCurvePrivateKey)
        assert root.curve.name == "secp256r1"
        assert isinstance(
            load_private_key(data / "keys" / "rekor-v2.pem"), ed25519.Ed25519PrivateKey
        )
    refused = sigstead(
        "up", "--data-dir", str(data), "--ca-key-type", "ecdsa-p256",
        "--ca-key", str(data / "ca" / "ca.key"), "--ca-chain", str(data / "ca" / "chain.pem"),
        "--oidc-config", str(tmp_path / "none.json"),
    )  # fmt: skip
    assert refused.returncode != 0
    assert "--ca-key-type is for a CA generated in the data directory" in refused.stderr


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


# --- one owner, one publisher -----------------------------------------------------------------


def test_a_second_server_on_a_data_directory_refuses_naming_the_first(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_server(data)
    try:
        pid = first.process.pid
        for command in (["up"], ["serve", "log"], ["serve", "trust"]):
            done = sigstead(*command, "--data-dir", str(data), "--port", str(free_port()))
            line = refused(done, f"{data} is in use by `sigstead up` (pid {pid} on ")
            assert f", {first.url}, since 20" in line
        # Beside it: keys init reads (and would add) keys, an export reads what it publishes.
        keys = sigstead("keys", "init", "--data-dir", str(data))
        assert keys.returncode == 0, keys.stderr
        exported = sigstead(
            "trust",
            "export",
            "--data-dir",
            str(data),
            "--public-url",
            first.url,
            "--out",
            str(tmp_path / "trust"),
        )
        assert exported.returncode == 0, exported.stderr
        root = json.loads((tmp_path / "trust" / "trusted_root.json").read_text())
        assert root["tlogs"][0]["logId"]["keyId"] == keys.stdout.split()[3]
        # Republishing is the publisher's: refused while the server runs.
        done = sigstead(
            "trust", "publish", "--data-dir", str(data), "--public-url", "http://elsewhere:1"
        )
        refused(done, f"{data} is in use by `sigstead up` (pid {pid} on ")
        with urllib.request.urlopen(f"{first.url}/healthz", timeout=5) as resp:
            assert resp.status == 200
    finally:
        first.process.send_signal(signal.SIGKILL)  # however it ends, its claim ends with it
        first.process.wait()
    second = start_server(data, port=first.port)
    assert stop_server(second) == 0
    log = second.log.read_text()
    assert f"up: serving Rekor log, timestamp authority, TUF repository at {second.url}" in log
    assert f"data directory {data}" in log
    assert f"up on {second.url}: stopped" in log


def _signing_config(data: Path) -> dict[str, list[dict[str, str]]]:
    from services.trust.publish import SIGNING_CONFIG, tuf_repository

    config = tuf_repository(data).current_target(SIGNING_CONFIG)
    assert config is not None
    parsed: dict[str, list[dict[str, str]]] = json.loads(config)
    return parsed


def test_a_server_publishes_only_the_services_it_runs(tmp_path: Path) -> None:
    data, trust = tmp_path / "data", tmp_path / "trust"
    server = start_server(data)
    try:
        exported = sigstead(
            "trust",
            "export",
            "--data-dir",
            str(data),
            "--public-url",
            server.url,
            "--out",
            str(trust),
        )
        assert exported.returncode == 0, exported.stderr
        assert f"for {server.url}, publishing Rekor log, TSA:" in exported.stdout
        assert "PEM keys (no CA: no policy snippets)" in exported.stdout
    finally:
        assert stop_server(server) == 0
    assert "no CA (--oidc-config enables it)" in server.log.read_text()
    config = _signing_config(data)
    assert config["caUrls"] == []
    assert config["oidcUrls"] == []
    assert [t["url"] for t in config["tsaUrls"]] == [f"{server.url}/api/v1/timestamp"]
    root = json.loads((trust / "trusted_root.json").read_text())
    assert root["certificateAuthorities"] == []
    assert root["ctlogs"] == []
    assert sorted(p.name for p in (trust / "snippets" / "pem").iterdir()) == [
        "rekor.pub",
        "tsa-chain.pem",
    ]
    assert not (data / "ca").exists()  # no CA key was made either

    # The same data directory with a CA: that would send clients to a new service.
    config_file = str(oidc_config_file(tmp_path))
    port = server.url.rsplit(":", 1)[1]
    done = sigstead("up", "--data-dir", str(data), "--port", port, "--oidc-config", config_file)
    refused(
        done,
        f"{data} publishes services Rekor log, TSA; this start would publish Rekor log, CA with "
        "its CT log, TSA (--oidc-config) and move every client that follows its TUF repository. "
        f"Start with the published settings, or, to move clients, stop every server on {data} "
        f"and run: sigstead trust publish --data-dir {data} --public-url {server.url} "
        "--services log,ca,tsa",
    )
    assert not (data / "ca").exists()
    # The operator's explicit step: the CA is published once it has keys, then it may start.
    assert sigstead("keys", "init", "--data-dir", str(data)).returncode == 0
    done = sigstead(
        "trust",
        "publish",
        "--data-dir",
        str(data),
        "--public-url",
        server.url,
        "--services",
        "log,ca,tsa",
    )
    assert done.returncode == 0, done.stderr
    assert "services Rekor log, TSA -> Rekor log, CA with its CT log, TSA" in done.stdout
    with_ca = start_server(data, "--public-url", server.url, "--oidc-config", config_file)
    assert stop_server(with_ca) == 0
    assert [c["url"] for c in _signing_config(data)["caUrls"]] == [server.url]


def test_a_new_public_url_is_an_explicit_republication(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old, new = "http://sigstead.test:3000", "https://sigstore.corp.example"
    assert stop_server(start_server(data, "--public-url", old)) == 0
    done = sigstead("up", "--data-dir", str(data), "--public-url", new, "--port", str(free_port()))
    refused(
        done,
        f"{data} publishes public URL {old}; this start would publish {new} (--public-url) and "
        f"move every client that follows its TUF repository. Start with the published "
        f"settings, or, to move clients, stop every server on {data} and run: sigstead trust "
        f"publish --data-dir {data} --public-url {new} --services log,tsa",
    )
    assert [t["url"] for t in _signing_config(data)["rekorTlogUrls"]] == [old]
    done = sigstead("trust", "publish", "--data-dir", str(data), "--public-url", new)
    assert done.returncode == 0, done.stderr
    assert f"public URL {old} -> {new}" in done.stdout
    assert stop_server(start_server(data, "--public-url", new)) == 0
    assert [t["url"] for t in _signing_config(data)["rekorTlogUrls"]] == [new]


def test_the_trust_service_publishes_what_is_published_unless_told(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert sigstead("keys", "init", "--data-dir", str(data)).returncode == 0
    trust = start_server(data, "--services", "log,tsa", command=("serve", "trust"))
    port = trust.port
    try:
        second = sigstead("serve", "trust", "--data-dir", str(data), "--port", str(free_port()))
        refused(second, f"{data} is published by `sigstead serve trust` (pid {trust.process.pid}")
    finally:
        assert stop_server(trust) == 0
    assert _signing_config(data)["caUrls"] == []
    # Without --services it keeps what is published; with other ones it refuses.
    assert stop_server(start_server(data, command=("serve", "trust"), port=port)) == 0
    assert _signing_config(data)["caUrls"] == []
    done = sigstead(
        "serve", "trust", "--data-dir", str(data), "--port", str(port), "--services", "log,ca,tsa"
    )
    refused(done, "this start would publish Rekor log, CA with its CT log, TSA (--services)")


def test_json_logs_are_one_object_a_line() -> None:
    import logging

    from services.cli import JSONFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "services.app", logging.WARNING, __file__, 1, "tree %d at %s", (7, "x"), sys.exc_info()
        )
    line = JSONFormatter().format(record)
    assert "\n" not in line.split('"exception"')[0]
    entry = json.loads(line)
    assert entry["level"] == "warning"
    assert entry["logger"] == "services.app"
    assert entry["message"] == "tree 7 at x"
    assert "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("+00:00")


def test_a_worker_pool_refuses_one_forwarding_address_for_all(tmp_path: Path) -> None:
    for flags in (["--sequencer-listen", "127.0.0.1:3100"], ["--sequencer-url", "http://a:1"]):
        done = sigstead("up", "--data-dir", str(tmp_path / "d"), "--workers", "2", *flags)
        refused(done, "names one process: give them with --workers 1")
    assert not (tmp_path / "d").exists()


async def test_a_started_server_freezes_its_heap_for_the_collector() -> None:
    # What exists once every service has started lives as long as the process: the cyclic
    # collector's full passes must not walk it again (measured in _freeze_heap's docstring).
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        await _freeze_heap(object())
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


async def test_malformed_requests_are_one_info_line_not_an_error_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio
    import logging

    from aiohttp import web

    from services.cli import QuietBadRequests

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    quiet = QuietBadRequests()
    logging.getLogger("aiohttp.server").addFilter(quiet)
    bad = [
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    ]
    try:
        with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
            for raw in bad:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(raw)
                await writer.drain()
                reply = await reader.read()
                writer.close()
                assert b" 400 Bad Request\r\n" in reply, reply[:200]
    finally:
        logging.getLogger("aiohttp.server").removeFilter(quiet)
        await runner.cleanup()
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) == len(bad)
    for record in records:
        assert record.levelno == logging.INFO, record.getMessage()
        assert record.exc_info is None
        assert "\n" not in record.getMessage()
        assert record.getMessage().startswith("Error handling request from 127.0.0.1: 400 ")


def test_main_quiets_aiohttps_bad_request_errors(tmp_path: Path) -> None:
    import logging

    from services.cli import QuietBadRequests, main

    assert main(["dev-issuer", "init", "--dir", str(tmp_path / "issuer")]) == 0
    filters = logging.getLogger("aiohttp.server").filters
    assert any(isinstance(f, QuietBadRequests) for f in filters)
