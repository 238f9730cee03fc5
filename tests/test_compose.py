"""``compose.yaml``, ``deploy/`` and the ``Dockerfile``: written here, never run (no Docker engine).

What can be checked without an engine is checked for real: docker-compose validates the file
against the Compose schema and resolves it; every sigstead command in it is parsed by sigstead's
own command line; each container is given exactly the key files its service reads, and `keys
init` makes every one of them; nginx accepts the gateway's file (``nginx -t``), and its location
rules, applied to every route each service registers, send that route to a container running
that service. tests/e2e/test_production_layout.py runs the services on what compose mounts.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from aiohttp import web

from services.app import COMPONENTS, Settings, create_app
from services.ca import keys as ca_keys
from services.trust.material import (
    CT_KEY_FILE,
    REKOR_KEY_FILE,
    REKOR_V2_KEY_FILE,
    REKOR_V2_PUBLIC_FILE,
    RETIRED_DIR,
    ensure_keys,
    public_files,
)
from services.tsa import keys as tsa_keys
from tests import compose
from tests.compose import DATA, data_mounts, docker_compose, parse, sigstead_services
from tests.e2e import nginx

ROOT = compose.ROOT
NGINX = ROOT / "deploy" / "nginx.conf"
PUBLIC_URL = "https://sigstore.corp.example"
NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    return compose.resolve(SIGSTEAD_DB_PASSWORD="pw-from-env", SIGSTEAD_PUBLIC_URL=PUBLIC_URL)


def _component(service: dict[str, Any]) -> str:
    """``serve``'s component, ``keys`` for the key job, ``db`` for the migration."""
    args = parse(service)
    return str(args.component) if args.command == "serve" else str(args.command)


def test_the_database_password_is_required_and_only_where_the_database_is_used(
    resolved: dict[str, Any],
) -> None:
    done = docker_compose("config", "-q")
    assert done.returncode != 0
    assert "set SIGSTEAD_DB_PASSWORD" in done.stderr
    with_password = set()
    for name, service in sigstead_services(resolved).items():
        assert "pw-from-env" not in " ".join(service["command"]), name
        environment = service.get("environment", {})
        if "PGPASSWORD" in environment:
            with_password.add(_component(service))
            assert environment["PGPASSWORD"] == "pw-from-env"
            assert "@postgres:5432/" in environment["SIGSTEAD_DATABASE_URL"]
    # The TSA and trust distribution keep no state in the database; the key job makes files.
    assert with_password == {"db", "log", "ca"}


def test_every_sigstead_command_parses_and_every_service_runs(resolved: dict[str, Any]) -> None:
    served: dict[str, list[str]] = {}
    for name, service in sigstead_services(resolved).items():
        args = parse(service)
        if args.command == "serve":
            served.setdefault(args.component, []).append(name)
            assert PurePosixPath(args.data_dir) == DATA
            assert args.public_url == PUBLIC_URL
            assert (args.host, args.port) == ("0.0.0.0", 3000)
            assert "healthcheck" in service
            assert {"migrate", "keys"} <= set(service["depends_on"]), name
        elif args.command == "keys":
            assert args.keys_command == "init"
            assert PurePosixPath(args.data_dir) == DATA
        else:
            assert (args.command, args.db_command) == ("db", "upgrade")
            assert args.database_url == "postgresql://sigstead@postgres:5432/sigstead"
    assert set(served) == set(COMPONENTS)
    assert len(served["log"]) == 2, "two log replicas"
    ca = resolved["services"][served["ca"][0]]
    mounted = compose.mounts(resolved, served["ca"][0])
    oidc = mounted[PurePosixPath(parse(ca).oidc_config)]
    assert oidc == compose.Mount(ROOT / "deploy" / "fulcio.yaml", read_only=True)


# What each service reads under its data directory, from the code's own names: the log its
# key; the CA its key and chain (never the root key) and the CT log's key; the TSA its key and
# chain (never its root key); trust the public files ``gather`` reads and its TUF directory.
READS = {
    # Both log keys: a replica without the Rekor v2 key would make its own, and so its own tree.
    "log": {f"keys/{REKOR_KEY_FILE}", f"keys/{REKOR_V2_KEY_FILE}", f"keys/{RETIRED_DIR}"},
    "ca": {f"ca/{ca_keys.KEY_FILE}", f"ca/{ca_keys.CHAIN_FILE}", f"keys/{CT_KEY_FILE}"},
    "tsa": {f"tsa/{tsa_keys.KEY_FILE}", f"tsa/{tsa_keys.CHAIN_FILE}"},
    # public_files names rekor-v2.pub only where it exists (older data directories lack it);
    # every compose deployment has it from `keys init`.
    "trust": {str(p.relative_to(DATA)) for p in public_files(Path(DATA))}
    | {"tuf", f"keys/{REKOR_V2_PUBLIC_FILE}", f"keys/{RETIRED_DIR}"},
    "db": set(),
}


def test_each_container_mounts_only_the_keys_its_service_reads(
    resolved: dict[str, Any],
) -> None:
    for name, service in sigstead_services(resolved).items():
        component = _component(service)
        inside = data_mounts(resolved, name)
        if component == "keys":
            # The one container that sees every key: it makes them.
            assert set(inside) == {PurePosixPath(".")}
            assert not inside[PurePosixPath(".")].read_only
            assert "ports" not in service
            continue
        assert {str(p) for p in inside} == READS[component], name
        for relative, mount in inside.items():
            assert mount.read_only == (str(relative) != "tuf"), (name, relative)
    # The two root keys that no running service needs, and the TUF keys, in the key job only.
    for name in ("log-1", "log-2", "tsa", "ca"):
        seen = {str(p) for p in data_mounts(resolved, name)}
        roots = {f"ca/{ca_keys.ROOT_KEY_FILE}", f"tsa/{tsa_keys.ROOT_KEY_FILE}"}
        assert not (roots | {"tuf"}) & seen, name
    for name in ("log-1", "log-2", "tsa"):
        assert not any(p.startswith("ca/") for p in map(str, data_mounts(resolved, name))), name


def test_keys_init_makes_every_file_the_containers_mount(tmp_path: Path) -> None:
    """Every secret and bind source compose names is made by ``keys init`` in the host
    directory (else Docker would refuse to create the container, or make a directory there)."""
    host = tmp_path / "sigstead-data"
    ensure_keys(host, NOW)  # what `keys init` runs
    resolved = compose.resolve(
        SIGSTEAD_DB_PASSWORD="pw", SIGSTEAD_DATA_DIR=str(host), SIGSTEAD_TLS_DIR=str(tmp_path)
    )
    sources = {
        mount.source
        for name in sigstead_services(resolved)
        for mount in data_mounts(resolved, name).values()
    }
    assert {s for s in sources if not s.exists()} == set()
    assert {s for s in sources if host not in (s, *s.parents)} == set()
    assert (host / "tuf").is_dir()


def _paths(app: web.Application) -> list[str]:
    """A concrete path for every route the application registers ({uuid} -> x); a mounted
    sub-application (the CT log under /ct) stands for everything below its prefix."""
    return [
        f"{r.canonical}/x"
        if isinstance(r, web.PrefixedSubAppResource)
        else re.sub(r"\{[^}]+\}", "x", r.canonical)
        for r in app.router.resources()
    ]


def test_nginx_sends_every_route_to_the_service_that_serves_it(
    resolved: dict[str, Any], tmp_path: Path
) -> None:
    routes = nginx.parse(NGINX.read_text())
    component_of = {
        name: parse(service).component
        for name, service in sigstead_services(resolved).items()
        if service["command"][0] == "serve"
    }
    settings = Settings(
        data_dir=tmp_path, public_url=PUBLIC_URL, oidc_config=ROOT / "deploy" / "fulcio.yaml"
    )
    for component in COMPONENTS:
        for path in _paths(create_app(settings, components=(component,))):
            if path in ("/metrics", "/readyz", "/api/openapi.json"):
                # Asked of each container (scrapers, load balancers, API tooling: each process
                # describes what it serves), never through the gateway.
                assert routes.hosts(path) == [], f"the gateway must not expose {path}"
                continue
            if path == "/healthz":
                # Every container answers its own; the gateway asks each under its name.
                path = f"/healthz/{component}"
                assert routes.upstream_path(path) == "/healthz"
            hosts = routes.hosts(path)
            assert hosts, f"{path}: nginx answers 404 itself"
            assert {component_of.get(h) for h in hosts} == {component}, (path, hosts)
    assert routes.hosts("/.env") == [], "anything else is a 404 at the gateway"
    assert routes.hosts("/healthz") == [], "no one service's health stands for all"
    gateway_deps = set(resolved["services"]["gateway"]["depends_on"])
    assert gateway_deps == set(component_of)
    # Plain HTTP proxies nothing: it redirects reads and refuses the rest.
    assert "proxy_pass" not in routes.plain


def test_the_gateway_is_healthy_only_when_every_service_answers(resolved: dict[str, Any]) -> None:
    gateway = resolved["services"]["gateway"]
    check = " ".join(gateway["healthcheck"]["test"])
    loop = re.search(r"for s in ([\w ]+); do", check)
    assert loop is not None, check
    assert set(loop.group(1).split()) == set(COMPONENTS)
    assert "https://127.0.0.1:8443/healthz/$$s || exit 1" in check
    ports = {(p["published"], p["target"]) for p in gateway["ports"]}
    assert ports == {(443, 8443), (80, 8080)}
    mounted = compose.mounts(resolved, "gateway")
    assert mounted[PurePosixPath(nginx.CERT_DIR)].read_only


def test_nginx_accepts_the_file(tmp_path: Path) -> None:
    """``nginx -t``: the syntax, the directives and the certificate, in the real nginx."""
    nginx.make_tls(tmp_path / "tls")
    hosts = {
        h: f"127.0.0.1:{3001 + i}" for i, h in enumerate(["log-1", "log-2", "ca", "tsa", "trust"])
    }
    site = nginx.rewrite(
        NGINX.read_text(),
        http="127.0.0.1:8080",
        https="127.0.0.1:8443",
        hosts=hosts,
        tls_dir=tmp_path / "tls",
    )
    done = nginx.check(site, tmp_path / "nginx")
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_dockerfile_copies_what_the_package_needs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile, re.MULTILINE):
        for name in source.split():
            assert (ROOT / name).exists(), name
    packages = re.search(r"include = \[(.*?)\]", (ROOT / "pyproject.toml").read_text())
    assert packages is not None
    for package in re.findall(r'"(\w+)\*"', packages.group(1)):
        assert f"COPY {package} ./{package}" in dockerfile, package
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"services", "clients", "migrations", "pyproject.toml"} & set(ignored)
    assert "USER sigstead" in dockerfile
