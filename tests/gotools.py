"""The Go programs the consumer tests run (cosign, rekor-cli, crane, Kyverno), built from the
pins in ``tests/go/tools.txt`` by ``tests/go/build-tools.sh`` into a cache outside the clone."""

from __future__ import annotations

import os
from pathlib import Path

TOOLS_TXT = Path(__file__).parent / "go" / "tools.txt"
BUILD = "bash tests/go/build-tools.sh"


class ToolMissing(RuntimeError):
    """A pinned tool is not built, or was built from another pin."""


def cache_dir() -> Path:
    return Path(os.environ.get("SIGSTEAD_GO_TOOLS", Path.home() / ".cache/sigstead/go-tools"))


def pins() -> dict[str, str]:
    """Each tool's line of ``tools.txt``, by name."""
    lines = TOOLS_TXT.read_text().splitlines()
    return {line.split()[0]: line for line in lines if line.strip() and not line.startswith("#")}


def tool(name: str) -> Path:
    """The binary of ``name`` as pinned; raises naming the build command when it is not built.

    The test run fails rather than skips: ``.ci/run`` builds the tools first, so a missing one
    is a broken set-up, not an optional extra."""
    line = pins()[name]
    _, _, package, version, *_ = line.split()
    directory = cache_dir() / f"{name}-{version}"
    pin = directory / "pin"
    if not pin.is_file() or pin.read_text().strip() != line:
        raise ToolMissing(f"{name} {version} is not built from its pin: run `{BUILD} {name}`")
    binary = directory / Path(package).name
    if not binary.is_file():
        raise ToolMissing(f"{binary} is missing: run `{BUILD} {name}`")
    return binary
