"""``sigstead bench`` through the real command, against a real ``sigstead up`` with its CA.

These check that every workload sends what the server accepts (all answers 2xx, distinct
entries committed) with each load generator; the figures themselves belong in ``bench/``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.stack import Stack, start_stack
from tests.e2e.test_rekor_v2 import _fill_v2

# .ci/run installs wrk: both generators are always exercised.
ENGINES = ["asyncio", "wrk"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("bench"))
    try:
        yield s
    finally:
        s.stop()


def bench(stack: Stack, *args: str) -> list[dict[str, Any]]:
    # --expect: distinct entries for 6,000 writes a workload. At 400 (1,000 entries) a faster
    # host's asyncio generator wrote 1,026 v2 entries in the second and got 409s for the rest.
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "bench", "--url", stack.server.url, "--json",
         "--seconds", "1", "--concurrency", "4", "--expect", "4000", *args],
        capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def tree_size(stack: Stack) -> int:
    with urllib.request.urlopen(f"{stack.server.url}/api/v1/log", timeout=30) as resp:
        size: int = json.loads(resp.read())["treeSize"]
        return size


@pytest.mark.parametrize("engine", ENGINES)
def test_every_workload_is_accepted(stack: Stack, engine: str) -> None:
    assert shutil.which("wrk"), "wrk is missing: .ci/run installs it (apt-get install wrk)"
    # `tile` reads full tiles of the v2 log: make sure it has some, whatever ran before.
    _fill_v2(stack, 260)
    before = tree_size(stack)
    token = stack.idp.token()
    rows = bench(
        stack, "write", "read", "timestamp", "cert", "write-v2", "tile",
        "--engine", engine, "--identity-token", token,
    )  # fmt: skip
    by_name = {row["name"]: row for row in rows}
    for name, status in (
        ("write", "201"),
        ("read", "200"),
        ("timestamp", "200"),
        ("cert", "200"),
        ("write-v2", "201"),
        ("tile", "200"),
    ):
        row = by_name[name]
        assert row["engine"] == engine
        assert set(row["statuses"]) == {status}, row
        assert row["requests"] > 0
        assert row["rate"] > 0
        assert row["socket_errors"] == 0
    # Every write was a distinct, committed entry (wrk stops counting with up to one request
    # per connection in flight, which the server may still commit).
    grown = tree_size(stack) - before
    assert by_name["write"]["statuses"]["201"] <= grown <= by_name["write"]["statuses"]["201"] + 4
    assert by_name["ecdsa_p256_verify_per_core"]["rate"] > 1000
    assert set(by_name["hello"]["statuses"]) == {"200"}


def test_mistakes_are_one_line(stack: Stack) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "bench", "cert", "--url", stack.server.url],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "cert needs --identity-token" in done.stderr
    assert "Traceback" not in done.stderr
