"""The genesis entry of a Rekor log, and the start-up warning for logs that predate it."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pytest_aiohttp import AiohttpClient

from services.app import Settings, create_app, tree_id_for_key
from services.db import Database
from services.keys import load_or_create_ec_key
from services.log.checkpoint import CheckpointSigner
from services.log.rekor.genesis import GenesisMismatch, genesis_entry, statement, verify_genesis
from services.log.sequencer import Genesis, Sequencer
from services.log.sqlstore import SQLLogStore

ORIGIN = "log.example - 42"


def test_genesis_is_a_valid_hashedrekord_over_the_origin() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    genesis = genesis_entry(CheckpointSigner("log.example", key), ORIGIN)
    body = json.loads(genesis.leaf)
    assert (body["kind"], body["apiVersion"]) == ("hashedrekord", "0.0.1")
    digest = hashlib.sha256(b"sigstead genesis\nlog.example - 42\n").hexdigest()
    assert statement(ORIGIN) == b"sigstead genesis\nlog.example - 42\n"
    assert body["spec"]["data"]["hash"] == {"algorithm": "sha256", "value": digest}
    assert f"sha256:{digest}" in genesis.search_keys
    verify_genesis(genesis.leaf, key.public_key(), ORIGIN)
    with pytest.raises(GenesisMismatch, match="not a hashedrekord"):
        verify_genesis(b"[]", key.public_key(), ORIGIN)


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, public_url="http://log.example:3000", batch_max_age=0.005)


async def _create_pre_genesis_log(db: Database, data_dir: Path) -> None:
    """A log as sigstead made them before genesis entries: entry 0 is a client's."""
    key = load_or_create_ec_key(data_dir / "keys" / "rekor.pem")
    signer = CheckpointSigner("log.example", key)
    tree_id = tree_id_for_key(signer.key_id)
    old = Sequencer(
        SQLLogStore(db),
        tree_id=tree_id,
        origin=f"log.example - {tree_id}",
        signer=signer,
        genesis=lambda _now: Genesis(b'{"a client entry":"from before genesis entries"}'),
    )
    await old.start()
    await old.stop()


async def test_a_log_that_predates_genesis_entries_is_named_at_start(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    await _create_pre_genesis_log(db, data_dir)
    with caplog.at_level(logging.WARNING, logger="services.app"):
        client = await aiohttp_client(create_app(_settings(data_dir), database=db))
    (warning,) = [r for r in caplog.records if "predates genesis entries" in r.getMessage()]
    assert "sigstead log repair-bundle" in warning.getMessage()
    # It serves on: the next entry is index 1, as in any log.
    assert (await (await client.get("/api/v1/log")).json())["treeSize"] == 1


async def test_a_fresh_log_does_not_warn(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="services.app"):
        await aiohttp_client(create_app(_settings(tmp_path / "data"), database=db))
    assert not [r for r in caplog.records if "genesis" in r.getMessage()]
