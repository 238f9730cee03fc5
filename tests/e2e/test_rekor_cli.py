"""rekor-cli, the real binary, against sigstead's Rekor: upload, get, search, verify, and
loginfo, which keeps the last checkpoint it saw and checks each new one is consistent."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.gocli import run
from tests.e2e.stack import Stack, fill_log
from tests.gotools import tool

pytestmark = pytest.mark.e2e


def test_rekor_cli(stack: Stack, tmp_path: Path) -> None:
    rekor = tool("rekor-cli")
    home = tmp_path / "home"
    server = ["--rekor_server", stack.server.url]

    def cli(*args: str) -> str:
        done = run(rekor, home, *args, *server)
        assert done.returncode == 0, done.stderr
        return done.stdout

    key = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path / "key.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    artifact = tmp_path / "artifact"
    artifact.write_bytes(b"rekor-cli " + tmp_path.name.encode())
    signature = tmp_path / "artifact.sig"
    signature.write_bytes(key.sign(artifact.read_bytes(), ec.ECDSA(hashes.SHA256())))
    material = [
        "--artifact", str(artifact), "--signature", str(signature),
        "--public-key", str(public), "--pki-format", "x509",
    ]  # fmt: skip

    before = cli("loginfo")
    created = cli("upload", *material)
    match = re.search(
        r"Created entry at index (\d+), available at: \S+/entries/([0-9a-f]+)", created
    )
    assert match, created
    index, uuid = match.groups()

    by_index = cli("get", "--log-index", index)
    assert f"UUID: {uuid}" in by_index
    assert f"Index: {index}" in cli("get", "--uuid", uuid)

    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert uuid in cli("search", "--sha", digest)
    assert uuid in cli("search", "--sha", f"sha256:{digest}")
    assert uuid in cli("search", "--public-key", str(public), "--pki-format", "x509")
    # Keyless entries by the identity in their certificates (the other e2e tests sign as it).
    found = run(rekor, home, "search", "--email", "nobody-signed-as-this@example.com", *server)
    assert "no matching entries found" in (found.stdout + found.stderr).lower()

    verified = cli("verify", *material)
    computed = re.search(r"Computed Root Hash: (\w+)", verified)
    expected = re.search(r"Expected Root Hash: (\w+)", verified)
    assert computed, verified
    assert expected, verified
    assert computed.group(1) == expected.group(1), verified

    # The log grows; loginfo checks the new checkpoint against the one it stored before.
    fill_log(stack, 3, concurrency=1)
    after = cli("loginfo")
    assert tree_size(after) >= tree_size(before) + 4
    assert "Verification Successful!" in after or "Root Hash" in after, after


def tree_size(loginfo: str) -> int:
    match = re.search(r"Total Tree Size:\s+(\d+)", loginfo)
    assert match, loginfo
    return int(match.group(1))
