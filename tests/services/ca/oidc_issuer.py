"""A real OIDC issuer for tests: aiohttp on 127.0.0.1, discovery + JWKS, RSA and EC signing keys.

One server hosts any number of issuers at ``http://127.0.0.1:<port>/<name>``; each has its own
discovery document, its own JWKS, and counters of how often they were fetched.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

# Generated once per test session: RSA generation is the slow part of these tests.
RSA_KEY = rsa.generate_private_key(65537, 2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC384_KEY = ec.generate_private_key(ec.SECP384R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
FOREIGN_RSA_KEY = rsa.generate_private_key(65537, 2048)


def public_jwk(key: SigningKey, kid: str) -> dict[str, Any]:
    """The public JWK of ``key`` with ``kid``."""
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Issuer:
    """One issuer's state; tests mutate it to simulate rotation, outages and lies."""

    name: str
    url: str
    keys: dict[str, SigningKey] = field(default_factory=dict)
    algorithms: list[str] | None = None
    discovery_issuer: str | None = None
    jwks_uri: str | None = None
    discovery_hits: int = 0
    jwks_hits: int = 0

    def jwks(self) -> dict[str, Any]:
        """The JWKS document currently served."""
        return {"keys": [public_jwk(k, kid) for kid, k in self.keys.items()]}


class IssuerServer:
    """The aiohttp application and its running site."""

    def __init__(self) -> None:
        self.issuers: dict[str, Issuer] = {}
        self.base_url = ""
        app = web.Application()
        app.router.add_get("/{name}/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/{name}/jwks", self._jwks)
        self._runner = web.AppRunner(app)

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen on an ephemeral port of 127.0.0.1 (HTTPS when given a context)."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        scheme = "https" if ssl_context is not None else "http"
        self.base_url = f"{scheme}://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Stop listening."""
        await self._runner.cleanup()

    def add(self, name: str, **keys: SigningKey) -> Issuer:
        """Host a new issuer at ``<base>/<name>`` signing with ``keys`` (kid -> key)."""
        issuer = Issuer(name, f"{self.base_url}/{name}", dict(keys))
        self.issuers[name] = issuer
        return issuer

    async def _discovery(self, request: web.Request) -> web.Response:
        issuer = self.issuers.get(request.match_info["name"])
        if issuer is None:
            raise web.HTTPNotFound()
        issuer.discovery_hits += 1
        doc: dict[str, Any] = {
            "issuer": issuer.discovery_issuer or issuer.url,
            "jwks_uri": issuer.jwks_uri or f"{issuer.url}/jwks",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
        }
        if issuer.algorithms is not None:
            doc["id_token_signing_alg_values_supported"] = issuer.algorithms
        return web.json_response(doc)

    async def _jwks(self, request: web.Request) -> web.Response:
        issuer = self.issuers.get(request.match_info["name"])
        if issuer is None:
            raise web.HTTPNotFound()
        issuer.jwks_hits += 1
        return web.json_response(issuer.jwks())


def claims_for(
    issuer: Issuer,
    now: datetime.datetime,
    *,
    audience: str | list[str] = "sigstore",
    lifetime: datetime.timedelta = datetime.timedelta(minutes=10),
    **extra: Any,
) -> dict[str, Any]:
    """Standard claims for ``issuer`` at ``now`` plus ``extra`` (``None`` values are dropped)."""
    t = int(now.timestamp())
    claims: dict[str, Any] = {
        "iss": issuer.url,
        "aud": audience,
        "iat": t,
        "nbf": t,
        "exp": t + int(lifetime.total_seconds()),
        "sub": "subject-1",
    }
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def sign(claims: dict[str, Any], key: SigningKey, kid: str | None, alg: str) -> str:
    """A compact JWS over ``claims`` with ``key``."""
    headers = {"kid": kid} if kid is not None else {}
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    token = jwt.encode(claims, pem, algorithm=alg, headers=headers)
    if kid is None:
        # pyjwt adds no kid unless asked; make sure of it.
        assert "kid" not in jwt.get_unverified_header(token)
    return token


def unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    """``header.payload.`` with an empty signature (the ``alg: none`` attack)."""
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."


def hmac_signed(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """An HS256 token keyed with ``secret`` (the public-key-as-HMAC-secret confusion attack)."""
    signing_input = (
        f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': kid}).encode())}."
        f"{_b64(json.dumps(claims).encode())}"
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def write_email_issuer_config(path: Path, issuer_url: str) -> Path:
    """Write a Fulcio JSON config naming one email issuer, reachable over plain HTTP."""
    entry = {
        "IssuerURL": issuer_url,
        "ClientID": "sigstore",
        "Type": "email",
        "AllowInsecureHTTP": True,
    }
    path.write_text(json.dumps({"OIDCIssuers": {issuer_url: entry}}))
    return path
