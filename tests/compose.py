"""``compose.yaml`` as docker-compose resolves it, and what each container sees of the filesystem.

There is no Docker engine here, so the containers' mounts are reproduced instead: ``view`` builds
a directory that holds exactly what a service's container has under ``/var/lib/sigstead`` (its
secrets and bind mounts, as links to the host files), and the end-to-end tests run each service
on its view, so a service that needs a file compose does not give it fails there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from services.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
DATA = PurePosixPath("/var/lib/sigstead")


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


def resolve(**env: str) -> dict[str, Any]:
    """The file as docker-compose resolves it: schema-checked, anchors and variables expanded."""
    done = docker_compose("config", **env)
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
        for key in [k for k in os.environ if k.startswith("SIGSTEAD_")]:
            mp.delenv(key)
        for key, value in service.get("environment", {}).items():
            mp.setenv(key, value)
        return _parser().parse_args(service["command"])


@dataclass(frozen=True)
class Mount:
    """One file or directory in a container: where it comes from on the host."""

    source: Path
    read_only: bool


def mounts(resolved: dict[str, Any], name: str) -> dict[PurePosixPath, Mount]:
    """Every bind mount and secret of service ``name``, by its path in the container."""
    service = resolved["services"][name]
    found: dict[PurePosixPath, Mount] = {}
    for volume in service.get("volumes", []):
        # docker-compose v1 prints the short form SOURCE:TARGET[:MODE].
        source, target, *mode = volume.split(":")
        if source.startswith("/"):  # a named volume's source is its name
            found[PurePosixPath(target)] = Mount(Path(source), mode == ["ro"])
    for secret in service.get("secrets", []):
        file = resolved["secrets"][secret["source"]]["file"]
        found[PurePosixPath(secret["target"])] = Mount(Path(file), True)
    return found


def data_mounts(resolved: dict[str, Any], name: str) -> dict[PurePosixPath, Mount]:
    """The mounts under the data directory, by their path relative to it ("." for itself)."""
    return {
        target.relative_to(DATA): mount
        for target, mount in mounts(resolved, name).items()
        if target == DATA or DATA in target.parents
    }


def view(resolved: dict[str, Any], name: str, root: Path) -> Path:
    """A directory holding what service ``name`` sees as its data directory, and nothing else:
    the host directory itself if the whole of it is mounted, else links to each mounted file."""
    inside = data_mounts(resolved, name)
    if PurePosixPath(".") in inside:
        assert len(inside) == 1, name
        return inside[PurePosixPath(".")].source
    directory = root / name
    directory.mkdir(parents=True, mode=0o700)
    for relative, mount in inside.items():
        link = directory / relative
        link.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        link.symlink_to(mount.source)
    return directory
