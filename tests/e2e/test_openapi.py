"""The served OpenAPI document, fuzzed by schemathesis against ``sigstead up`` (log, CA, CT,
TSA, trust): no generated request may get a 5xx (issue 13, item 5).

The document describes the wire formats the real clients use, so the generated requests reach
the handlers: bodies that parse and fail validation, bad base64, wrong kinds, absurd numbers,
non-ASCII digits in paths (which found a 500 in the Rekor v2 tile path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.e2e.stack import Stack

ROOT = Path(__file__).parents[2]


def test_the_served_document_is_openapi_3_and_lists_every_api(fresh_stack: Stack) -> None:
    url = fresh_stack.server.url
    with urllib.request.urlopen(f"{url}/api/openapi.json", timeout=10) as reply:
        document = json.load(reply)
    assert document["openapi"].startswith("3.0")
    assert {
        "/api/v1/log/entries",
        "/api/v2/log/entries",
        "/api/v2/signingCert",
        "/ct/v1/add-pre-chain",
        "/api/v1/timestamp",
    } <= set(document["paths"])


def test_no_generated_request_gets_a_server_error(fresh_stack: Stack, tmp_path: Path) -> None:
    url = fresh_stack.server.url
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run", f"{url}/api/openapi.json",
            "--url", url, "--checks", "not_a_server_error", "--max-examples", "25",
            "--max-time", "120", "--seed", "20261204", "--workers", "2",
            "--report", "ndjson", "--report-dir", str(tmp_path),
            "--suppress-health-check", "all", "--warnings", "off",
        ],
        # Its cache goes to the working directory: the test's, not the repository.
        capture_output=True, text=True, timeout=400, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "Server error" not in done.stdout
    assert "API Operations" in done.stdout  # it ran, and reached the summary
