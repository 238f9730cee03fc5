"""The witness fed by a real sigstead Rekor v1 log over its HTTP API: the signed tree head of
``GET /api/v1/log`` and the proof of ``GET /api/v1/log/proof``, as a log pushing to witnesses
would send them."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from services.app import Settings, create_app
from services.db import Database, sqlite_url
from services.keys import load_private_key
from services.witness.app import create_witness_app
from services.witness.note import Cosigner, ecdsa_vkey
from services.witness.state import WitnessStore
from services.witness.witness import Witness
from tests.services.log.rekor.test_api import Signer
from tests.services.witness.test_app import NOW, AiohttpClient
from tests.services.witness.test_note import check_cosignature


async def _head(log: TestClient[Any, Any]) -> tuple[int, str]:
    async with log.get("/api/v1/log") as reply:
        info = await reply.json()
    return int(info["treeSize"]), str(info["signedTreeHead"])


async def test_the_witness_follows_a_sigstead_log(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data, public_url="http://log.example:3000")
    log = await aiohttp_client(create_app(settings, database=db, components=("log",)))
    key = load_private_key(data / "keys" / "rekor.pem")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    size1, note1 = await _head(log)
    origin = note1.split("\n", 1)[0]

    witness_db = Database(sqlite_url(tmp_path / "witness.db"))
    try:
        cosigner = Cosigner("witness.example/w1", ed25519.Ed25519PrivateKey.generate())
        witness = Witness(WitnessStore(witness_db), cosigner)
        await witness.store.create()
        await witness.configure({origin: (ecdsa_vkey("log.example", key.public_key()),)})
        client = await aiohttp_client(create_witness_app(witness, clock=lambda: NOW))

        async with client.post("/add-checkpoint", data=f"old 0\n\n{note1}") as reply:
            assert reply.status == 200, await reply.text()
            line = await reply.text()
        assert check_cosignature(cosigner.vkey, note1.partition("\n\n")[0] + "\n", line) == NOW

        signer = Signer()
        for i in range(5):
            async with log.post("/api/v1/log/entries", json=signer.hashedrekord(b"%d" % i)) as r:
                assert r.status == 201
        size2, note2 = await _head(log)
        assert size2 == size1 + 5
        async with log.get(f"/api/v1/log/proof?firstSize={size1}&lastSize={size2}") as reply:
            hashes = (await reply.json())["hashes"]
        proof = "".join(f"{base64.b64encode(bytes.fromhex(h)).decode()}\n" for h in hashes)
        async with client.post("/add-checkpoint", data=f"old {size1}\n{proof}\n{note2}") as reply:
            assert reply.status == 200, await reply.text()
            line = await reply.text()
        assert check_cosignature(cosigner.vkey, note2.partition("\n\n")[0] + "\n", line) == NOW
        state = await witness.store.get(origin)
        assert state is not None
        assert state.size == size2
    finally:
        await witness_db.dispose()
