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
    """A running sigstead: its base URL, data directory, process and output file."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.url.rsplit(":", 1)[1])

    def wait_healthy(self, timeout: float = 30) -> None:
        """Return once ``/healthz`` answers 200; raise if the process exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"sigstead exited with {self.process.returncode}: {self.log.read_text()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.process.kill()
        raise RuntimeError(f"sigstead did not become healthy in {timeout} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(
    data_dir: Path,
    *extra: str,
    command: tuple[str, ...] = ("up",),
    wait: bool = True,
    port: int | None = None,
) -> Server:
    """Start ``sigstead COMMAND`` on ``port`` (default: a free one); with ``wait``, return once
    it is healthy. A restart on a data directory takes the port it had: its default public URL
    names the port, and a server refuses to publish under another URL than the published one."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = data_dir.parent / f"sigstead-{port}.log"
    with log_path.open("wb") as log:
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
    server = Server(url, data_dir, proc, log_path)
    if wait:
        server.wait_healthy()
    return server


def stop_server(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=30)
