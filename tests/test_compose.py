"""``compose.yaml``, ``deploy/`` and the ``Dockerfile``: written here, never run (no Docker engine).

What can be checked without an engine is checked for real: docker-compose validates the file
against the Compose schema and resolves it; every sigstead command in it is parsed by sigstead's
own command line; and nginx's location rules, applied to every route each service registers,
send that route to a container running that service.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from services.app import COMPONENTS, Settings, create_app
from services.cli import _parser
from tests.e2e.gateway import parse as parse_nginx

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
NGINX = ROOT / "deploy" / "nginx.conf"
DATA = "/var/lib/sigstead"
PUBLIC_URL = "https://sigstore.corp.example"


def docker_compose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed: apt-get install docker-compose")
    return subprocess.run(
        [exe, "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("SIGSTEAD_")} | env,
        check=False,
        timeout=60,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The file as docker-compose resolves it: schema-checked, anchors and variables expanded."""
    done = docker_compose(
        "config", SIGSTEAD_DB_PASSWORD="pw-from-env", SIGSTEAD_PUBLIC_URL=PUBLIC_URL
    )
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = yaml.safe_load(done.stdout)
    return doc


def sigstead_services(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in resolved["services"].items()
        if service.get("image") == "sigstead:local"
    }


def parse(service: dict[str, Any]) -> argparse.Namespace:
    """The service's command as sigstead's command line reads it, in the service's environment."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in service.get("environment", {}).items():
            mp.setenv(key, value)
        return _parser().parse_args(service["command"])


def test_the_database_password_is_required_and_never_on_a_command_line(
    resolved: dict[str, Any],
) -> None:
    done = docker_compose("config", "-q")
    assert done.returncode != 0
    assert "set SIGSTEAD_DB_PASSWORD" in done.stderr
    for name, service in sigstead_services(resolved).items():
        assert "pw-from-env" not in " ".join(service["command"]), name
        assert service["environment"]["PGPASSWORD"] == "pw-from-env"
        assert "@postgres:5432/" in service["environment"]["SIGSTEAD_DATABASE_URL"]


def test_every_sigstead_command_parses_and_every_service_runs(resolved: dict[str, Any]) -> None:
    served: dict[str, list[str]] = {}
    for name, service in sigstead_services(resolved).items():
        args = parse(service)
        if args.command == "serve":
            served.setdefault(args.component, []).append(name)
            assert str(args.data_dir) == DATA
            assert args.public_url == PUBLIC_URL
            assert (args.host, args.port) == ("0.0.0.0", 3000)
            assert "healthcheck" in service
            assert {"migrate", "keys"} <= set(service["depends_on"]), name
        elif args.command == "keys":
            assert (args.keys_command, str(args.data_dir)) == ("init", DATA)
        else:
            assert (args.command, args.db_command) == ("db", "upgrade")
            assert args.database_url == "postgresql://sigstead@postgres:5432/sigstead"
    assert set(served) == set(COMPONENTS)
    assert len(served["log"]) == 2, "two log replicas"
    ca = resolved["services"][served["ca"][0]]
    args = parse(ca)
    # docker-compose v1 prints the short form SOURCE:TARGET[:MODE].
    mounted = dict(reversed(v.split(":")[:2]) for v in ca["volumes"])
    assert Path(mounted[str(args.oidc_config)]) == ROOT / "deploy" / "fulcio.yaml"


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
    routes = parse_nginx(NGINX.read_text())
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
            if path == "/healthz":
                continue  # every container answers its own; the gateway's goes to the log
            hosts = routes.hosts(path)
            assert hosts, f"{path}: nginx answers 404 itself"
            assert {component_of.get(h) for h in hosts} == {component}, (path, hosts)
    assert routes.hosts("/.env") == [], "anything else is a 404 at the gateway"
    gateway_deps = set(resolved["services"]["gateway"]["depends_on"])
    assert gateway_deps == set(component_of)


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
