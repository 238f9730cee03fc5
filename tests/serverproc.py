"""Start and stop a real ``sigstead up`` process (for end-to-end and client tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Server:
    """A running sigstead: its base URL, data directory and process."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(
    data_dir: Path, *extra: str, command: tuple[str, ...] = ("up",), port: int | None = None
) -> Server:
    """Start ``sigstead COMMAND`` on ``port`` (a free one by default) and wait for /healthz."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    log = (data_dir.parent / f"sigstead-{port}.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            *command,
            "--data-dir",
            str(data_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sigstead up exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return Server(url, data_dir, proc)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("sigstead up did not become healthy in 30 s")


def stop_server(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=30)
