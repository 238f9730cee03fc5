"""A real sigstead log asking real witnesses (``services.witness`` apps over HTTP) to cosign its
checkpoints, and serving the newest quorum-cosigned one."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Handler
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from services.app import Settings, check, create_app
from services.db import Database, sqlite_url
from services.errors import OperatorError
from services.keys import load_private_key
from services.log.rekor.api import REKOR_LOG
from services.log.rekor.api_v2 import REKOR_V2_LOG
from services.log.sequencer import Sequencer
from services.log.witnessing import Policy, PolicyError, Witnessing, WitnessingStore
from services.trust.material import REKOR_V2_KEY_FILE
from services.witness.app import create_witness_app
from services.witness.note import Cosigner, SignedNote, Verifier, ecdsa_vkey
from services.witness.state import WitnessStore
from services.witness.witness import Witness
from tests.services.log.rekor.test_api import Signer
from tests.services.log.rekor.test_api_v2 import _python_request
from tests.services.test_cli import refused, sigstead
from tests.services.witness.test_app import NOW, AiohttpClient
from tests.services.witness.test_go import cosigcheck, run  # noqa: F401 -- a fixture
from tests.services.witness.test_note import check_cosignature

HOST = "log.example"


@dataclass
class RunningWitness:
    witness: Witness
    client: TestClient[Any, Any]
    statuses: list[int]

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    @property
    def vkey(self) -> str:
        return self.witness.cosigner.vkey


@dataclass
class Log:
    client: TestClient[Any, Any]
    db: Database
    sequencer: Sequencer
    v2: Sequencer
    vkey: str
    v2_vkey: str


def _log_vkeys(data: Path) -> tuple[str, str]:
    keys = []
    for name in ("rekor.pem", REKOR_V2_KEY_FILE):
        key = load_private_key(data / "keys" / name)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        keys.append(ecdsa_vkey(HOST, key.public_key()))
    return keys[0], keys[1]


async def _start_log(
    aiohttp_client: AiohttpClient, db: Database, data: Path, policy: Path | None = None
) -> Log:
    settings = Settings(
        data_dir=data,
        public_url=f"http://{HOST}:3000",
        witness_policy=policy,
        witness_interval=0.05,
    )
    client = await aiohttp_client(create_app(settings, database=db, components=("log",)))
    vkey, v2_vkey = _log_vkeys(data)
    return Log(
        client,
        db,
        client.app[REKOR_LOG].sequencer,
        client.app[REKOR_V2_LOG].sequencer,
        vkey,
        v2_vkey,
    )


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def _witness(
    aiohttp_client: AiohttpClient, stack: AsyncExitStack, tmp_path: Path, name: str, log: Log
) -> RunningWitness:
    db = Database(sqlite_url(tmp_path / f"{name.replace('/', '_')}.db"))
    stack.push_async_callback(db.dispose)
    witness = Witness(WitnessStore(db), Cosigner(name, ed25519.Ed25519PrivateKey.generate()))
    await witness.store.create()
    await witness.configure({log.sequencer.origin: (log.vkey,), log.v2.origin: (log.v2_vkey,)})
    app = create_witness_app(witness, clock=lambda: NOW)
    statuses: list[int] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        statuses.append(response.status)
        return response

    app.middlewares.append(record)
    client = await aiohttp_client(app)
    return RunningWitness(witness, client, statuses)


def _policy(witnesses: dict[str, str], quorum: str) -> Policy:
    lines = [f"witness {n} {spec}" for n, spec in witnesses.items()]
    return Policy.parse("\n".join([*lines, f"group g {quorum} {' '.join(witnesses)}", "quorum g"]))


def _pushing(
    log: Log,
    db: Database,
    policy: Policy,
    session: aiohttp.ClientSession,
    timeout: float = 10,
    sequencer: Sequencer | None = None,
) -> Witnessing:
    """A log's witnessing task as the app runs it (default: Rekor v1's), on its own store."""
    seq = sequencer or log.sequencer
    return Witnessing(
        log="test",
        tree_id=seq.tree_id,
        head=seq.latest_head,
        proofs=seq.proofs,
        store=WitnessingStore(db),
        policy=policy,
        session=session,
        timeout=timeout,
    )


def _closed_url() -> str:
    """A localhost URL where nothing listens: a witness that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def _add(log: Log, count: int, start: int = 0) -> None:
    signer = Signer()
    for i in range(start, start + count):
        body = signer.hashedrekord(b"entry %d" % i)
        async with log.client.post("/api/v1/log/entries", json=body) as reply:
            assert reply.status == 201, await reply.text()


def _check_witnessed(note: str, log_vkey: str, witnesses: list[RunningWitness], size: int) -> None:
    """The served note verifies under the log's key and carries each witness's cosignature."""
    parsed = SignedNote.parse(note)
    assert parsed.text.split("\n")[1] == str(size)
    parsed.verify((Verifier.parse(log_vkey),))
    lines = note.partition("\n\n")[2].splitlines()
    for w in witnesses:
        name = w.witness.cosigner.name
        (line,) = [x for x in lines if x.split(" ")[1] == name]
        assert check_cosignature(w.vkey, parsed.text, line + "\n") == NOW


async def test_two_of_two_witnesses_cosign_and_the_log_serves_it(
    aiohttp_client: AiohttpClient,
    db: Database,
    tmp_path: Path,
    stack: AsyncExitStack,
    cosigcheck: Path,  # noqa: F811 -- the imported fixture
) -> None:
    log = await _start_log(aiohttp_client, db, tmp_path / "data")
    w1 = await _witness(aiohttp_client, stack, tmp_path, "witness.example/w1", log)
    w2 = await _witness(aiohttp_client, stack, tmp_path, "witness.example/w2", log)
    policy = _policy({"w1": f"{w1.vkey} {w1.url}", "w2": f"{w2.vkey} {w2.url}"}, "2")
    async with log.client.get("/api/v1/log/checkpoint/witnessed") as reply:
        assert reply.status == 404
        assert (await reply.json())["code"] == 404
    async with aiohttp.ClientSession() as session:
        store = WitnessingStore(db)
        for seq, vkey, path in (
            (log.sequencer, log.vkey, "/api/v1/log/checkpoint/witnessed"),
            (log.v2, log.v2_vkey, "/api/v2/checkpoint.witnessed"),
        ):
            witnessing = Witnessing(
                log="test",
                tree_id=seq.tree_id,
                head=seq.latest_head,
                proofs=seq.proofs,
                store=store,
                policy=policy,
                session=session,
            )
            await witnessing.load()
            first = await witnessing.step(NOW)
            assert first is not None
            assert first.quorum, first.failures
            assert await witnessing.step(NOW) is None  # nothing new
            await _add(log, 5)
            if seq is log.v2:
                await _add_v2(log, 3)
            second = await witnessing.step(NOW)
            assert second is not None
            assert second.quorum, second.failures
            assert second.size > first.size
            async with log.client.get(path) as reply:
                assert reply.status == 200
                served = await reply.text()
            _check_witnessed(served, vkey, [w1, w2], second.size)
            # And as Go log clients check it (golang.org/x/mod/sumdb/note with
            # transparency-dev/formats verifiers), under the log key and each witness's.
            note_file = tmp_path / "witnessed"
            note_file.write_text(served)
            for w in (w1, w2):
                status, out, err = await run(cosigcheck, vkey, w.vkey, str(note_file))
                assert status == 0, err
                assert out.strip() == str(NOW)
            assert witnessing.size_of("w1") == witnessing.size_of("w2") == second.size
    # The existing checkpoint replies are untouched: no cosignature lines.
    async with log.client.get("/api/v2/checkpoint") as reply:
        # The witness's key name, not "w1": that can occur in a base64 signature by chance.
        assert "witness.example/w1" not in await reply.text()


async def _add_v2(log: Log, count: int) -> None:
    signer = Signer()
    for i in range(count):
        body = _python_request(signer, b"v2 entry %d" % i)
        async with log.client.post("/api/v2/log/entries", json=body) as reply:
            assert reply.status == 201, await reply.text()


async def test_one_of_two_fails_open_and_two_of_two_lags(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path, stack: AsyncExitStack
) -> None:
    log = await _start_log(aiohttp_client, db, tmp_path / "data")
    w1 = await _witness(aiohttp_client, stack, tmp_path, "witness.example/w1", log)
    down = _closed_url()
    # w2 is a witness with its own key that is down.
    other = Cosigner("witness.example/w2", ed25519.Ed25519PrivateKey.generate())
    specs = {"w1": f"{w1.vkey} {w1.url}", "w2": f"{other.vkey} {down}"}
    async with aiohttp.ClientSession() as session:
        store = WitnessingStore(db)
        seq = log.sequencer

        def make(quorum: str) -> Witnessing:
            return Witnessing(
                log="test",
                tree_id=seq.tree_id,
                head=seq.latest_head,
                proofs=seq.proofs,
                store=store,
                policy=_policy(specs, quorum),
                session=session,
                timeout=2,
            )

        any_one = make("any")
        await any_one.load()
        result = await any_one.step(NOW)
        assert result is not None
        assert result.quorum
        assert result.cosigned == ("w1",)
        assert "w2" in result.failures
        witnessed = result.size

        both = make("all")
        await both.load()
        await _add(log, 4)  # the log keeps writing with a witness down
        result = await both.step(NOW)
        assert result is not None
        assert not result.quorum
        assert result.witnessed_size == witnessed
        assert seq.head.size == witnessed + 4
        async with log.client.get("/api/v1/log/checkpoint/witnessed") as reply:
            note = await reply.text()
        assert note.split("\n")[1] == str(witnessed)  # lags the log


async def test_replicas_do_not_ask_the_witnesses_twice_for_one_checkpoint(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path, stack: AsyncExitStack
) -> None:
    """Two log replicas on one database each run the witnessing loop: once one has had a head
    cosigned to the quorum, the other does not ask the witnesses for it again (nor for an
    older one); for a newer head it asks, and the witness's 409 tells it the size it holds."""
    log = await _start_log(aiohttp_client, db, tmp_path / "data")
    w1 = await _witness(aiohttp_client, stack, tmp_path, "witness.example/w1", log)
    async with aiohttp.ClientSession() as session:
        policy = _policy({"w1": f"{w1.vkey} {w1.url}"}, "all")
        a, b = _pushing(log, db, policy, session), _pushing(log, db, policy, session)
        await a.load()
        await b.load()
        first = await a.step(NOW)
        assert first is not None
        assert first.quorum
        asked = len(w1.statuses)
        assert await b.step(NOW) is None  # a had it cosigned: b leaves the witness alone
        assert len(w1.statuses) == asked
        assert b.witnessed_size == first.size
        await _add(log, 3)
        later = await b.step(NOW)
        assert later is not None
        assert later.quorum
        assert later.size == first.size + 3


async def test_a_frozen_logs_final_checkpoint_is_cosigned_too(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path, stack: AsyncExitStack
) -> None:
    """Freezing re-signs the head at the same size: the witnesses are asked to cosign the
    final checkpoint, and the witnessed one becomes it (and stays it)."""
    log = await _start_log(aiohttp_client, db, tmp_path / "data")
    w1 = await _witness(aiohttp_client, stack, tmp_path, "witness.example/w1", log)
    async with aiohttp.ClientSession() as session:
        policy = _policy({"w1": f"{w1.vkey} {w1.url}"}, "all")
        seq = log.v2
        pushing = _pushing(log, db, policy, session, sequencer=seq)
        await pushing.load()
        first = await pushing.step(NOW)
        assert first is not None
        assert first.quorum
        assert await pushing.step(NOW) is None
        final = await seq.freeze()
        assert final.size == first.size
        again = await pushing.step(NOW)
        assert again is not None
        assert again.quorum
        stored = await WitnessingStore(db).witnessed(seq.tree_id)
        assert stored is not None
        assert stored[1].startswith(final.checkpoint)
        _check_witnessed(stored[1], log.v2_vkey, [w1], final.size)
        # An older round for that size, finishing late, does not replace it.
        await WitnessingStore(db).save_witnessed(seq.tree_id, final.size, "a late round")
        assert await WitnessingStore(db).witnessed(seq.tree_id) == stored
        assert await pushing.step(NOW) is None


async def test_a_refusing_witness_is_reported_and_409_is_resolved(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path, stack: AsyncExitStack
) -> None:
    log = await _start_log(aiohttp_client, db, tmp_path / "data")
    await _add(log, 3)
    good = await _witness(aiohttp_client, stack, tmp_path, "witness.example/good", log)
    bad = await _witness(aiohttp_client, stack, tmp_path, "witness.example/bad", log)
    seq = log.sequencer
    head = seq.head
    # The good witness already cosigned size 2 (fed by someone else): our "old 0" meets a 409
    # and is retried with the proof from 2. The bad one claims another root at size 2: 422.
    root2 = await seq.proofs.root(2)
    await good.witness.store.advance(seq.origin, (0, _empty()), (2, root2), "x", NOW)
    await bad.witness.store.advance(seq.origin, (0, _empty()), (2, b"\x07" * 32), "x", NOW)
    policy = _policy(
        {"good": f"{good.vkey} {good.url}", "bad": f"{bad.vkey} {bad.url}"},
        "1",
    )
    async with aiohttp.ClientSession() as session:
        witnessing = _pushing(log, db, policy, session)
        await witnessing.load()
        result = await witnessing.step(NOW)
    assert result is not None
    assert result.cosigned == ("good",)
    assert "HTTP 422" in result.failures["bad"]
    assert good.statuses == [409, 200]
    assert bad.statuses == [409, 422]
    assert result.quorum
    assert witnessing.size_of("good") == head.size
    assert witnessing.size_of("bad") == 0


async def test_a_cosignature_from_the_future_is_refused(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path, stack: AsyncExitStack
) -> None:
    log = await _start_log(aiohttp_client, db, tmp_path / "data")
    w1 = await _witness(aiohttp_client, stack, tmp_path, "witness.example/w1", log)
    async with aiohttp.ClientSession() as session:
        witnessing = _pushing(log, db, _policy({"w1": f"{w1.vkey} {w1.url}"}, "1"), session)
        result = await witnessing.step(NOW - 3600)
    assert result is not None
    assert not result.quorum
    assert "dated" in result.failures["w1"]


def _empty() -> bytes:
    from services.log.merkle import EMPTY_ROOT

    return EMPTY_ROOT


async def test_the_app_witnesses_in_the_background_and_resumes_after_a_restart(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path, stack: AsyncExitStack
) -> None:
    data = tmp_path / "data"
    # A first start creates the log keys the witnesses must trust.
    bootstrap = await _start_log(aiohttp_client, db, data)
    w1 = await _witness(aiohttp_client, stack, tmp_path, "witness.example/w1", bootstrap)
    w2 = await _witness(aiohttp_client, stack, tmp_path, "witness.example/w2", bootstrap)
    await bootstrap.client.close()
    policy = tmp_path / "policy"
    policy.write_text(
        f"# two witnesses, both needed\nwitness w1 {w1.vkey} {w1.url}\n"
        f"witness w2 {w2.vkey} {w2.url}/\ngroup both all w1 w2\nquorum both\n"
    )

    async def witnessed(log: Log, path: str, at_least: int) -> str:
        for _ in range(200):
            async with log.client.get(path) as reply:
                if reply.status == 200:
                    note = await reply.text()
                    if int(note.split("\n")[1]) >= at_least:
                        return note
            await asyncio.sleep(0.05)
        raise AssertionError(f"{path} never reached size {at_least}")

    log = await _start_log(aiohttp_client, db, data, policy)
    note = await witnessed(log, "/api/v1/log/checkpoint/witnessed", 1)
    _check_witnessed(note, log.vkey, [w1, w2], log.sequencer.head.size)
    note = await witnessed(log, "/api/v2/checkpoint.witnessed", 1)
    _check_witnessed(note, log.v2_vkey, [w1, w2], log.v2.head.size)
    async with log.client.get("/metrics") as reply:
        assert 'sigstead_log_witnessed_lag_entries{log="rekor-v2"} 0.0' in await reply.text()
    await _add(log, 2)
    size = log.sequencer.head.size
    await witnessed(log, "/api/v1/log/checkpoint/witnessed", size)
    await log.client.close()

    sizes = await WitnessingStore(db).sizes(log.sequencer.tree_id)
    assert sizes == {w1.vkey: size, w2.vkey: size}
    for w in (w1, w2):
        w.statuses.clear()
    log = await _start_log(aiohttp_client, db, data, policy)
    await _add(log, 3, start=2)
    note = await witnessed(log, "/api/v1/log/checkpoint/witnessed", size + 3)
    _check_witnessed(note, log.vkey, [w1, w2], size + 3)
    for w in (w1, w2):
        state = await w.witness.store.get(log.sequencer.origin)
        assert state is not None
        assert state.size == size + 3
        # Resumed from the remembered size: never an "old 0" answered 409.
        assert w.statuses
        assert set(w.statuses) == {200}


def _vkey() -> str:
    return Cosigner("witness.example/w1", ed25519.Ed25519PrivateKey.generate()).vkey


def test_policy_groups_and_quorum() -> None:
    keys = [_vkey() for _ in range(3)]
    policy = Policy.parse(
        "log 0123 http://ignored\n"
        f"witness a {keys[0]} http://a.example\n"
        f"witness b {keys[1]} http://b.example  # trailing comment\n"
        f"witness c {keys[2]} https://c.example\n"
        "group ab any a b\n"
        "group top 2 ab c\n"
        "quorum top\n"
    )
    assert not policy.satisfied(frozenset({"a", "b"}))
    assert policy.satisfied(frozenset({"a", "c"}))
    assert not policy.satisfied(frozenset({"c"}))
    none = Policy.parse(f"witness a {keys[0]} http://a.example\nquorum none\n")
    assert none.satisfied(frozenset())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("witness a {k} http://a\nwitness a {k} http://b\nquorum a", ":2: 'a' is already"),
        ("witness a {k}\nquorum a", ":1: want 'witness NAME VKEY URL'"),
        ("witness a " + "ab" * 32 + " http://a\nquorum a", ":1: witness a: a raw hex key"),
        ("witness a x+0000000+AAAA http://a\nquorum a", ":1: witness a: vkey"),
        ("witness a {k} ftp://a\nquorum a", "is not http(s)"),
        ("witness a {k} http://a\ngroup g 2 a\nquorum g", ":2: group g: threshold '2'"),
        ("witness a {k} http://a\ngroup g any a b\nquorum g", ":2: group g: 'b' is not"),
        ("witness a {k} http://a\nquorum b", ":2: quorum 'b' is not defined"),
        ("witness a {k} http://a\nquorum a\nquorum a", ":3: a second quorum"),
        ("witness a {k} http://a", "no 'quorum"),
        ("quorum none", ": no witness"),
        ("witnes a {k} http://a\nquorum a", ":1: unknown keyword 'witnes'"),
    ],
)
def test_policy_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.parse(text.replace("{k}", _vkey()), "policy.txt")
    assert message in str(info.value)
    assert str(info.value).startswith("policy.txt")


def test_a_bad_policy_file_stops_the_start(tmp_path: Path) -> None:
    policy = tmp_path / "policy"
    policy.write_text("witness a nope http://a\nquorum a\n")
    settings = Settings(data_dir=tmp_path, public_url="http://log.example", witness_policy=policy)
    with pytest.raises(OperatorError, match=r"policy:1: witness a: vkey"):
        check(settings, ("log",))
    with pytest.raises(OperatorError, match="is for the log"):
        check(settings, ("tsa",))


async def test_the_store_never_moves_backwards(db: Database) -> None:
    store = WitnessingStore(db)
    await store.save_size(7, "w+1", 10)
    await store.save_size(7, "w+1", 4)
    await store.save_size(7, "w+2", 3)
    await store.save_size(8, "w+1", 1)
    assert await store.sizes(7) == {"w+1": 10, "w+2": 3}
    assert await store.witnessed(7) is None
    await store.save_witnessed(7, 10, "ten")
    await store.save_witnessed(7, 4, "four")
    assert await store.witnessed(7) == (10, "ten")
    await store.save_witnessed(7, 11, "eleven")
    assert await store.witnessed(7) == (11, "eleven")


def test_up_refuses_a_bad_policy_naming_the_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy"
    policy.write_text("witness a {k} http://a\ngroup g 3 a\nquorum g\n".replace("{k}", _vkey()))
    done = sigstead("up", "--data-dir", str(tmp_path / "data"), "--witness-policy", str(policy))
    refused(done, f"{policy}:2: group g: threshold '3' is not 'all', 'any' or a number from 1 to 1")
    assert not (tmp_path / "data").exists()
