"""A whole sigstead deployment for end-to-end tests: an IdP process, ``sigstead up`` with the CA,
and the trust material exported by ``sigstead trust export`` (the command a user runs)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.idp import IdP, start_idp
from tests.serverproc import Server, start_server, stop_server
from tests.services.ca.oidc_issuer import write_email_issuer_config
from tests.services.log.rekor.material import hashedrekord_body

IDENTITY = "alice@example.com"
# Entries other signers have made in the busy deployment before the tests sign. Not a power of
# two, so proofs have a ragged right edge as well as depth.
BUSY_ENTRIES = 1037


@dataclass
class Stack:
    """The running processes and the exported trust directory."""

    idp: IdP
    server: Server
    trust: Path

    @property
    def client_trust_config(self) -> Path:
        """The file for ``sigstore --trust-config``."""
        return self.trust / "client_trust_config.json"

    @property
    def tuf_url(self) -> str:
        """The TUF repository the server serves (``sigstore --instance``, ``--tuf-mirror-url``)."""
        return f"{self.server.url}/tuf"

    @property
    def trusted_root(self) -> Path:
        """The exported ``trusted_root.json``."""
        return self.trust / "trusted_root.json"

    def stop(self) -> None:
        if self.server.process.poll() is None:
            stop_server(self.server)
        self.idp.stop()


def sigstead(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``sigstead`` command line as a user would (a fresh process)."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def start_stack(
    directory: Path, *flags: str, server_flags: Sequence[str] = (), port: int | None = None
) -> Stack:
    """Start an IdP and ``sigstead up --oidc-config`` (on ``port``, default a free one), then
    export the trust material. ``flags`` (publication flags such as ``--rekor-version 2``) go
    to both commands, ``server_flags`` to ``up`` alone."""
    directory.mkdir(parents=True, exist_ok=True)
    idp = start_idp(directory)
    config = write_email_issuer_config(directory / "oidc.json", idp.url)
    try:
        server = start_server(
            directory / "data", "--oidc-config", str(config), *flags, *server_flags, port=port
        )
    except BaseException:
        idp.stop()
        raise
    stack = Stack(idp, server, directory / "trust")
    try:
        done = sigstead(
            "trust",
            "export",
            "--data-dir",
            str(server.data_dir),
            "--public-url",
            server.url,
            "--out",
            str(stack.trust),
            "--identity",
            IDENTITY,
            "--issuer",
            idp.url,
            *flags,
        )
        if done.returncode != 0:
            raise RuntimeError(f"trust export failed: {done.stderr}")
    except BaseException:
        stack.stop()
        raise
    return stack


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a client process, with ``home`` as its private home.

    Clients keep TUF state under the user's data and cache directories; a home of each test's
    own keeps anything from leaking between tests or from the machine. ``CI`` and
    ``SIGSTORE_ID_TOKEN`` are dropped so that only callers that mean to pass a token do.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "SIGSTORE_ID_TOKEN")}
    return {
        **env,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "NO_COLOR": "1",
        # sigstore-python prints through rich, which wraps messages at the terminal width.
        "COLUMNS": "1000",
        **extra,
    }


def sigstore_python(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run sigstore-python's command line (a dev dependency) from this interpreter, so it is
    found whether or not the virtualenv's ``bin`` is on ``PATH``."""
    return subprocess.run(
        [sys.executable, "-m", "sigstore", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=client_env(home),
        check=False,
    )


def python_sign(
    stack: Stack, home: Path, artifact: Path, bundle: Path, *, tuf: bool = False
) -> None:
    """``sigstore sign`` with the exported client trust config, or with ``tuf`` through the
    TUF repository sigstead serves (after ``sigstore --instance URL trust-instance``)."""
    done = sigstore_python(
        home,
        *_python_trust(stack, tuf),
        "sign",
        "--identity-token",
        stack.idp.token(),
        "--bundle",
        str(bundle),
        str(artifact),
    )
    assert done.returncode == 0, done.stderr


def python_verify(
    stack: Stack,
    home: Path,
    artifact: Path,
    bundle: Path,
    *,
    identity: str = IDENTITY,
    issuer: str | None = None,
    tuf: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``sigstore verify identity``, trusting as ``python_sign`` does."""
    return sigstore_python(
        home,
        *_python_trust(stack, tuf),
        "verify",
        "identity",
        "--cert-identity",
        identity,
        "--cert-oidc-issuer",
        issuer or stack.idp.url,
        "--bundle",
        str(bundle),
        str(artifact),
    )


def _python_trust(stack: Stack, tuf: bool) -> tuple[str, str]:
    if tuf:
        return ("--instance", stack.tuf_url)
    return ("--trust-config", str(stack.client_trust_config))


def fill_log(stack: Stack, entries: int, concurrency: int = 16) -> int:
    """Append ``entries`` hashedrekord entries from a throwaway key, as other signers would;
    return the tree size afterwards. Makes a deployment busy: deep inclusion proofs, and a
    tree size that is not a power of two."""

    async def run() -> int:
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        url = f"{stack.server.url}/api/v1/log/entries"
        todo = iter(range(entries))

        async def worker(session: aiohttp.ClientSession) -> None:
            for i in todo:
                artifact = f"someone else's artifact {i} {uuid.uuid4()}".encode()
                body = hashedrekord_body(
                    key_pem,
                    key.sign(artifact, ec.ECDSA(hashes.SHA256())),
                    hashlib.sha256(artifact).hexdigest(),
                )
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as resp:
                    if resp.status != 201:
                        raise RuntimeError(f"filling the log: {resp.status} {await resp.text()}")

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
            async with session.get(f"{stack.server.url}/api/v1/log") as resp:
                size: int = (await resp.json())["treeSize"]
                return size

    return asyncio.run(run())
