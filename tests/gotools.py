"""The Go programs the consumer tests run (cosign, rekor-cli, crane, Kyverno), built from the
pins in ``tests/go/tools.txt`` by ``tests/go/build-tools.sh`` into a cache outside the clone."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
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


def pin_of(line: str) -> str:
    """What ``build-tools.sh`` writes as a tool's pin: its line, and for a patched tool a digest
    of its patches, so an edited patch is a stale build."""
    patches = [word for word in line.split() if word.endswith(".patch")]
    if not patches:
        return line
    digest = hashlib.sha256(b"".join((TOOLS_TXT.parent / p).read_bytes() for p in patches))
    return f"{line} {digest.hexdigest()[:12]}"


def tool(name: str) -> Path:
    """The binary of ``name`` as pinned; raises naming the build command when it is not built.

    The test run fails rather than skips: ``.ci/run`` builds the tools first, so a missing one
    is a broken set-up, not an optional extra."""
    line = pins()[name]
    _, _, package, version, *_ = line.split()
    directory = cache_dir() / f"{name}-{version}"
    pin = directory / "pin"
    if not pin.is_file() or pin.read_text().strip() != pin_of(line):
        raise ToolMissing(f"{name} {version} is not built from its pin: run `{BUILD} {name}`")
    binary = directory / Path(package).name
    if not binary.is_file():
        raise ToolMissing(f"{binary} is missing: run `{BUILD} {name}`")
    return binary


def module_dir(module: str, version: str) -> Path:
    """The source of ``module@version`` in Go's module cache, downloaded from the module proxy
    if it is not there yet (the pinned tools' modules already are: the build put them there)."""
    done = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    info = json.loads(done.stdout) if done.stdout.strip() else {}
    if done.returncode != 0 or "Dir" not in info:
        raise ToolMissing(f"go mod download {module}@{version}: {info.get('Error', done.stderr)}")
    return Path(info["Dir"])


def pinned_module(name: str) -> Path:
    """The module source a tool of ``tools.txt`` was built from."""
    _, module, _, version, *_ = pins()[name].split()
    return module_dir(module, version)
