"""Fixtures for the CA tests: a live OIDC issuer on 127.0.0.1 and a CA generated at ``NOW``."""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from services.ca import keys
from services.ca.config import FulcioConfig, parse_config
from tests.services.ca.oidc_issuer import Issuer, IssuerServer

NOW = datetime.datetime(2026, 11, 22, 12, 0, 0, tzinfo=datetime.UTC)


@pytest.fixture
async def idp() -> AsyncIterator[IssuerServer]:
    """A running issuer server with no issuers yet (tests add the ones they need)."""
    server = IssuerServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def issuer(idp: IssuerServer) -> tuple[IssuerServer, Issuer, ec.EllipticCurvePrivateKey]:
    """One email issuer "acme" signing ES256 with key ``k1``: (server, issuer, its key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    acme = idp.add("acme", k1=key)
    # Discovery must advertise ES256: without the field OIDC (and go-oidc) assume RS256 only.
    acme.algorithms = ["ES256"]
    return idp, acme, key


def config_json(
    issuers: dict[str, dict[str, Any]],
    meta: dict[str, dict[str, Any]] | None = None,
    ci: dict[str, Any] | None = None,
) -> FulcioConfig:
    """A Fulcio JSON config; every entry defaults to ClientID sigstore, AllowInsecureHTTP true."""
    doc: dict[str, Any] = {
        "OIDCIssuers": {
            url: {"IssuerURL": url, "ClientID": "sigstore", "AllowInsecureHTTP": True, **extra}
            for url, extra in issuers.items()
        }
    }
    if meta:
        doc["MetaIssuers"] = {
            p: {"ClientID": "sigstore", "AllowInsecureHTTP": True, **extra}
            for p, extra in meta.items()
        }
    if ci:
        doc["CIIssuerMetadata"] = ci
    return parse_config(json.dumps(doc))


@pytest.fixture(scope="session")
def ca_p384(tmp_path_factory: pytest.TempPathFactory) -> keys.CAKeyMaterial:
    """A generated P-384 root + intermediate, valid at ``NOW``."""
    return keys.load_or_create(tmp_path_factory.mktemp("ca384"), NOW)


@pytest.fixture(scope="session")
def ca_rsa(tmp_path_factory: pytest.TempPathFactory) -> keys.CAKeyMaterial:
    """A generated RSA-3072 root + intermediate, valid at ``NOW``."""
    directory: Path = tmp_path_factory.mktemp("carsa")
    return keys.load_or_create(directory, NOW, key_type=keys.CAKeyType.RSA_3072)
