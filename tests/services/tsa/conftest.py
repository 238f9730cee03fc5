"""Fixtures for the TSA tests: one generated key and chain, an authority, the HTTP app."""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from services.tsa import keys
from services.tsa.app import create_app
from services.tsa.authority import TimestampAuthority
from tests.services.tsa.material import NOW

AiohttpClient = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]
Material = tuple[ec.EllipticCurvePrivateKey, list[x509.Certificate]]


@pytest.fixture(scope="session")
def material() -> Material:
    """A generated TSA leaf key and [leaf, root], valid from a day before ``NOW``."""
    _, leaf_key, chain = keys.generate(NOW - datetime.timedelta(days=1))
    return leaf_key, chain


@pytest.fixture(scope="session")
def authority(material: Material) -> TimestampAuthority:
    return TimestampAuthority(*material)


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, authority: TimestampAuthority
) -> TestClient[Any, Any]:
    """The real TSA app with its clock pinned to ``NOW``."""
    return await aiohttp_client(create_app(authority, clock=lambda: NOW))
