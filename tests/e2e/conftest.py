"""End-to-end fixtures: a busy deployment shared by the module's tests, and fresh ones."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import BUSY_ENTRIES, IDENTITY, Stack, fill_log, sigstead, start_stack


def _indexes_filed_under(url: str, email: str) -> set[int]:
    def post(path: str, body: object) -> Any:
        request = urllib.request.Request(
            f"{url}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.load(reply)

    uuids = post("/api/v1/index/retrieve", {"email": email})
    indexes: set[int] = set()
    for start in range(0, len(uuids), 10):
        for hit in post("/api/v1/log/entries/retrieve", {"entryUUIDs": uuids[start : start + 10]}):
            indexes.update(entry["logIndex"] for entry in hit.values())
    return indexes


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One deployment for the whole session, already busy: a thousand entries by other signers
    before the first test's, and more as the tests run.

    When the session ends, ``sigstead fsck --url`` (an auditor, over HTTP) and then
    ``sigstead fsck --deep`` (the operator, from the database) replay what every real client
    wrote to it (hashedrekord, dsse and intoto entries, the CA's precertificates in the CT log):
    the served and the stored logs, tiles, checkpoints, SETs and search index must check out."""
    s = start_stack(tmp_path_factory.mktemp("stack"))
    try:
        assert fill_log(s, BUSY_ENTRIES) == BUSY_ENTRIES + 1  # and the log's genesis entry
        # A monitor watching the test identity from before the first test signs.
        watch = s.trust.parent / "watch.yaml"
        watch.write_text(f"identities: [{{subject: {IDENTITY}, issuer: '{s.idp.url}'}}]\n")
        monitor = ("monitor", "--once", "--url", s.server.url, "--trusted-root",
                   str(s.trusted_root), "--config", str(watch), "--state",
                   str(s.trust.parent / "monitor.json"))  # fmt: skip
        done = sigstead(*monitor)
        assert (done.returncode, done.stdout) == (0, ""), done.stderr
        yield s
        # It resumes where it stopped and reports exactly the entries the search index files
        # under the identity: no miss, no false match (two independent paths to one answer).
        done = sigstead(*monitor)
        expected = _indexes_filed_under(s.server.url, IDENTITY)
        events = [json.loads(line) for line in done.stdout.splitlines()]
        reported = {e["index"] for e in events if e["log"].startswith("rekor-v1")}
        assert reported == expected
        # Those signatures came with certificates for the identity: the CT log holds them (the
        # monitor follows the CA's CT log too).
        certified = {e["index"] for e in events if e["log"].startswith("ct ")}
        assert certified or not expected, events
        # 1 when it found something: a session of modules that never sign as the test
        # identity (run alone) has nothing to find.
        found = expected or certified
        assert done.returncode == (1 if found else 0), done.stdout + done.stderr
        # An auditor's replay of the same logs, over HTTP, by the exported trusted root.
        done = sigstead("fsck", "--url", s.server.url, "--trusted-root", str(s.trusted_root))
        assert done.returncode == 0, done.stdout + done.stderr
        replayed = [json.loads(line) for line in done.stdout.splitlines() if '"ok"' in line]
        assert len(replayed) == 3, done.stdout  # Rekor v1, Rekor v2, the CT log
    finally:
        s.stop()
    done = sigstead("fsck", "--data-dir", str(s.server.data_dir), "--deep", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    checked = [json.loads(line) for line in done.stdout.splitlines() if '"ok"' in line]
    assert len(checked) == 3, done.stdout  # Rekor v1, Rekor v2, the CT log
    assert all(tree["indexed"] == tree["size"] for tree in checked), done.stdout


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[Stack]:
    """A deployment created for one test: its log holds only its genesis entry."""
    s = start_stack(tmp_path / "stack")
    try:
        yield s
    finally:
        s.stop()
