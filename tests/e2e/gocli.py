"""The Go consumers (cosign v2 and v3, rekor-cli, crane's registry) as the tests run them: real
binaries built from pinned module versions (``tests/go/tools.txt``), each with a home of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.stack import IDENTITY, Stack, client_env
from tests.gotools import tool
from tests.serverproc import free_port

COSIGNS = ("cosign-v2", "cosign-v3")


def run(
    binary: Path, home: Path, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run a Go client with ``home`` as its home (cosign keeps TUF state in ``~/.sigstore``,
    rekor-cli its last checkpoint in ``~/.rekor``)."""
    return subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=client_env(home, COSIGN_YES="true", TUF_ROOT=str(home / ".sigstore" / "root")),
        check=False,
    )


def token_file(stack: Stack, directory: Path, *, email: str = IDENTITY) -> Path:
    """An ID token in a file, as cosign takes it: cosign reads ``--identity-token`` as a path
    first, and a JWT is longer than a file name may be, so it fails on a token given by value
    (``open eyJ...: file name too long``). No trailing newline: cosign uses the bytes as read."""
    path = directory / f"token-{time.monotonic_ns()}"
    path.write_text(stack.idp.token(email=email))
    path.chmod(0o600)
    return path


@dataclass
class Cosign:
    """One cosign major version with its own home, trusting ``stack``."""

    name: str
    binary: Path
    home: Path
    stack: Stack

    @property
    def v2(self) -> bool:
        return self.name == "cosign-v2"

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(self.binary, self.home, *args)

    def run_shell(
        self, script: str, *, path: Path, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """A bash script as a user runs it, with ``path`` first on ``PATH``."""
        env = client_env(self.home, **extra)
        env["PATH"] = f"{path}:{env['PATH']}"
        return subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=300, env=env,
            check=False,
        )  # fmt: skip

    def files(self) -> list[str]:
        """Trust from the files ``sigstead trust export`` wrote."""
        return [
            "--trusted-root",
            str(self.stack.trusted_root),
        ]

    def signing(self, *, tuf: bool) -> list[str]:
        """Where to sign: the signing config delivered by TUF, or the exported file. cosign v2
        takes the new bundle format and the signing config only when told to."""
        flags = ["--new-bundle-format"] if self.v2 else []
        if tuf:
            return [*flags, "--use-signing-config"] if self.v2 else flags
        return [
            *flags,
            "--signing-config",
            str(self.stack.trust / "signing_config.v0.2.json"),
            *self.files(),
        ]

    def verifying(self, *, tuf: bool) -> list[str]:
        flags = ["--new-bundle-format"] if self.v2 else []
        return flags if tuf else [*flags, *self.files()]

    def initialize(self) -> None:
        """``cosign initialize`` from the TUF repository sigstead serves, as an air-gapped
        user does: the mirror URL and the exported ``root.json``, nothing from the internet."""
        done = self(
            "initialize",
            "--mirror",
            self.stack.tuf_url,
            "--root",
            str(self.stack.trust / "tuf" / "root.json"),
        )
        assert done.returncode == 0, done.stderr


@dataclass
class Registry:
    """``crane registry serve`` on loopback: a real OCI registry, in memory."""

    host: str
    crane: Path
    home: Path

    def push_random_image(self, repository: str, directory: Path) -> str:
        """Push a one-layer image with random content; return it by digest."""
        layer = directory / f"layer-{time.monotonic_ns()}.tar"
        payload = directory / "payload.bin"
        payload.write_bytes(os.urandom(512))
        with tarfile.open(layer, "w") as tar:
            tar.add(payload, arcname="payload.bin")
        tag = f"{self.host}/{repository}:latest"
        done = run(self.crane, self.home, "append", "-f", str(layer), "-t", tag)
        assert done.returncode == 0, done.stderr
        digest = run(self.crane, self.home, "digest", tag)
        assert digest.returncode == 0, digest.stderr
        return f"{self.host}/{repository}@{digest.stdout.strip()}"


@contextmanager
def registry(directory: Path) -> Iterator[Registry]:
    crane = tool("crane")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (directory / "registry.log").open("wb")
    process = subprocess.Popen(
        [str(crane), "registry", "serve", "--address", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"crane registry did not start: {(directory / 'registry.log').read_text()}"
                    ) from None
                time.sleep(0.1)
        yield Registry(f"127.0.0.1:{port}", crane, directory)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
