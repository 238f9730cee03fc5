"""``sigstead monitor`` against a real log (test_fsck's fixture: 301 entries in each of Rekor v1
and v2, served by a real app), on SQLite and PostgreSQL: matches by identity, issuer,
extension, key and digest; resuming from the state file; alarms for a history that does not
extend the verified one and for a log that shrank; the command's exit codes and webhook."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from services.app import Settings, create_app
from services.audit.fsck import Divergence
from services.audit.monitor import Event, Monitor, WatchList, load_watchlist
from services.audit.remote import ct_certificate, remote_logs
from services.db import Database
from services.errors import OperatorError
from services.log.schema import search_keys
from services.trust import documents
from services.trust.material import gather
from tests.services.audit.test_fsck import AiohttpClient
from tests.services.audit.test_remote import _trusted_root
from tests.services.ca.oidc_issuer import Issuer, IssuerServer
from tests.services.ca.test_api import issue
from tests.services.log.rekor.test_api import Signer
from tests.services.log.rekor.test_api_v2 import _python_request

ISSUER = "https://issuer.example"
REPO = "https://git.example/acme/app"


def _utf8(text: str) -> bytes:
    return bytes((0x0C, len(text))) + text.encode()


def fulcio_signer(email: str) -> Signer:
    """A certificate with Fulcio's issuer (1.8) and source repository (1.12) extensions."""
    return Signer(
        email,
        extensions=[
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), _utf8(value))
            for oid, value in (("1.3.6.1.4.1.57264.1.8", ISSUER), ("1.3.6.1.4.1.57264.1.12", REPO))
        ],
        not_before=datetime.datetime.now(datetime.UTC),
    )


@pytest.fixture
async def served(
    aiohttp_client: AiohttpClient, db: Database, log: tuple[Path, int, int]
) -> AsyncIterator[tuple[TestClient[Any, Any], Path, int, int]]:
    data, v1, v2 = log
    settings = Settings(data_dir=data, public_url="http://log.example:3000")
    client = await aiohttp_client(create_app(settings, database=db, components=("log",)))
    yield client, data, v1, v2
    await client.close()


def _monitor(
    client: TestClient[Any, Any], data: Path, watch: WatchList
) -> tuple[Monitor, list[Event]]:
    logs = remote_logs(_trusted_root(data, "http://log.example:3000"), str(client.make_url("")))
    events: list[Event] = []
    return Monitor(logs, watch, data / "monitor.json", events.append), events


async def _pass(
    monitor_and_events: tuple[Monitor, list[Event]],
) -> tuple[tuple[int, int, int], list[Event]]:
    monitor, events = monitor_and_events
    events.clear()
    async with aiohttp.ClientSession() as session:
        counts = await monitor.check(session)
    return counts, list(events)


async def _key(db: Database, tree: int, index: int, prefix: str) -> str:
    return str(
        await db.read(
            lambda c: c.execute(
                select(search_keys.c.key).where(
                    search_keys.c.tree_id == tree,
                    search_keys.c.idx == index,
                    search_keys.c.key.startswith(prefix),
                )
            ).scalar_one()
        )
    )


async def test_identities_keys_and_digests_are_reported_exactly(
    db: Database, served: tuple[TestClient[Any, Any], Path, int, int], tmp_path: Path
) -> None:
    client, data, v1, v2 = served
    v2_key = (await _key(db, v2, 1, "pubkey:sha256:")).removeprefix("pubkey:sha256:")
    digest = await _key(db, v1, 7, "sha256:")
    config = tmp_path / "watch.yaml"
    config.write_text(
        f"identities:\n  - subject: dev@example.com\nkeys: [{v2_key}]\ndigests: ['{digest}']\n"
    )
    monitor = _monitor(client, data, load_watchlist(config))
    (matches, alarms, errors), events = await _pass(monitor)
    assert (alarms, errors) == (0, 0), events
    by_rule: dict[str, list[Event]] = {}
    for event in events:
        by_rule.setdefault(event["rule"], []).append(event)
    # Every v1 entry but the genesis is by dev@example.com (hashedrekord and dsse alike).
    identity = by_rule["identity"]
    assert sorted(e["index"] for e in identity) == list(range(1, 301))
    assert {e["log"].split()[0] for e in identity} == {"rekor-v1"}
    # The v2 key signed every v2 entry but the genesis, hashedrekord and dsse.
    assert sorted(e["index"] for e in by_rule["key"]) == list(range(1, 301))
    assert [(e["index"], e["digest"]) for e in by_rule["digest"]] == [(7, digest)]
    assert matches == len(events) == 601

    # A restart resumes: nothing is read again; a new entry is the only one read.
    again = _monitor(client, data, load_watchlist(config))
    assert await _pass(again) == ((0, 0, 0), [])
    signer = fulcio_signer("carol@example.com")
    reply = await client.post("/api/v1/log/entries", json=signer.hashedrekord(b"new"))
    assert reply.status == 201
    watch = tmp_path / "issuer.yaml"
    watch.write_text(
        f"identities:\n  - subject_regex: '.*@example\\.com'\n    issuer: {ISSUER}\n"
        f"extensions:\n  - oid: 1.3.6.1.4.1.57264.1.12\n    value_regex: '{REPO}'\n"
    )
    (matches, alarms, _), events = await _pass(_monitor(client, data, load_watchlist(watch)))
    assert alarms == 0
    assert [(e["rule"], e["index"]) for e in events] == [("identity", 301), ("extension", 301)]
    assert events[0]["subject"] == "carol@example.com"
    assert events[0]["issuer"] == ISSUER
    assert events[1]["value"] == REPO


async def test_from_now_starts_at_the_head_and_reports_only_what_follows(
    served: tuple[TestClient[Any, Any], Path, int, int], tmp_path: Path
) -> None:
    """``--from-now``: the 301 entries of each log are not read; the state starts at each head
    (Rekor v1's from its last entry's inclusion proof, v2's from its tiles, both checked
    against the signed root), and the next pass reports exactly the entries appended since."""
    client, data, _, _ = served
    config = tmp_path / "watch.yaml"
    config.write_text("identities:\n  - subject_regex: '.*'\n")
    logs = remote_logs(_trusted_root(data, "http://log.example:3000"), str(client.make_url("")))
    events: list[Event] = []
    monitor = Monitor(
        logs, load_watchlist(config), tmp_path / "state.json", events.append, from_now=True
    )
    async with aiohttp.ClientSession() as session:
        assert await monitor.check(session) == (0, 0, 0), events
        assert {s.size for s in monitor.state.values()} == {301}  # genesis and 300 each
        signer = Signer("late@example.com")
        for kind in ("rekor-v1", "rekor-v2"):
            assert await _add(client, kind, signer, b"after the start") == 201
        assert await monitor.check(session) == (2, 0, 0), events
    assert sorted((e["log"].split()[0], e["index"], e["subject"]) for e in events) == [
        ("rekor-v1", 301, "late@example.com"),
        ("rekor-v2", 301, "late@example.com"),
    ]


async def test_a_history_that_does_not_extend_the_verified_one_is_an_alarm(
    served: tuple[TestClient[Any, Any], Path, int, int],
) -> None:
    client, data, _, _ = served
    assert (await _pass(_monitor(client, data, WatchList())))[0] == (0, 0, 0)
    state_file = data / "monitor.json"
    state = json.loads(state_file.read_text())
    (v1_name,) = [name for name in state["logs"] if name.startswith("rekor-v1")]
    # As if the monitor had verified another history before: a fork it must not accept.
    verified = state["logs"][v1_name]
    forked = dict(verified, hashes=["07" * 32] * len(verified["hashes"]))
    state_file.write_text(json.dumps({"version": 1, "logs": {v1_name: forked}}))
    (_, alarms, _), events = await _pass(_monitor(client, data, WatchList()))
    assert alarms == 1
    (alarm,) = [e for e in events if e["type"] == "alarm"]
    assert "does not extend what it showed before" in alarm["message"]

    # And one that shrank: the monitor verified size 512 (hashes made up) before.
    shrunk = dict(state["logs"][v1_name], size=512, hashes=["07" * 32])
    state_file.write_text(json.dumps({"version": 1, "logs": {v1_name: shrunk}}))
    (_, alarms, _), events = await _pass(_monitor(client, data, WatchList()))
    assert alarms == 1
    assert "the log shrank" in events[0]["message"]


def test_a_watch_list_that_cannot_match_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "watch.yaml"
    for text, message in (
        ("identities: [{issuer: x}]", "needs subject"),
        ("identities: [{subject_regex: '('}]", "subject_regex"),
        ("extensions: [{oid: nope, value: x}]", "needs an oid"),
        ("digests: [abcd]", "needs its algorithm"),
        ("[1, 2]", "want a mapping"),
    ):
        config.write_text(text)
        with pytest.raises(OperatorError, match=message):
            load_watchlist(config)


async def test_the_command_exits_by_what_it_found_and_calls_the_webhook(
    aiohttp_client: AiohttpClient,
    served: tuple[TestClient[Any, Any], Path, int, int],
    tmp_path: Path,
) -> None:
    client, data, _, _ = served
    received: list[Any] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    sink = web.Application()
    sink.router.add_post("/hook", hook)
    webhook = await aiohttp_client(sink)
    trusted_root = tmp_path / "trusted_root.json"
    trusted_root.write_text(json.dumps(_trusted_root(data, "http://log.example:3000")))

    async def run(config: str, state: str) -> tuple[int, list[Event]]:
        (tmp_path / "watch.yaml").write_text(config)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "monitor", "--once",
            "--url", str(client.make_url("")), "--trusted-root", str(trusted_root),
            "--config", str(tmp_path / "watch.yaml"), "--state", str(tmp_path / state),
            "--webhook", str(webhook.make_url("/hook")),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode is not None, err
        return process.returncode, [json.loads(line) for line in out.decode().splitlines()]

    assert await run("{}", "a.json") == (0, [])
    code, events = await run("identities: [{subject: dev@example.com}]", "b.json")
    assert code == 1
    assert len(events) == 300
    assert received == events
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600


def _entry(kind: str, signer: Signer, artifact: bytes) -> tuple[str, dict[str, Any]]:
    if kind == "rekor-v1":
        return "/api/v1/log/entries", signer.hashedrekord(artifact)
    return "/api/v2/log/entries", _python_request(signer, artifact)


@pytest.mark.parametrize("kind", ["rekor-v1", "rekor-v2"])
async def test_a_log_showing_two_histories_is_caught_by_comparing_views(
    aiohttp_client: AiohttpClient, tmp_path: Path, kind: str
) -> None:
    """Split view: one deployment forked (its data directory copied, then each copy written
    differently) and served at two URLs with the same keys. A monitor of one, told the other is
    a peer view, raises an alarm; against an honest peer (the same database) it stays quiet,
    also when the peer is ahead and the proof has to come from it (Rekor v2: from its tiles)."""
    signer = Signer()
    data = tmp_path / "a"
    settings = Settings(data_dir=data, public_url="http://log.example:3000")
    client = await aiohttp_client(create_app(settings, components=("log",)))
    for i in range(5):
        assert await _add(client, kind, signer, b"%d" % i) == 201
    await client.close()
    shutil.copytree(data, tmp_path / "b")

    async def serve(directory: Path, artifacts: list[bytes]) -> TestClient[Any, Any]:
        app = create_app(
            Settings(data_dir=directory, public_url="http://log.example:3000"),
            components=("log",),
        )
        served = await aiohttp_client(app)
        for artifact in artifacts:
            assert await _add(served, kind, signer, artifact) == 201
        return served

    view_a = await serve(data, [b"only in a"])
    # B larger than A: the proof must come from B, and cannot verify.
    view_b = await serve(tmp_path / "b", [b"only in b", b"and this"])
    honest = await serve(data, [])  # a second process on A's database: the same history
    logs = remote_logs(_trusted_root(data, "http://log.example:3000"), str(view_a.make_url("")))
    (log,) = [log for log in logs if log.kind == kind]
    for peer, alarms in ((honest, 0), (view_b, 1)):
        events: list[Event] = []
        state = tmp_path / f"state-{alarms}.json"
        peers = [str(peer.make_url(""))]
        monitor = Monitor([log], WatchList(), state, events.append, peers=peers)
        async with aiohttp.ClientSession() as session:
            assert (await monitor.check(session))[1] == alarms, events
    assert events[0]["type"] == "alarm"
    assert "split view" in events[0]["message"]
    assert "not one history" in events[0]["message"]

    # The honest peer ahead of what this monitor verified: a proof from the peer, which holds.
    events = []
    monitor = Monitor([log], WatchList(), tmp_path / "state-0.json", events.append)
    for i in range(300):  # past a full tile, so the proof spans full and partial tiles
        assert await _add(honest, kind, signer, b"later %d" % i) == 201
    name = f"{kind} {log.url}"
    async with aiohttp.ClientSession() as session:
        await monitor._compare(session, log, str(honest.make_url("")), monitor.state[name])
        with pytest.raises(Divergence, match="not one history"):
            await monitor._compare(session, log, str(view_b.make_url("")), monitor.state[name])


async def _add(client: TestClient[Any, Any], kind: str, signer: Signer, artifact: bytes) -> int:
    path, body = _entry(kind, signer, artifact)
    return (await client.post(path, json=body)).status


async def test_the_ct_log_is_followed_for_the_certificates_the_ca_issues(
    fulcio: tuple[TestClient[Any, Any], Path],
    issuer: tuple[IssuerServer, Issuer, ec.EllipticCurvePrivateKey],
    tmp_path: Path,
) -> None:
    """A CT monitor for a private CA: every certificate issued for a watched identity (or key)
    is reported from the CT log, whose precertificates come from the extra data and must strip
    to what the leaf commits to."""
    client, data = fulcio
    _, acme, _ = issuer
    key = ec.generate_private_key(ec.SECP256R1())
    for _ in range(2):
        assert await issue(client, issuer, key) == 200
    url = str(client.make_url("")).rstrip("/")
    now = datetime.datetime.now(datetime.UTC)
    root = documents.trusted_root(gather(data, now), documents.Endpoints(url), now)
    (ct,) = [log for log in remote_logs(root) if log.kind == "ct"]
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    watch_file = tmp_path / "watch.yaml"
    watch_file.write_text(
        f"identities: [{{subject: dev@example.com, issuer: '{acme.url}'}}]\n"
        f"keys: ['{hashlib.sha256(spki).hexdigest()}']\n"
    )
    watch = load_watchlist(watch_file)
    events: list[Event] = []
    monitor = Monitor([ct], watch, tmp_path / "state.json", events.append)
    async with aiohttp.ClientSession() as session:
        assert await monitor.check(session) == (4, 0, 0), events
        # Index 0 is the CT log's genesis certificate; the two issued follow.
        assert sorted((e["index"], e["rule"]) for e in events) == [
            (1, "identity"), (1, "key"), (2, "identity"), (2, "key"),
        ]  # fmt: skip
        assert all(e["log"] == f"ct {ct.url}" for e in events)
        assert {e["issuer"] for e in events if e["rule"] == "identity"} == {acme.url}
        events.clear()
        assert await monitor.check(session) == (0, 0, 0)  # resumed: nothing new
        # From now: the CT log's head from its last entry's audit path; only what follows.
        later = Monitor([ct], watch, tmp_path / "now.json", events.append, from_now=True)
        assert await later.check(session) == (0, 0, 0)
        assert await issue(client, issuer, key) == 200
        assert await later.check(session) == (2, 0, 0)
        assert {e["index"] for e in events} == {3}


def test_a_precertificate_that_is_not_the_one_logged_is_a_divergence() -> None:
    """The extra data is outside the Merkle hash: a lying log could serve another
    precertificate there than the one it logged."""
    from services.ca import keys as ca_keys
    from services.ca.certificate import build_precertificate
    from services.log.ct import rfc6962
    from tests.services.ca.test_certificate import EMAIL

    now = datetime.datetime.now(datetime.UTC)
    _, ca_key, chain = ca_keys.generate(now)
    ca = ca_keys.CAKeyMaterial(ca_key, chain)
    logged, other = (
        build_precertificate(
            ca=ca, public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
            principal=EMAIL, now=now,
        ).public_bytes(serialization.Encoding.DER)
        for _ in range(2)
    )  # fmt: skip
    leaf = rfc6962.precert_entry(logged, chain[0], 1_000).merkle_tree_leaf()

    def extra(der: bytes) -> bytes:
        return len(der).to_bytes(3, "big") + der

    assert ct_certificate(leaf, extra(logged), "entry 1") == (1_000, logged)
    with pytest.raises(Divergence, match="not the one logged"):
        ct_certificate(leaf, extra(other), "entry 1")
    with pytest.raises(Divergence, match="malformed"):
        ct_certificate(leaf, extra(logged)[:-1], "entry 1")
