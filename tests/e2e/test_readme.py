"""The README's quick start, run as written: a new user's path to a verified signature."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serverproc import free_port

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def quickstart() -> str:
    text = README.read_text()
    found = re.search(
        r"<!-- quickstart:begin.*?-->\s*```sh\n(.*?)```\s*<!-- quickstart:end", text, re.S
    )
    assert found, "README.md lost its quickstart block"
    return found.group(1)


def test_the_readme_quickstart_ends_in_a_verified_signature(tmp_path: Path) -> None:
    lines = quickstart().splitlines()
    # The package is already installed (this suite runs from it); everything else runs verbatim.
    assert lines[0].startswith("pip install . ")
    script = "\n".join(lines[1:]).replace("3000", str(free_port()))
    bin_dir = str(Path(sys.executable).parent)
    done = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n{script}"],
        cwd=tmp_path,
        env={
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: artifact.txt" in done.stdout + done.stderr
    assert (tmp_path / "artifact.txt.sigstore.json").is_file()
    assert (tmp_path / "dev-issuer" / "issuer.key").stat().st_mode & 0o777 == 0o600
    # Run from a checkout, nothing it wrote may end up in a commit: the .gitignore covers all.
    shutil.copy(README.parent / ".gitignore", tmp_path / ".gitignore")
    git = ["git", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    status = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout.split() == ["??", ".gitignore"], status.stdout
