"""A local OIDC issuer for trying sigstead out: a key, its JWKS file, and tokens on demand.

There is no server: the CA reads the issuer's keys from the JWKS file (the same ``JWKSFile``
mechanism an air-gapped site uses for its real IdP), and ``token`` signs ID tokens with the key.
Anyone who can read ``issuer.key`` can mint any identity this issuer vouches for, which is why it
is a separate, explicitly named issuer that production configurations never list.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from services.errors import OperatorError
from services.keys import load_or_create_ec_key

__all__ = ["DEFAULT_ISSUER", "DevIssuerError", "init", "token"]

# ``.invalid`` (RFC 2606) cannot resolve, so nothing can ever be fetched from this URL.
DEFAULT_ISSUER = "https://dev-issuer.sigstead.invalid"
KEY_FILE = "issuer.key"
JWKS_FILE = "jwks.json"
CONFIG_FILE = "oidc.yaml"
ISSUER_FILE = "issuer-url"


class DevIssuerError(OperatorError):
    """The issuer directory is not one ``init`` made."""


def _kid(key: ec.EllipticCurvePrivateKey) -> str:
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    # RFC 7638 thumbprint would also do; the x coordinate prefix is unique enough per directory.
    return f"dev-{jwk['x'][:16]}"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def init(directory: Path, issuer: str = DEFAULT_ISSUER) -> Path:
    """Create (or reuse) the issuer key in ``directory``; write its JWKS and a CA config.

    Returns the path of the Fulcio-format config to pass as ``sigstead up --oidc-config``.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = load_or_create_ec_key(directory / KEY_FILE)
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": _kid(key), "use": "sig"}
    _write(directory / JWKS_FILE, json.dumps({"keys": [jwk]}, indent=2) + "\n")
    _write(directory / ISSUER_FILE, issuer + "\n")
    config = directory / CONFIG_FILE
    _write(
        config,
        "# A development issuer: tokens come from `sigstead dev-issuer token`.\n"
        "oidc-issuers:\n"
        f"  {issuer}:\n"
        f"    issuer-url: {issuer}\n"
        "    client-id: sigstore\n"
        "    type: email\n"
        f"    jwks-file: {JWKS_FILE}\n",
    )
    return config


def token(
    directory: Path,
    email: str,
    now: datetime.datetime,
    *,
    lifetime: datetime.timedelta = datetime.timedelta(minutes=10),
) -> str:
    """An ES256 ID token for ``email`` (verified), audience ``sigstore``, valid from ``now``."""
    path, issuer_file = directory / KEY_FILE, directory / ISSUER_FILE
    if not path.is_file() or not issuer_file.is_file():
        raise DevIssuerError(
            f"{directory} holds no dev issuer: run `sigstead dev-issuer init --dir {directory}` "
            "first"
        )
    key = load_or_create_ec_key(path)
    issuer = issuer_file.read_text().strip()
    issued = int(now.timestamp())
    claims = {
        "iss": issuer,
        "aud": "sigstore",
        "sub": email,
        "email": email,
        "email_verified": True,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(lifetime.total_seconds()),
    }
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return jwt.encode(claims, pem, algorithm="ES256", headers={"kid": _kid(key)})
