"""A real OIDC identity provider in its own process, for end-to-end tests.

The provider serves discovery and JWKS at ``http://127.0.0.1:PORT``; the tests hold the signing
key and mint tokens themselves (as a CI system's token endpoint would hand them out). Run as
``python -m tests.e2e.idp KEY_PEM PORT``.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from services.keys import load_private_key, write_private_key
from tests.serverproc import free_port

KID = "e2e-1"


def _app(key: ec.EllipticCurvePrivateKey, url: str) -> web.Application:
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": KID, "use": "sig"}

    async def discovery(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": url,
                "jwks_uri": f"{url}/jwks",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
            }
        )

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks", jwks)
    return app


@dataclass
class IdP:
    """A running provider: its issuer URL, its key (to mint tokens) and its process."""

    url: str
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    process: subprocess.Popen[bytes]

    def token(
        self,
        *,
        email: str | None = "alice@example.com",
        sub: str = "alice",
        audience: str = "sigstore",
        issued: datetime.datetime | None = None,
        lifetime: datetime.timedelta = datetime.timedelta(minutes=10),
        **extra: Any,
    ) -> str:
        """An ES256 ID token from this provider (``email_verified`` set when ``email`` is)."""
        now = int((issued or datetime.datetime.now(datetime.UTC)).timestamp())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": audience,
            "sub": sub,
            "iat": now,
            "nbf": now,
            "exp": now + int(lifetime.total_seconds()),
            **extra,
        }
        if email is not None:
            claims.update(email=email, email_verified=True)
        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return jwt.encode(claims, pem, algorithm="ES256", headers={"kid": KID})

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_idp(directory: Path) -> IdP:
    """Generate a key in ``directory`` and start a provider process serving its JWKS."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = directory / "idp.key"
    write_private_key(key_path, key)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (directory / "idp.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.idp", str(key_path), str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"IdP exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/.well-known/openid-configuration", timeout=1):
                return IdP(url, key, proc)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("IdP did not start in 20 s")


def main() -> None:
    key = load_private_key(Path(sys.argv[1]))
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    port = int(sys.argv[2])
    web.run_app(_app(key, f"http://127.0.0.1:{port}"), host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
