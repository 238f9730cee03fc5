"""The auditor's client and CLI against a real ``sigstead up``: it prints only what it verified."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from clients.rekor import LogClient, VerificationFailed
from tests.serverproc import Server
from tests.services.log.rekor.test_api import Signer


def cli(server: Server, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "log",
            "--url",
            server.url,
            "--state-dir",
            str(state),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def post(server: Server, proposed: dict[str, Any]) -> str:
    resp = requests.post(f"{server.url}/api/v1/log/entries", json=proposed, timeout=30)
    assert resp.status_code == 201, resp.text
    return str(next(iter(resp.json())))


def test_info_get_search_proof(server: Server, tmp_path: Path) -> None:
    state = tmp_path / "state"
    signer = Signer("auditor@example.com")
    artifact = tmp_path / "artifact.bin"
    artifact.write_bytes(b"release 1.0")
    uuid = post(server, signer.hashedrekord(artifact.read_bytes()))
    for i in range(4):
        post(server, signer.hashedrekord(b"other %d" % i))

    info = cli(server, state, "--json", "info")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["treeSize"] == 6  # the genesis entry and five

    got = cli(server, state, "--json", "get", "--uuid", uuid)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["index"] == 1
    by_index = cli(server, state, "get", "--index", "3")
    assert by_index.returncode == 0
    # People read the human form: fields, not Python reprs.
    assert "\nIndex:           3\n" in by_index.stdout
    assert "Verified:        signed entry timestamp, inclusion proof" in by_index.stdout
    assert "['" not in by_index.stdout

    for query in (
        ["--artifact", str(artifact)],
        ["--sha256", hashlib.sha256(b"release 1.0").hexdigest()],
    ):
        found = cli(server, state, "--json", "search", *query)
        assert found.returncode == 0, found.stderr
        assert [e["uuid"] for e in json.loads(found.stdout)] == [uuid]
    by_email = cli(server, state, "--json", "search", "--email", "auditor@example.com")
    assert len(json.loads(by_email.stdout)) == 5

    proof = cli(server, state, "proof", "--first", "2", "--last", "5")
    assert proof.returncode == 0, proof.stderr
    assert "verified" in proof.stdout
    missing = cli(server, state, "get", "--index", "99")
    assert missing.returncode == 1
    assert missing.stderr == f"sigstead: {server.url} has no entry with index 99\n"


def test_pinned_key_and_history_catch_a_lying_log(server: Server, tmp_path: Path) -> None:
    state = tmp_path / "state"
    post(server, Signer().hashedrekord(b"a"))
    client = LogClient(server.url, state_dir=state)
    cp = client.checkpoint()
    assert cp.size == 2
    # Rewrite the remembered checkpoint: the next fetch must fail the consistency check,
    # exactly as if the log had forked.
    (state_file,) = state.glob("*.json")
    saved = json.loads(state_file.read_text())
    saved["checkpoint"]["root"] = "00" * 32
    state_file.write_text(json.dumps(saved))
    post(server, Signer().hashedrekord(b"b"))
    with pytest.raises(VerificationFailed, match="forked or rewrote history"):
        client.checkpoint()
    out = cli(server, state, "info")
    assert out.returncode == 1
    assert "VERIFICATION FAILED" in out.stderr


def test_wrong_log_key_is_refused(server: Server, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_file = tmp_path / "other.pem"
    key_file.write_bytes(pem)
    out = cli(server, tmp_path / "s", "--log-key", str(key_file), "info")
    assert out.returncode == 1
    assert "no signature by log key" in out.stderr
