"""``sigstead witness init | serve | log-vkey`` as real processes: the key file, the vkey it
prints, and a served add-checkpoint whose cosignature verifies under that vkey."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from services.keys import write_private_key, write_public_key
from services.log import merkle
from services.log.checkpoint import Checkpoint, CheckpointSigner
from tests.serverproc import free_port
from tests.services.test_cli import refused, sigstead
from tests.services.witness.test_note import check_cosignature

ORIGIN = "log.example - 7"


def test_init_creates_a_private_key_once_and_prints_the_vkey(tmp_path: Path) -> None:
    state = tmp_path / "w"
    first = sigstead("witness", "init", "--state-dir", str(state), "--name", "w.example/1")
    assert first.returncode == 0, first.stderr
    vkey = first.stdout.strip()
    assert vkey.startswith("w.example/1+")
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == 0x04
    assert (state / "witness.pem").stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o700
    assert "PRIVATE" not in first.stdout + first.stderr
    again = sigstead("witness", "init", "--state-dir", str(state), "--name", "w.example/1")
    assert again.stdout.strip() == vkey
    other = sigstead("witness", "init", "--state-dir", str(state), "--name", "w.example/2")
    refused(other, "already holds the witness 'w.example/1'")
    refused(
        sigstead("witness", "init", "--state-dir", str(tmp_path / "x"), "--name", "a b"),
        "invalid key name",
    )


def test_serve_refuses_a_missing_witness_and_a_bad_logs_file(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.write_text("# nothing\n")
    state = tmp_path / "w"
    refused(
        sigstead("witness", "serve", "--state-dir", str(state), "--logs", str(logs)),
        "holds no witness: run `sigstead witness init",
    )
    sigstead("witness", "init", "--state-dir", str(state), "--name", "w.example/1")
    refused(
        sigstead("witness", "serve", "--state-dir", str(state), "--logs", str(logs)),
        "no logs",
    )
    logs.write_text("log.example+00000000+AjBZ\n")
    refused(
        sigstead("witness", "serve", "--state-dir", str(state), "--logs", str(logs)),
        "line 1: vkey",
    )


def _post(url: str, body: str) -> tuple[int, str, str]:
    request = urllib.request.Request(url, data=body.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.headers.get_content_type(), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), exc.read().decode()


def test_a_served_witness_cosigns_a_sigstead_checkpoint(tmp_path: Path) -> None:
    log_key = ec.generate_private_key(ec.SECP256R1())
    write_private_key(tmp_path / "rekor.pem", log_key)
    write_public_key(tmp_path / "rekor.pub", log_key.public_key(), like=tmp_path / "rekor.pem")
    line = sigstead(
        "witness",
        "log-vkey",
        "--public-key",
        str(tmp_path / "rekor.pub"),
        "--name",
        "log.example",
        "--origin",
        ORIGIN,
    )
    assert line.returncode == 0, line.stderr
    assert line.stdout.endswith(f" {ORIGIN}\n")
    (tmp_path / "logs").write_text(f"# sigstead's Rekor v1 log\n{line.stdout}")
    state = tmp_path / "w"
    vkey = sigstead("witness", "init", "--state-dir", str(state), "--name", "w.example/1")
    port = free_port()
    # Serve in a child process; run_app owns its signals.
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "witness",
            "serve",
            "--state-dir",
            str(state),
            "--logs",
            str(tmp_path / "logs"),
            "--port",
            str(port),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/add-checkpoint"
    try:
        leaves = [merkle.hash_leaf(b"%d" % i) for i in range(9)]
        text = Checkpoint(ORIGIN, 9, merkle.root(leaves)).to_text()
        note = CheckpointSigner("log.example", log_key).sign_checkpoint(Checkpoint.from_text(text))
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = _post(url, f"old 0\n\n{note}")
                break
            except urllib.error.URLError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "the witness did not start"
                time.sleep(0.1)
        status, _, cosignature = reply
        assert status == 200, cosignature
        assert check_cosignature(vkey.stdout.strip(), text, cosignature) > 1_700_000_000
        assert _post(url, f"old 0\n\n{note}")[:3] == (409, "text/x.tlog.size", "9\n")
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "cosigning 1 logs ('log.example - 7')" in err
    assert "BEGIN" not in err
