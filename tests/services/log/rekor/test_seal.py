"""The SET is signed once, when the entry is integrated, and stored: editing a row's
``integrated_time`` afterwards is served as a SET that no longer verifies, and ``verify_seal``
finds the edited row. Both databases."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from aiohttp.test_utils import TestClient
from aiohttp.web import Application
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from services.app import Settings, create_app
from services.db import Database
from services.jcs import MAX_SAFE_INTEGER
from services.log.rekor.api import REKOR_LOG
from services.log.rekor.seal import SealMismatch, set_payload, verify_seal
from services.log.schema import entries
from tests.services.log.rekor.test_api import Signer

AiohttpClient = Callable[[Application], Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path
) -> TestClient[Any, Any]:
    settings = Settings(data_dir=tmp_path / "data", public_url="http://log.example:3000")
    return await aiohttp_client(create_app(settings, database=db, components=("log",)))


def _set_verifies(entry: dict[str, Any], key: ec.EllipticCurvePublicKey) -> bool:
    payload = set_payload(
        base64.b64decode(entry["body"]), entry["integratedTime"], entry["logID"], entry["logIndex"]
    )
    sig = base64.b64decode(entry["verification"]["signedEntryTimestamp"])
    try:
        key.verify(sig, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


async def test_an_edited_integrated_time_is_caught(
    client: TestClient[Any, Any], db: Database
) -> None:
    log = client.app[REKOR_LOG]
    key = log.signer.public_key
    created = await client.post("/api/v1/log/entries", json=Signer().hashedrekord(b"sealed"))
    assert created.status == 201
    ((uuid, entry),) = (await created.json()).items()
    assert _set_verifies(entry, key)

    stored = (await log.store.read_entries(log.tree_id, [entry["logIndex"]]))[entry["logIndex"]]
    assert stored.seal == base64.b64decode(entry["verification"]["signedEntryTimestamp"])
    verify_seal(stored.seal, stored.leaf, stored.integrated_time, stored.index, key, log.log_id)

    # An operator (or an attacker with the database) moves the entry back by a day.
    def edit(conn: Any) -> None:
        conn.execute(
            update(entries)
            .where(entries.c.tree_id == log.tree_id, entries.c.idx == entry["logIndex"])
            .values(integrated_time=entry["integratedTime"] - 86400)
        )

    await db.write(edit)
    served = await (await client.get(f"/api/v1/log/entries/{uuid}")).json()
    ((_, after),) = served.items()
    assert after["integratedTime"] == entry["integratedTime"] - 86400
    # The stored SET still covers the true time, so the reply no longer verifies anywhere...
    assert (
        after["verification"]["signedEntryTimestamp"]
        == entry["verification"]["signedEntryTimestamp"]
    )
    assert not _set_verifies(after, key)
    # ... and the auditor's check names the row.
    edited = (await log.store.read_entries(log.tree_id, [entry["logIndex"]]))[entry["logIndex"]]
    assert edited.seal is not None
    with pytest.raises(SealMismatch, match=f"entry {entry['logIndex']}"):
        verify_seal(edited.seal, edited.leaf, edited.integrated_time, edited.index, key, log.log_id)


async def test_entries_without_a_seal_are_still_signed_on_read(
    client: TestClient[Any, Any], db: Database
) -> None:
    """Rows written before the seal column existed (NULL) get a SET signed over their values."""
    log = client.app[REKOR_LOG]
    created = await client.post("/api/v1/log/entries", json=Signer().hashedrekord(b"old row"))
    ((uuid, entry),) = (await created.json()).items()

    def forget(conn: Any) -> None:
        conn.execute(
            update(entries)
            .where(entries.c.tree_id == log.tree_id, entries.c.idx == entry["logIndex"])
            .values(seal=None)
        )

    await db.write(forget)
    served = await (await client.get(f"/api/v1/log/entries/{uuid}")).json()
    ((_, after),) = served.items()
    assert _set_verifies(after, log.signer.public_key)


MAX = MAX_SAFE_INTEGER
set_ints = st.one_of(
    st.integers(0, 2**40),
    st.integers(-MAX - 2, -MAX + 2),
    st.integers(MAX - 2, MAX + 2),
    st.integers(),
    st.booleans(),
)
log_ids = st.one_of(
    st.binary(min_size=32, max_size=32).map(bytes.hex),
    st.text(max_size=8),
    st.sampled_from(["", "ABCdef019", "a-b", 'a"b', "\\", "\x00", "\u00e9", "\ud800"]),
)


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=2000), set_ints, log_ids, set_ints)
def test_set_payload_is_rfc8785_of_the_four_fields(
    leaf: bytes, integrated_time: int, log_id: str, index: int
) -> None:
    """Written directly for speed, the payload must still be exactly rfc8785's, or its error."""
    document: dict[str, Any] = {
        "body": base64.b64encode(leaf).decode(),
        "integratedTime": integrated_time,
        "logID": log_id,
        "logIndex": index,
    }
    try:
        expected: bytes | type[Exception] = rfc8785.dumps(document)
    except Exception as exc:
        expected = type(exc)
    if isinstance(expected, bytes):
        assert set_payload(leaf, integrated_time, log_id, index) == expected
    else:
        with pytest.raises(expected):
            set_payload(leaf, integrated_time, log_id, index)


def test_set_payload_refuses_an_index_past_2_53() -> None:
    with pytest.raises(rfc8785.IntegerDomainError):
        set_payload(b"leaf", 1, "ab" * 32, MAX + 1)
    with pytest.raises(rfc8785.IntegerDomainError):
        set_payload(b"leaf", -MAX - 1, "ab" * 32, 0)
