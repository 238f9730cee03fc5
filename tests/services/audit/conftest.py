"""The log both replays are tested on: written through the real HTTP API."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from services.app import Settings, create_app
from services.db import Database
from services.log.rekor.api import REKOR_LOG
from services.log.schema import tree_heads
from tests.services.audit.test_fsck import AiohttpClient

# The CA's fixtures, for the CT log's monitor: a live OIDC issuer and a CA app on it.
from tests.services.ca.conftest import idp, issuer  # noqa: F401
from tests.services.ca.test_api import fulcio  # noqa: F401
from tests.services.log.rekor.material import statement
from tests.services.log.rekor.test_api import Signer
from tests.services.log.rekor.test_api_v2 import _dsse_request, _key_request


@pytest.fixture
async def log(aiohttp_client: AiohttpClient, db: Database, tmp_path: Path) -> tuple[Path, int, int]:
    """A log with 300 v1 and 300 v2 entries (past one full tile), a few of each DSSE, the rest
    hashedrekord; returns the data directory and the two tree IDs."""
    data = tmp_path / "data"
    settings = Settings(data_dir=data, public_url="http://log.example:3000")
    client = await aiohttp_client(create_app(settings, database=db, components=("log",)))
    signer = Signer()
    key = ec.generate_private_key(ec.SECP256R1())
    # In bursts, as many clients would send them: a few dozen commits, not six hundred.
    for burst in range(0, 300, 60):
        v1_bodies = [signer.hashedrekord(b"e%d" % i) for i in range(burst, burst + 58)]
        v1_bodies += [signer.dsse(f"{i:064x}") for i in range(burst, burst + 2)]
        v2_bodies = [
            _key_request(key, b"v2-%d" % i, "PKIX_ECDSA_P256_SHA_256")
            for i in range(burst, burst + 58)
        ]
        v2_bodies += [
            _dsse_request([key], statement([f"{i:064x}"])) for i in range(burst, burst + 2)
        ]
        replies = await asyncio.gather(
            *(client.post("/api/v1/log/entries", json=b) for b in v1_bodies),
            *(client.post("/api/v2/log/entries", json=b) for b in v2_bodies),
        )
        assert {r.status for r in replies} == {201}
    v1_tree = client.app[REKOR_LOG].tree_id
    trees = await db.read(lambda c: [int(t) for (t,) in c.execute(select(tree_heads.c.tree_id))])
    (v2_tree,) = [t for t in trees if t != v1_tree]
    await client.close()
    return data, v1_tree, v2_tree
