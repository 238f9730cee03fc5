"""``POST /add-checkpoint`` over HTTP on SQLite and PostgreSQL, with checkpoints signed by
sigstead's own ``CheckpointSigner`` and consistency proofs from the log's own prover
(``services.log.merkle``): every answer c2sp.org/tlog-witness prescribes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from services.db import Database
from services.log import merkle
from services.log.checkpoint import Checkpoint, CheckpointSigner
from services.witness.app import create_witness_app
from services.witness.note import Cosigner, ecdsa_vkey
from services.witness.state import LogState, WitnessStore, origin_hash
from services.witness.witness import Witness
from tests.services.witness.test_note import check_cosignature

AiohttpClient = Callable[[Application], Awaitable[TestClient[Any, Any]]]

NOW = 1_790_000_000
ORIGIN = "log.example - 4242"
LOG_KEY = ec.generate_private_key(ec.SECP256R1())
SIGNER = CheckpointSigner("log.example", LOG_KEY)
VKEY = ecdsa_vkey("log.example", LOG_KEY.public_key())
LEAVES = [merkle.hash_leaf(b"entry %d" % i) for i in range(300)]


def _nodes() -> dict[merkle.NodeID, bytes]:
    nodes: dict[merkle.NodeID, bytes] = {}
    merkle.CompactRange().extend(LEAVES, nodes.__setitem__)
    return nodes


NODES = _nodes()


def note(size: int, *, origin: str = ORIGIN, signer: CheckpointSigner = SIGNER) -> str:
    """The log's signed checkpoint of its first ``size`` leaves."""
    return signer.sign_checkpoint(Checkpoint(origin, size, merkle.root(LEAVES[:size])))


def text_of(size: int) -> str:
    """The note text the witness cosigns: the checkpoint body without its signatures."""
    return Checkpoint(ORIGIN, size, merkle.root(LEAVES[:size])).to_text()


def proof(old: int, new: int) -> list[bytes]:
    """The log's consistency proof from ``old`` to ``new`` leaves."""
    return merkle.consistency_proof(old, new, NODES.__getitem__)


def body(old: int, nodes: list[bytes], checkpoint: str) -> str:
    lines = "".join(f"{base64.b64encode(n).decode()}\n" for n in nodes)
    return f"old {old}\n{lines}\n{checkpoint}"


def request(old: int, new: int) -> str:
    return body(old, proof(old, new), note(new))


class Racing(WitnessStore):
    """The real store, but every read waits until ``readers`` requests have read: so racing
    requests all check against the same state before any of them writes."""

    def __init__(self, db: Database, readers: int) -> None:
        super().__init__(db)
        self.barrier = asyncio.Barrier(readers)

    async def get(self, origin: str) -> LogState | None:
        state = await super().get(origin)
        await self.barrier.wait()
        return state


@pytest.fixture
async def cosigner() -> Cosigner:
    return Cosigner("witness.example/w1", ed25519.Ed25519PrivateKey.generate())


async def make_client(
    aiohttp_client: AiohttpClient, store: WitnessStore, cosigner: Cosigner
) -> TestClient[Any, Any]:
    await store.create()
    witness = Witness(store, cosigner)
    await witness.configure({ORIGIN: (VKEY,)})
    return await aiohttp_client(create_witness_app(witness, clock=lambda: NOW))


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, db: Database, cosigner: Cosigner
) -> TestClient[Any, Any]:
    return await make_client(aiohttp_client, WitnessStore(db), cosigner)


async def add(client: TestClient[Any, Any], text: str | bytes) -> tuple[int, str, str]:
    async with client.post("/add-checkpoint", data=text) as reply:
        return reply.status, reply.content_type, await reply.text()


async def test_first_add_from_old_0_then_a_consistent_add_are_cosigned(
    client: TestClient[Any, Any], cosigner: Cosigner
) -> None:
    status, content_type, line = await add(client, request(0, 10))
    assert (status, content_type) == (200, "text/plain")
    assert check_cosignature(cosigner.vkey, text_of(10), line) == NOW

    status, _, line = await add(client, request(10, 201))
    assert status == 200
    assert check_cosignature(cosigner.vkey, text_of(201), line) == NOW
    # The same tree again (a log retrying) is cosigned again, with no proof.
    status, _, _ = await add(client, request(201, 201))
    assert status == 200


async def test_cosigned_checkpoint_is_served_to_monitors(
    client: TestClient[Any, Any], cosigner: Cosigner
) -> None:
    async with client.get(f"/{origin_hash(ORIGIN)}/checkpoint") as reply:
        assert reply.status == 404
    submitted = note(7)
    status, _, line = await add(client, body(0, [], submitted))
    assert status == 200
    async with client.get(f"/{origin_hash(ORIGIN)}/checkpoint") as reply:
        assert reply.status == 200
        served = await reply.text()
    # The log's verified signature, then the witness's cosignature.
    assert served == submitted + line
    text, _, sigs = served.partition("\n\n")
    assert sigs.splitlines()[0].startswith("\u2014 log.example ")
    assert check_cosignature(cosigner.vkey, text + "\n", sigs.splitlines()[1]) == NOW
    async with client.get("/not-a-hash/checkpoint") as reply:
        assert reply.status == 404


async def test_a_stale_old_size_is_409_with_the_witness_size(client: TestClient[Any, Any]) -> None:
    assert (await add(client, request(0, 20)))[0] == 200
    status, content_type, text = await add(client, request(10, 30))
    assert (status, content_type, text) == (409, "text/x.tlog.size", "20\n")
    # A client that knows nothing asks with old 0 and learns the size the same way.
    status, content_type, text = await add(client, request(0, 30))
    assert (status, content_type, text) == (409, "text/x.tlog.size", "20\n")
    assert (await add(client, request(20, 30)))[0] == 200


async def test_proofs_that_do_not_verify_are_422(client: TestClient[Any, Any]) -> None:
    assert (await add(client, request(0, 13)))[0] == 200
    good = proof(13, 77)
    flipped = [good[0][:-1] + bytes([good[0][-1] ^ 1]), *good[1:]]
    for bad in (flipped, good[:-1], [*good, good[0]], []):
        status, _, message = await add(client, body(13, bad, note(77)))
        assert status == 422, message
    # A proof for another tree of the same size: the log forked.
    fork = [merkle.hash_leaf(b"fork %d" % i) for i in range(77)]
    forked = SIGNER.sign_checkpoint(Checkpoint(ORIGIN, 77, merkle.root(LEAVES[:13] + fork[13:])))
    assert (await add(client, body(13, good, forked)))[0] == 422
    # The same size with another root.
    other = SIGNER.sign_checkpoint(Checkpoint(ORIGIN, 13, merkle.root(fork[:13])))
    assert (await add(client, body(13, [], other)))[0] == 422
    # Nothing moved: the honest extension still works from 13.
    assert (await add(client, request(13, 77)))[0] == 200


async def test_from_size_0_the_proof_is_empty_and_an_empty_tree_has_the_empty_root(
    client: TestClient[Any, Any],
) -> None:
    assert (await add(client, body(0, proof(5, 10), note(10))))[0] == 422
    wrong_empty = SIGNER.sign_checkpoint(Checkpoint(ORIGIN, 0, hashlib.sha256(b"x").digest()))
    assert (await add(client, body(0, [], wrong_empty)))[0] == 422
    assert (await add(client, body(0, [], note(0))))[0] == 200


async def test_signatures_that_do_not_verify_are_403(client: TestClient[Any, Any]) -> None:
    stranger = CheckpointSigner("log.example", ec.generate_private_key(ec.SECP256R1()))
    status, _, message = await add(client, body(0, [], note(5, signer=stranger)))
    assert status == 403
    assert "no signature by a trusted key" in message
    good = note(5)
    text, _, line = good.partition("\n\n")
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[-3] ^= 0x40
    forged = f"{text}\n\n\u2014 log.example {base64.b64encode(raw).decode()}\n"
    status, _, message = await add(client, body(0, [], forged))
    assert status == 403
    assert "does not verify" in message
    # A signed note for another tree under the real signature.
    tampered = good.replace("\n5\n", "\n6\n", 1)
    assert (await add(client, body(0, [], tampered)))[0] == 403
    # The stranger's signature beside the log's is ignored.
    both = good + note(5, signer=stranger).partition("\n\n")[2]
    assert (await add(client, body(0, [], both)))[0] == 200


async def test_an_unknown_origin_is_404(client: TestClient[Any, Any]) -> None:
    status, _, message = await add(client, body(0, [], note(5, origin="other.example - 1")))
    assert status == 404
    assert "unknown log origin" in message


@pytest.mark.parametrize(
    "text",
    [
        "",
        b"\xff\xfe",
        "old 0\n",
        "old -1\n\n" + note(5),
        "old 01\n\n" + note(5),
        "old  1\n\n" + note(5),
        "new 1\n\n" + note(5),
        "old 6\n\n" + note(5),
        "old 1\nnot base64!\n\n" + note(5),
        "old 1\nAAAA\n\n" + note(5),
        "old 1\n" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + "\n" + note(5),
        "old 0\n\n" + note(5).replace("\n\n", "\n"),
        "old 0\n\n" + note(5).replace(f"{ORIGIN}\n5\n", f"{ORIGIN}\n05\n"),
        "old 0\n\n" + note(5).replace(f"{ORIGIN}\n5\n", f"{ORIGIN}\n\u0665\n"),
        "old 0\n\n" + note(5).replace(f"{ORIGIN}\n", f"{ORIGIN}\x01\n"),
        "old 0\n\nlog.example - 4242\n5\n\n\u2014 log.example AAAAAAA=\n",
    ],
)
async def test_malformed_requests_are_400(client: TestClient[Any, Any], text: str | bytes) -> None:
    status, _, message = await add(client, text)
    assert status == 400, message


async def test_racing_adds_from_the_same_size_advance_exactly_once(
    aiohttp_client: AiohttpClient, db: Database, cosigner: Cosigner
) -> None:
    client = await make_client(aiohttp_client, WitnessStore(db), cosigner)
    assert (await add(client, request(0, 10)))[0] == 200
    # Two requests that both read size 10 before either writes: one wins, the other is told
    # the winner's size, and the stored state is the winner's (never rolled back to 20).
    racing = Racing(db, 2)
    client = await make_client(aiohttp_client, racing, cosigner)
    replies = await asyncio.gather(add(client, request(10, 20)), add(client, request(10, 250)))
    statuses = sorted(status for status, _, _ in replies)
    assert statuses == [200, 409], replies
    winner = 20 if replies[0][0] == 200 else 250
    loser_reply = next(r for r in replies if r[0] == 409)
    assert loser_reply[1:] == ("text/x.tlog.size", f"{winner}\n")
    state = await WitnessStore(db).get(ORIGIN)
    assert state is not None
    assert (state.size, state.root) == (winner, merkle.root(LEAVES[:winner]))


async def test_many_concurrent_adds_never_move_the_witness_backwards(
    client: TestClient[Any, Any], db: Database
) -> None:
    assert (await add(client, request(0, 1)))[0] == 200
    sizes = list(range(2, 300, 7))
    replies = await asyncio.gather(*(add(client, request(1, n)) for n in sizes))
    won = [n for n, (status, _, _) in zip(sizes, replies, strict=True) if status == 200]
    assert len(won) == 1, replies
    assert all(r[0] in (200, 409) for r in replies)
    state = await WitnessStore(db).get(ORIGIN)
    assert state is not None
    assert state.size == won[0]


async def test_state_survives_a_restart_and_a_log_can_be_removed(
    aiohttp_client: AiohttpClient, db: Database, cosigner: Cosigner
) -> None:
    client = await make_client(aiohttp_client, WitnessStore(db), cosigner)
    assert (await add(client, request(0, 40)))[0] == 200
    client = await make_client(aiohttp_client, WitnessStore(db), cosigner)
    assert (await add(client, request(0, 50)))[1:] == ("text/x.tlog.size", "40\n")
    witness = Witness(WitnessStore(db), cosigner)
    await witness.configure({})
    client = await aiohttp_client(create_witness_app(witness, clock=lambda: NOW))
    assert (await add(client, request(40, 50)))[0] == 404
    await witness.configure({ORIGIN: (VKEY,)})
    assert (await add(client, request(40, 50)))[0] == 200


async def test_a_log_signing_with_ed25519_is_witnessed_too(
    aiohttp_client: AiohttpClient, db: Database, cosigner: Cosigner
) -> None:
    """A C2SP log with an Ed25519 key (signed-note type 0x01), signed here from the spec."""
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    key_id = hashlib.sha256(b"ed.example/log\n\x01" + public).digest()[:4]
    material = base64.b64encode(bytes([0x01]) + public).decode()
    vkey = f"ed.example/log+{key_id.hex()}+{material}"
    store = WitnessStore(db)
    await store.create()
    witness = Witness(store, cosigner)
    await witness.configure({"ed.example/log": (vkey,)})
    client = await aiohttp_client(create_witness_app(witness, clock=lambda: NOW))
    text = Checkpoint("ed.example/log", 3, merkle.root(LEAVES[:3])).to_text()
    signature = base64.b64encode(key_id + key.sign(text.encode())).decode()
    signed = f"{text}\n\u2014 ed.example/log {signature}\n"
    status, _, line = await add(client, body(0, [], signed))
    assert status == 200, line
    assert check_cosignature(cosigner.vkey, text, line) == NOW
