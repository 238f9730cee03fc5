"""Witnessing with real processes and real clients (issue 14, item 3): two ``sigstead witness``
processes and ``sigstead up --witness-policy`` with a quorum of both. sigstore-python signs;
the log's witnessed checkpoint carries both cosignatures; that checkpoint put into the bundle in
place of the plain one still verifies in sigstore-python and sigstore-js (conforming clients
ignore signature lines of keys they do not know); a witness refuses a rewritten history."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from services.keys import load_private_key
from services.log.checkpoint import Checkpoint, CheckpointSigner
from tests.e2e.stack import Stack, python_sign, python_verify, sigstead, start_stack
from tests.e2e.test_sigstore_js import js_verify
from tests.serverproc import free_port


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_port(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
        except urllib.error.HTTPError:
            return  # it answers (404 for /): it is up
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"witness on {port} did not start")


class Witnesses:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.names = ["witness.example/w1", "witness.example/w2"]
        self.dirs = [root / "w1", root / "w2"]
        self.ports = [free_port(), free_port()]
        self.vkeys: list[str] = []
        for name, state in zip(self.names, self.dirs, strict=True):
            done = sigstead("witness", "init", "--state-dir", str(state), "--name", name)
            assert done.returncode == 0, done.stderr
            self.vkeys.append(done.stdout.strip().splitlines()[-1])
        self.processes: list[subprocess.Popen[str]] = []

    def policy(self) -> Path:
        lines = [
            f"witness w{i + 1} {vkey} http://127.0.0.1:{port}"
            for i, (vkey, port) in enumerate(zip(self.vkeys, self.ports, strict=True))
        ]
        path = self.root / "policy"
        path.write_text("\n".join([*lines, "group both all w1 w2", "quorum both", ""]))
        return path

    def serve(self, stack: Stack) -> None:
        """Trust both of the deployment's Rekor logs (v1's and v2's origins and keys)."""
        keys = stack.server.data_dir / "keys"
        host = urlsplit(stack.server.url).hostname or ""
        v1_origin = json.loads(_get(f"{stack.server.url}/api/v1/log")[1])["signedTreeHead"]
        logs = []
        for key, origin in (("rekor.pub", v1_origin.split("\n")[0]), ("rekor-v2.pub", host)):
            done = sigstead(
                "witness", "log-vkey", "--public-key", str(keys / key), "--name", host,
                "--origin", origin,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            logs.append(done.stdout.strip())
        (self.root / "logs").write_text("\n".join(logs) + "\n")
        for state, port in zip(self.dirs, self.ports, strict=True):
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "witness", "serve", "--state-dir",
                 str(state), "--logs", str(self.root / "logs"), "--host", "127.0.0.1",
                 "--port", str(port)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            self.processes.append(process)
            _wait_port(port, process)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
def witnessed(tmp_path: Path) -> Iterator[tuple[Stack, Witnesses]]:
    witnesses = Witnesses(tmp_path / "witnesses")
    policy = ("--witness-policy", str(witnesses.policy()))
    stack = start_stack(tmp_path / "stack", server_flags=policy)
    try:
        witnesses.serve(stack)
        yield stack, witnesses
    finally:
        witnesses.stop()
        stack.stop()


def _witnessed_at(stack: Stack, size: int) -> str:
    """Wait for the log's quorum-cosigned v1 checkpoint of ``size``."""
    deadline = time.monotonic() + 60
    note = ""
    while time.monotonic() < deadline:
        status, note = _get(f"{stack.server.url}/api/v1/log/checkpoint/witnessed")
        if status == 200 and int(note.split("\n")[1]) == size:
            return note
        time.sleep(0.5)
    raise AssertionError(f"no witnessed checkpoint of size {size}: {note!r}")


def test_both_witnesses_cosign_and_the_clients_accept_the_cosigned_checkpoint(
    witnessed: tuple[Stack, Witnesses], tmp_path: Path
) -> None:
    stack, witnesses = witnessed
    home = tmp_path / "home"
    home.mkdir()
    artifact = tmp_path / "artifact.txt"
    artifact.write_text("witnessed release\n")
    bundle = tmp_path / "artifact.sigstore.json"
    python_sign(stack, home, artifact, bundle)
    document = json.loads(bundle.read_text())
    entry = document["verificationMaterial"]["tlogEntries"][0]
    size = int(entry["inclusionProof"]["treeSize"])

    note = _witnessed_at(stack, size)
    signers = [line.split(" ")[1] for line in note.split("\n\n", 1)[1].splitlines()]
    assert sorted(signers[1:]) == witnesses.names  # the log's own signature first
    plain = entry["inclusionProof"]["checkpoint"]["envelope"]
    assert note.startswith(plain.split("\n\n")[0] + "\n\n")  # the same checkpoint body

    entry["inclusionProof"]["checkpoint"]["envelope"] = note
    cosigned = tmp_path / "cosigned.sigstore.json"
    cosigned.write_text(json.dumps(document))
    done = python_verify(stack, home, artifact, cosigned)
    assert done.returncode == 0, done.stderr
    done = js_verify(stack, tmp_path, cosigned, artifact)
    assert done.returncode == 0, done.stdout + done.stderr

    # A monitor that requires both witnesses' cosignatures accepts the log; one that requires a
    # third witness's too raises an alarm (exit 2).
    stranger = sigstead(
        "witness", "init", "--state-dir", str(tmp_path / "w3"), "--name", "witness.example/w3"
    )
    trusted_root = str(stack.trusted_root)
    (tmp_path / "watch.yaml").write_text("{}\n")
    for required, code in ((witnesses.vkeys, 0), ([*witnesses.vkeys, stranger.stdout.strip()], 2)):
        flags = [arg for vkey in required for arg in ("--witness", vkey)]
        done = sigstead(
            "monitor", "--once", "--url", stack.server.url, "--trusted-root", trusted_root,
            "--config", str(tmp_path / "watch.yaml"), "--state", str(tmp_path / f"m{code}.json"),
            *flags,
        )  # fmt: skip
        assert done.returncode == code, done.stdout + done.stderr
    assert "fewer than the quorum of 3" in done.stdout

    # `sigstead log info` shows who cosigned, verifying the witnesses it is given.
    def info(*required: str) -> subprocess.CompletedProcess[str]:
        flags = [arg for vkey in required for arg in ("--witness", vkey)]
        return sigstead(
            "log", "--url", stack.server.url, "--state-dir", str(tmp_path / "log-state"),
            "--log-key", str(stack.server.data_dir / "keys" / "rekor.pub"), "--json", "info",
            *flags,
        )  # fmt: skip

    listed = json.loads(info().stdout)["witnessed"]["cosigners"]
    assert sorted((c["name"], c["verified"]) for c in listed) == [
        (name, False) for name in witnesses.names
    ]
    checked = json.loads(info(*witnesses.vkeys).stdout)["witnessed"]
    assert checked["treeSize"] >= size
    assert all(c["verified"] for c in checked["cosigners"])
    refused = info(witnesses.vkeys[0], stranger.stdout.strip())
    assert refused.returncode != 0
    assert "no cosignature by witness.example/w3" in refused.stderr

    # A witness refuses a rewritten history: the same size with another root, signed by the
    # log's own key (as a forked or rolled-back log would sign it), is never cosigned.
    host = urlsplit(stack.server.url).hostname or ""
    key = load_private_key(stack.server.data_dir / "keys" / "rekor.pem")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    origin = note.split("\n")[0]
    forged = CheckpointSigner(host, key).sign_checkpoint(Checkpoint(origin, size, b"\x07" * 32))
    request = urllib.request.Request(
        f"http://127.0.0.1:{witnesses.ports[0]}/add-checkpoint",
        f"old {size}\n\n{forged}".encode(),
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    assert answer.value.code == 422, answer.value.read()
