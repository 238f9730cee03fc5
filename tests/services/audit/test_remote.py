"""``sigstead fsck --url``: the auditor's replay over HTTP of a real log (the fixture of
test_fsck: 301 entries in each of Rekor v1 and v2), clean, then with one stored value changed
before the server starts, on SQLite and PostgreSQL. The CT log is replayed by the e2e session
stack's teardown, where the CA has logged real precertificates."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import update

from services.app import Settings, create_app
from services.audit.fsck import Divergence
from services.audit.remote import RemoteLog, fsck_remote, remote_logs
from services.db import Database
from services.errors import OperatorError
from services.keys import load_private_key
from services.log.schema import entries, tiles, tree_heads
from tests.services.audit.test_fsck import AiohttpClient, Tamper, _entry, _flip, _older, _tile


def _trusted_root(data: Path, url: str) -> dict[str, Any]:
    """The two Rekor logs as a trusted root lists them (v2 marked by its checkpoint key ID)."""

    def tlog(name: str) -> dict[str, Any]:
        private = load_private_key((data / "keys" / name).with_suffix(".pem"))
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        key = private.public_key()
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        log_id = base64.b64encode(hashlib.sha256(der).digest()).decode()
        return {
            "baseUrl": url,
            "publicKey": {"rawBytes": base64.b64encode(der).decode()},
            "logId": {"keyId": log_id},
        }

    v2 = tlog("rekor-v2.pub") | {"checkpointKeyId": {"keyId": "unused"}}
    return {"tlogs": [tlog("rekor.pub"), v2]}


async def _replay(aiohttp_client: AiohttpClient, db: Database, data: Path) -> list[Any]:
    # Some edits below also change the tree under a head the server remembers, and its head
    # guard would refuse to start (test_headguard). What is tested here is the auditor's view
    # of a server that does serve them, so the remembered heads go.
    for remembered in (data / "heads").glob("*.json"):
        remembered.unlink()
    settings = Settings(data_dir=data, public_url="http://log.example:3000")
    client = await aiohttp_client(create_app(settings, database=db, components=("log",)))
    try:
        # The trusted root names the public URL; the auditor reaches the server elsewhere.
        logs = remote_logs(_trusted_root(data, "http://log.example:3000"), str(client.make_url("")))
        return await fsck_remote(logs)
    finally:
        await client.close()


async def test_an_untouched_log_replays_over_http(
    aiohttp_client: AiohttpClient, db: Database, log: tuple[Path, int, int]
) -> None:
    data, _, _ = log
    done: list[tuple[int, int, int]] = []
    settings = Settings(data_dir=data, public_url="http://log.example:3000")
    client = await aiohttp_client(create_app(settings, database=db, components=("log",)))
    logs = remote_logs(_trusted_root(data, "http://x"), str(client.make_url("")))
    reports = await fsck_remote(logs, progress=lambda *p: done.append(p))
    await client.close()
    assert [(r.size, r.seals, r.tiles) for r in reports] == [(301, 301, 0), (301, 0, 3)]
    assert done[-1] == (1, 301, 301)


def _set(conn: Any, tree: int, idx: int, **values: Any) -> None:
    where = (entries.c.tree_id == tree, entries.c.idx == idx)
    conn.execute(update(entries).where(*where).values(**values))


CASES: dict[str, tuple[Tamper, str | None]] = {
    "v1 integrated_time": (
        lambda c, v1, v2: _set(c, v1, 42, integrated_time=_older(c, v1, 42)),
        "entry 42: its SET does not verify",
    ),
    "v1 leaf": (
        lambda c, v1, v2: _set(c, v1, 7, leaf=_flip(bytes(_entry(c, v1, 7, "leaf")))),
        "entry 7: UUID",
    ),
    "v2 leaf": (
        lambda c, v1, v2: _set(c, v2, 260, leaf=_flip(bytes(_entry(c, v2, 260, "leaf")))),
        "tile /api/v2/tile/0/001.p/45 differs from the entries' hashes at slot 4",
    ),
    "v2 tile": (
        lambda c, v1, v2: c.execute(
            update(tiles)
            .where(tiles.c.tree_id == v2, tiles.c.level == 0, tiles.c.idx == 0)
            .values(data=_flip(_tile(c, v2, 0, 0), 32 * 9))
        ),
        "tile /api/v2/tile/0/000 differs from the entries' hashes at slot 9",
    ),
    "v1 head": (
        lambda c, v1, v2: c.execute(
            update(tree_heads)
            .where(tree_heads.c.tree_id == v1)
            .values(checkpoint=tree_heads.c.checkpoint + "\u2014 x AAAA\n")
        ),
        None,  # a stranger's signature line beside the log's: ignored, as clients do
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_changed_value_is_seen_from_outside(
    aiohttp_client: AiohttpClient, db: Database, log: tuple[Path, int, int], case: str
) -> None:
    data, v1, v2 = log
    tamper, message = CASES[case]
    await db.write(lambda conn: tamper(conn, v1, v2))
    if message is None:
        assert len(await _replay(aiohttp_client, db, data)) == 2
        return
    with pytest.raises(Divergence, match=message.replace(".", r"\.")):
        await _replay(aiohttp_client, db, data)


def test_a_trusted_root_without_ecdsa_logs_is_refused() -> None:
    with pytest.raises(OperatorError, match="lists no logs"):
        remote_logs({"tlogs": []})
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert RemoteLog("rekor-v1", "http://x", key, b"").kind == "rekor-v1"
