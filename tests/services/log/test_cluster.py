"""One sequencer per tree across processes (here: two ``Cluster`` members in one event loop, on
the real databases): election, forwarding, fail-over, authentication, recovery from the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from clients.merkle import verify_inclusion
from services.db import Database
from services.log import merkle
from services.log.checkpoint import CheckpointSigner
from services.log.cluster import ELECTION_POLL, Cluster
from services.log.errors import DuplicateEntry
from services.log.sequencer import Receipt, Sequencer
from services.log.sqlstore import SQLLogStore
from tests.services.log.test_sequencer import _KEY, TREE, make_sequencer, verify_note


class Member:
    """What one process has: its sequencer for the tree, and its cluster membership."""

    def __init__(self, db: Database, lock_dir: Path) -> None:
        self.store = SQLLogStore(db)
        self.db = db
        self.sequencer = make_sequencer(self.store)
        self.cluster = Cluster(listen=("127.0.0.1", 0), url=None, lock_dir=lock_dir)

    async def join(self) -> None:
        await self.cluster.start()
        await self.cluster.join(
            self.sequencer, self.db, self.store, CheckpointSigner("log.example", _KEY)
        )

    async def close(self) -> None:
        await self.cluster.close()


@pytest.fixture
async def pair(db: Database, tmp_path: Path) -> AsyncIterator[tuple[Member, Member]]:
    first, second = Member(db, tmp_path), Member(db, tmp_path)
    await first.join()
    await second.join()
    try:
        yield first, second
    finally:
        await second.close()
        await first.close()


def check(receipt: Receipt, leaf: bytes) -> None:
    """The receipt proves ``leaf`` in a checkpoint signed by the log's key."""
    note = verify_note(receipt.head.checkpoint)
    assert note.size == receipt.head.size
    verify_inclusion(merkle.hash_leaf(leaf), receipt.index, note.size, receipt.proof, note.root)


async def test_one_member_sequences_and_the_other_forwards_to_it(
    pair: tuple[Member, Member],
) -> None:
    first, second = pair
    assert first.sequencer.leading
    assert not second.sequencer.leading
    leaves = [f"entry {i}".encode() for i in range(40)]
    receipts = await asyncio.gather(
        *(m.sequencer.submit(leaf) for m, leaf in zip([first, second] * 20, leaves, strict=True))
    )
    assert sorted(r.index for r in receipts) == list(range(1, 41))
    for receipt, leaf in zip(receipts, leaves, strict=True):
        check(receipt, leaf)
    # Forwarded receipts teach the follower the heads: its reads see what it acknowledged.
    assert second.sequencer.head.size == max(r.head.size for r in receipts[1::2])


async def test_a_forwarded_duplicate_is_refused_with_the_existing_index(
    pair: tuple[Member, Member],
) -> None:
    first, second = pair
    receipt = await first.sequencer.submit(b"once")
    with pytest.raises(DuplicateEntry) as refused:
        await second.sequencer.submit(b"once")
    assert refused.value.index == receipt.index


async def test_when_the_sequencer_leaves_the_follower_is_elected_and_loses_nothing(
    pair: tuple[Member, Member],
) -> None:
    first, second = pair
    before = await second.sequencer.submit(b"before")
    # The leader leaves while the follower keeps submitting: every entry is either answered
    # by the old sequencer or resent to the new one.
    pending = [
        asyncio.ensure_future(second.sequencer.submit(f"during {i}".encode())) for i in range(20)
    ]
    await first.close()
    pending += [
        asyncio.ensure_future(second.sequencer.submit(f"after {i}".encode())) for i in range(20)
    ]
    receipts = await asyncio.gather(*pending)
    assert second.sequencer.leading
    assert sorted(r.index for r in receipts) == list(range(before.index + 1, before.index + 41))
    head = await second.sequencer.latest_head()
    assert head.size == before.index + 41


async def test_a_round_whose_answer_was_lost_is_answered_from_the_store(
    pair: tuple[Member, Member],
) -> None:
    """A resent leaf that the sequencer calls a duplicate was committed by the lost round."""
    first, second = pair
    committed = await first.sequencer.submit(b"committed, answer lost")
    # As if the first send had reached the sequencer and its answer been lost: the resend.
    receipt = await _resend(second.sequencer, b"committed, answer lost")
    assert receipt.index == committed.index
    check(receipt, b"committed, answer lost")


async def _resend(sequencer: Sequencer, leaf: bytes) -> Receipt:
    from services.log import cluster

    forwarder = sequencer._forward
    assert isinstance(forwarder, cluster._Forwarder)
    future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
    item = cluster._Item(leaf, frozenset(), None, True, future, resent=True)
    await forwarder._send([item])
    return await future


async def test_the_forwarding_endpoint_refuses_a_caller_without_the_logs_secret(
    pair: tuple[Member, Member],
) -> None:
    first, _second = pair
    url = f"{first.cluster.url}/internal/v1/trees/{TREE}/sequence"
    body: dict[str, object] = {
        "entries": [{"leaf": "AA==", "keys": [], "extra": None, "proof": True}]
    }
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer " + "00" * 32}):
            async with session.post(url, json=body, headers=headers) as resp:
                assert resp.status == 401
    head = await first.sequencer.latest_head()
    assert head.size == 1  # the genesis entry alone


async def test_a_stale_directory_entry_costs_one_failed_connection(
    pair: tuple[Member, Member],
) -> None:
    _first, second = pair
    forwarder = second.sequencer._forward
    from services.log import cluster

    assert isinstance(forwarder, cluster._Forwarder)
    forwarder._url = "http://127.0.0.1:9"
    receipt = await second.sequencer.submit(b"after a stale lookup")
    check(receipt, b"after a stale lookup")


async def test_election_waits_for_nothing_when_the_lock_is_free(
    db: Database, tmp_path: Path
) -> None:
    """A lone member is elected at once, and releases its lock when it leaves."""
    member = Member(db, tmp_path)
    await member.join()
    assert member.sequencer.leading
    await member.close()
    again = Member(db, tmp_path)
    await asyncio.wait_for(again.join(), ELECTION_POLL * 4)
    try:
        assert again.sequencer.leading
    finally:
        await again.close()
