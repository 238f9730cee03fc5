"""The Rekor v2 API on both databases: sigstore-python's own v2 client writes, its models parse
the replies, and the proofs and checkpoints are checked by code independent of the server."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import gzip
import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sigstore._internal.rekor.client_v2 import RekorV2Client
from sigstore.hashes import Hashed
from sigstore_models.common import v1 as common_v1

from services.app import Settings, create_app
from services.db import Database
from services.errors import OperatorError
from services.log.checkpoint import is_frozen
from services.log.rekor.api_v2 import REKOR_V2_LOG
from services.log.rekor.v2 import InvalidRequest, canonicalize_request, genesis_statement
from services.log.rekor.v2 import genesis_entry as rekor_v2_genesis
from services.log.sequencer import Sequencer
from services.log.sqlstore import SQLLogStore
from services.trust.material import retire_rekor_v2
from tests.merkle_reference import leaf_hash, node_hash
from tests.services.log.rekor.test_api import Signer

AiohttpClient = Callable[[Application], Awaitable[TestClient[Any, Any]]]
HOST = "log.example"


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path
) -> TestClient[Any, Any]:
    settings = Settings(
        data_dir=tmp_path / "data", public_url=f"http://{HOST}:3000", batch_max_age=0.005
    )
    return await aiohttp_client(create_app(settings, database=db, components=("log",)))


def _python_request(signer: Signer, artifact: bytes) -> dict[str, Any]:
    """The exact body sigstore-python 4.5.1 posts to Rekor v2 for ``sign``."""
    sig = signer.key.sign(artifact, ec.ECDSA(hashes.SHA256()))
    hashed = Hashed(
        algorithm=common_v1.HashAlgorithm.SHA2_256, digest=hashlib.sha256(artifact).digest()
    )
    return dict(RekorV2Client._build_hashed_rekord_request(hashed, sig, signer.cert))


def _key_request(
    key: Any, message: bytes, details: str, hash_name: str = "sha256"
) -> dict[str, Any]:
    digest = hashlib.new(hash_name, message).digest()
    if isinstance(key, rsa.RSAPrivateKey):
        from cryptography.hazmat.primitives.asymmetric import padding

        sig = key.sign(message, padding.PKCS1v15(), getattr(hashes, hash_name.upper())())
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        sig = b"\x00" * 64  # not verifiable: Ed25519ph needs a prehash signer
    else:
        sig = key.sign(message, ec.ECDSA(getattr(hashes, hash_name.upper())()))
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "hashedRekordRequestV002": {
            "digest": base64.b64encode(digest).decode(),
            "signature": {
                "content": base64.b64encode(sig).decode(),
                "verifier": {
                    "publicKey": {"rawBytes": base64.b64encode(spki).decode()},
                    "keyDetails": details,
                },
            },
        }
    }


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2, written from the RFC."""
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise AssertionError("proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0, "proof too short"
    return r


def _verify_note(note: str, public_key: ec.EllipticCurvePublicKey) -> tuple[str, int, bytes]:
    """Check a signed note by hand (C2SP signed-note, ECDSA key hash = SHA-256(SPKI)[:4])."""
    text, _, signatures = note.partition("\n\n")
    text += "\n"
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (line,) = [s for s in signatures.splitlines() if s]
    dash, name, blob = line.split(" ")
    assert dash == "\u2014"
    assert name == HOST
    raw = base64.b64decode(blob)
    assert raw[:4] == hashlib.sha256(spki).digest()[:4]
    public_key.verify(raw[4:], text.encode(), ec.ECDSA(hashes.SHA256()))
    origin, size, root = text.splitlines()[:3]
    return origin, int(size), base64.b64decode(root)


async def test_sigstore_python_writes_and_parses_the_reply(
    client: TestClient[Any, Any],
) -> None:
    signer = Signer()
    request = _python_request(signer, b"artifact one")
    base = str(client.make_url("")).rstrip("/")
    entry = await asyncio.to_thread(RekorV2Client(base).create_entry, request)  # type: ignore[arg-type]
    inner = entry._inner
    # Entry 0 is the log's genesis entry, so a client's first bundle is at index 1.
    assert inner.log_index == 1
    assert inner.kind_version.kind == "hashedrekord"
    assert inner.kind_version.version == "0.0.2"
    body = inner.canonicalized_body  # the models decode protojson bytes
    leaf = json.loads(body)
    spec = leaf["spec"]["hashedRekordV002"]
    assert spec["signature"] == request["hashedRekordRequestV002"]["signature"]
    assert spec["data"] == {
        "algorithm": "SHA2_256",
        "digest": request["hashedRekordRequestV002"]["digest"],
    }
    # JCS: sorted keys, no whitespace, byte for byte what clients rebuild.
    assert body == json.dumps(leaf, sort_keys=True, separators=(",", ":")).encode()

    proof = inner.inclusion_proof
    assert proof.checkpoint is not None
    reply = await client.get("/api/v2/checkpoint")
    log_key = await _log_key(client)
    origin, size, root = _verify_note(proof.checkpoint.envelope, log_key)
    assert origin == HOST  # C2SP: the origin is the log's host, no tree ID
    assert (size, root) == (proof.tree_size, proof.root_hash)
    hashes_ = list(proof.hashes)
    assert root_from_inclusion_proof(1, size, leaf_hash(body), hashes_) == root
    assert reply.headers["Cache-Control"] == "no-cache"
    assert (
        inner.log_id.key_id
        == hashlib.sha256(
            log_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).digest()
    )


async def _log_key(client: TestClient[Any, Any]) -> ec.EllipticCurvePublicKey:
    """The v2 log key, from the genesis entry at index 0 (signed by the log's own key)."""
    bundle = await (await client.get("/api/v2/tile/entries/000.p/1")).read()
    length = int.from_bytes(bundle[:2], "big")
    genesis = json.loads(bundle[2 : 2 + length])
    verifier = genesis["spec"]["hashedRekordV002"]["signature"]["verifier"]
    key = serialization.load_der_public_key(base64.b64decode(verifier["publicKey"]["rawBytes"]))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    signature = base64.b64decode(genesis["spec"]["hashedRekordV002"]["signature"]["content"])
    key.verify(signature, genesis_statement(HOST), ec.ECDSA(hashes.SHA256()))
    return key


async def test_duplicate_is_409_with_the_index(client: TestClient[Any, Any]) -> None:
    request = _python_request(Signer(), b"twice")
    first = await client.post("/api/v2/log/entries", json=request)
    assert first.status == 201
    index = (await first.json())["logIndex"]
    again = await client.post("/api/v2/log/entries", json=request)
    assert again.status == 409
    assert again.headers["X-Log-Index"] == index
    body = await again.json()
    assert body == {
        "code": 6,
        "message": f"an equivalent entry already exists in the transparency log with index {index}",
        "details": [],
    }


@pytest.mark.parametrize(
    ("curve", "details", "hash_name"),
    [
        (ec.SECP256R1(), "PKIX_ECDSA_P256_SHA_256", "sha256"),
        (ec.SECP384R1(), "PKIX_ECDSA_P384_SHA_384", "sha384"),
        (ec.SECP521R1(), "PKIX_ECDSA_P521_SHA_512", "sha512"),
    ],
)
async def test_every_ecdsa_pair_is_accepted(
    client: TestClient[Any, Any], curve: ec.EllipticCurve, details: str, hash_name: str
) -> None:
    key = ec.generate_private_key(curve)
    reply = await client.post(
        "/api/v2/log/entries", json=_key_request(key, b"m", details, hash_name)
    )
    assert reply.status == 201, await reply.text()
    leaf = json.loads(base64.b64decode((await reply.json())["canonicalizedBody"]))
    assert leaf["spec"]["hashedRekordV002"]["data"]["algorithm"] == f"SHA2_{hash_name[3:]}"


async def test_rsa_3072_is_accepted_with_snake_case_names(client: TestClient[Any, Any]) -> None:
    key = rsa.generate_private_key(65537, 3072)
    request = _key_request(key, b"m", "PKIX_RSA_PKCS1V15_3072_SHA256")
    inner = request["hashedRekordRequestV002"]
    verifier = inner["signature"]["verifier"]
    snake = {
        "hashed_rekord_request_v002": {
            "digest": inner["digest"],
            "signature": {
                "content": inner["signature"]["content"],
                "verifier": {
                    "public_key": {"raw_bytes": verifier["publicKey"]["rawBytes"]},
                    "key_details": 10,  # protojson takes an enum's number too
                },
            },
        }
    }
    reply = await client.post("/api/v2/log/entries", json=snake)
    assert reply.status == 201, await reply.text()
    leaf = json.loads(base64.b64decode((await reply.json())["canonicalizedBody"]))
    # The leaf is written as protojson writes it: lowerCamel names, the enum's name.
    written = leaf["spec"]["hashedRekordV002"]["signature"]["verifier"]
    assert written["keyDetails"] == "PKIX_RSA_PKCS1V15_3072_SHA256"
    assert "publicKey" in written


def _mutate(request: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(request))
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return out


_DELETE = object()


_H = "hashedRekordRequestV002"
_V = f"{_H}.signature.verifier"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (f"{_H}.digest", base64.b64encode(b"short").decode(), "digest length (5)"),
        (f"{_H}.signature.content", base64.b64encode(b"\x30\x00").decode(), "verifying signature"),
        (f"{_V}.keyDetails", "PKIX_ECDSA_P384_SHA_384", "not permitted"),
        (f"{_V}.keyDetails", "PKIX_ED25519", "unsupported key details"),
        (f"{_V}.keyDetails", "NOT_A_KEY", "unknown keyDetails"),
        (f"{_V}.publicKey", _DELETE, "missing signature public key"),
        (f"{_V}.publicKey.rawBytes", "", "missing public key raw bytes"),
        (f"{_V}.publicKey.rawBytes", "AAAA", "parsing verifier"),
        (f"{_H}.signature.extra", 1, 'unknown field "extra"'),
        (f"{_H}.digest", _DELETE, "missing digest"),
        (f"{_H}.digest", "***", "not valid base64"),
        (f"{_H}.signature", _DELETE, "missing signature"),
    ],
)  # fmt: skip
async def test_invalid_requests_are_400_in_rekor_tiles_shape(
    client: TestClient[Any, Any], path: str, value: Any, message: str
) -> None:
    good = _key_request(ec.generate_private_key(ec.SECP256R1()), b"m", "PKIX_ECDSA_P256_SHA_256")
    reply = await client.post("/api/v2/log/entries", json=_mutate(good, path, value))
    assert reply.status == 400
    body = await reply.json()
    assert body["code"] == 3
    assert body["details"] == []
    assert body["message"].startswith("invalid hashedrekord request: ")
    assert message in body["message"]


async def test_an_empty_request_is_no_known_type(client: TestClient[Any, Any]) -> None:
    reply = await client.post("/api/v2/log/entries", json={})
    assert reply.status == 400
    assert (await reply.json())["message"] == "invalid type, must be hashedrekord"


def _dsse_request(
    keys: list[Any], payload: bytes, *, sign_with: list[Any] | None = None
) -> dict[str, Any]:
    """A ``dsseRequestV002`` as sigstore-js 4.x sends it: the envelope and its verifiers."""
    payload_type = "application/vnd.in-toto+json"
    pae = b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)
    signers = keys if sign_with is None else sign_with
    spki = [
        k.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for k in keys
    ]
    return {
        "dsseRequestV002": {
            "envelope": {
                "payload": base64.b64encode(payload).decode(),
                "payloadType": payload_type,
                "signatures": [
                    {"sig": base64.b64encode(k.sign(pae, ec.ECDSA(hashes.SHA256()))).decode()}
                    for k in signers
                ],
            },
            "verifiers": [
                {"publicKey": {"rawBytes": base64.b64encode(d).decode()},
                 "keyDetails": "PKIX_ECDSA_P256_SHA_256"}
                for d in spki
            ],
        }
    }  # fmt: skip


async def test_dsse_entries_as_sigstore_js_sends_them(client: TestClient[Any, Any]) -> None:
    statement = json.dumps(
        {"_type": "https://in-toto.io/Statement/v1", "subject": [
            {"name": "app", "digest": {"sha256": "ab" * 32}}],
         "predicateType": "https://slsa.dev/provenance/v1", "predicate": {}}
    ).encode()  # fmt: skip
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
    reply = await client.post("/api/v2/log/entries", json=_dsse_request(keys, statement))
    assert reply.status == 201, await reply.text()
    created = await reply.json()
    assert created["kindVersion"] == {"kind": "dsse", "version": "0.0.2"}
    leaf = json.loads(base64.b64decode(created["canonicalizedBody"]))
    spec = leaf["spec"]["dsseV002"]
    assert spec["payloadHash"] == {
        "algorithm": "SHA2_256",
        "digest": base64.b64encode(hashlib.sha256(statement).digest()).decode(),
    }
    raw = [base64.b64decode(s["content"]) for s in spec["signatures"]]
    assert raw == sorted(raw)  # sorted by the raw signature bytes, as rekor-tiles does
    # The in-toto subject is searchable, as on v1.
    found = await (await client.post("/api/v2/index/retrieve", json={"hash": "ab" * 32})).json()
    assert [h["logIndex"] for h in found] == [created["logIndex"]]
    # A signature no verifier verifies is refused.
    stranger = ec.generate_private_key(ec.SECP256R1())
    bad = _dsse_request(keys[:1], statement, sign_with=[keys[0], stranger])
    reply = await client.post("/api/v2/log/entries", json=bad)
    assert reply.status == 400
    assert "all signatures must have a key that verifies it" in (await reply.json())["message"]


async def test_an_operator_can_refuse_dsse_as_rekor_tiles_does(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", public_url=f"http://{HOST}:3000", rekor_v2_dsse=False
    )
    client = await aiohttp_client(create_app(settings, database=db, components=("log",)))
    keys = [ec.generate_private_key(ec.SECP256R1())]
    reply = await client.post("/api/v2/log/entries", json=_dsse_request(keys, b"{}"))
    assert reply.status == 400
    assert (await reply.json())["message"] == "invalid type, must be hashedrekord"


async def test_garbage_is_400(client: TestClient[Any, Any]) -> None:
    for body in (b"not json", b"[]", b'{"hashedRekordRequestV002": 7}'):
        reply = await client.post("/api/v2/log/entries", data=body)
        assert reply.status == 400, body
        assert (await reply.json())["code"] == 3


async def test_tiles_entries_and_checkpoint_agree(client: TestClient[Any, Any]) -> None:
    """The tlog-tiles read path, read the way the C2SP spec describes (no server code used):
    level-0 hashes are the leaf hashes of the bundled entries, and they hash to the root the
    signed checkpoint names; full tiles and a tile beyond the tree are as the spec says."""
    signer = Signer()
    for i in range(300):  # past one full tile
        reply = await client.post("/api/v2/log/entries", json=_python_request(signer, b"%d" % i))
        assert reply.status == 201
    note = await (await client.get("/api/v2/checkpoint")).text()
    _, size, root = _verify_note(note, await _log_key(client))
    assert size == 301

    full = await client.get("/api/v2/tile/0/000")
    assert full.status == 200
    assert full.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    partial = await client.get(f"/api/v2/tile/0/001.p/{size - 256}")
    hashes_ = (await full.read()) + (await partial.read())
    assert len(hashes_) == size * 32
    bundles = await (await client.get("/api/v2/tile/entries/000")).read()
    bundles += await (await client.get(f"/api/v2/tile/entries/001.p/{size - 256}")).read()
    leaves, at = [], 0
    while at < len(bundles):
        n = int.from_bytes(bundles[at : at + 2], "big")
        leaves.append(bundles[at + 2 : at + 2 + n])
        at += 2 + n
    assert [leaf_hash(x) for x in leaves] == [
        hashes_[i : i + 32] for i in range(0, len(hashes_), 32)
    ]
    assert _root([hashes_[i : i + 32] for i in range(0, len(hashes_), 32)]) == root
    level1 = await (await client.get("/api/v2/tile/1/000.p/1")).read()
    assert level1 == _root([hashes_[i : i + 32] for i in range(0, 256 * 32, 32)])

    gz = await client.get(
        "/api/v2/tile/0/000", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    if gz.headers.get("Content-Encoding") == "gzip":
        assert gzip.decompress(await gz.read()) == hashes_[: 256 * 32]
    etag = full.headers["ETag"]
    cached = await client.get("/api/v2/tile/0/000", headers={"If-None-Match": etag})
    assert cached.status == 304
    for path in (
        "/api/v2/tile/0/002",  # beyond the tree
        "/api/v2/tile/0/001",  # not full yet
        f"/api/v2/tile/0/001.p/{size - 255}",  # wider than the tree
        "/api/v2/tile/1/000",
        "/api/v2/tile/0/1",  # not three digits
        "/api/v2/tile/0/001.p/0",
        "/api/v2/tile/64/000",
        "/api/v2/tile/entries/002",
        "/api/v2/tile/\u00b9/000",  # str.isdigit holds, int() refuses: was a 500 (schemathesis)
        "/api/v2/tile/0/\u0660\u0660\u0660",  # Arabic-Indic zeros: \\d without re.ASCII
    ):
        assert (await client.get(path)).status == 404, path


async def _append_from_a_replica(
    client: TestClient[Any, Any], db: Database, data_dir: Path, artifacts: list[bytes]
) -> list[bytes]:
    """Append real v2 entries through ANOTHER store and sequencer on the same database (a
    second log replica, with the log's key from ``data_dir``): the app's own sequencer never
    sees them. Returns their leaves."""
    log = client.app[REKOR_V2_LOG]
    mine = log.sequencer
    assert isinstance(mine, Sequencer)
    key = mine._signer  # the replicas share the log's key
    other = Sequencer(
        SQLLogStore(db),
        tree_id=log.tree_id,
        origin=mine.origin,
        signer=key,
        genesis=lambda _now: rekor_v2_genesis(key, mine.origin),
        batch_max_size=1000,
    )
    client_signer = Signer()
    leaves = [canonicalize_request(_python_request(client_signer, a)).leaf for a in artifacts]
    await other.start()
    try:
        await asyncio.gather(*(other.submit(leaf, want_proof=False) for leaf in leaves))
    finally:
        await other.stop()
    return leaves


def _split_bundle(bundle: bytes) -> list[bytes]:
    leaves, at = [], 0
    while at < len(bundle):
        n = int.from_bytes(bundle[at : at + 2], "big")
        leaves.append(bundle[at + 2 : at + 2 + n])
        at += 2 + n
    return leaves


async def test_tiles_read_what_another_replica_committed(
    client: TestClient[Any, Any], db: Database, tmp_path: Path
) -> None:
    """Replicas on one database: tiles and bundles another process committed are served at
    once, by a replica whose own sequencer is still at the genesis entry."""
    log = client.app[REKOR_V2_LOG]
    leaves = await _append_from_a_replica(
        client, db, tmp_path / "data", [b"r%d" % i for i in range(300)]
    )
    assert log.sequencer.head.size == 1
    genesis = (await log.store.read_entries(log.tree_id, [0]))[0].leaf
    every = [genesis, *leaves]  # 301

    full = await client.get("/api/v2/tile/0/000")
    assert full.status == 200
    assert await full.read() == b"".join(leaf_hash(x) for x in every[:256])
    edge = await client.get("/api/v2/tile/0/001.p/45")
    assert await edge.read() == b"".join(leaf_hash(x) for x in every[256:])
    bundle = await client.get("/api/v2/tile/entries/000")
    assert bundle.status == 200
    assert _split_bundle(await bundle.read()) == every[:256]
    edge_bundle = await client.get("/api/v2/tile/entries/001.p/45")
    assert _split_bundle(await edge_bundle.read()) == every[256:]
    level1 = await client.get("/api/v2/tile/1/000.p/1")
    assert await level1.read() == _root([leaf_hash(x) for x in every[:256]])
    note = await (await client.get("/api/v2/checkpoint")).text()
    assert _verify_note(note, await _log_key(client))[1:] == (
        301,
        _root(list(map(leaf_hash, every))),
    )


async def test_tile_reads_do_not_read_the_tree_head(
    client: TestClient[Any, Any], db: Database, tmp_path: Path
) -> None:
    """With the tree-head table out of reach (renamed), the checkpoint fails but tiles and
    entry bundles are still served, and what lies beyond the tree is still a 404."""
    await _append_from_a_replica(client, db, tmp_path / "data", [b"h%d" % i for i in range(260)])
    await db.write(lambda c: c.exec_driver_sql("ALTER TABLE tree_heads RENAME TO th_hidden"))
    try:
        assert (await client.get("/api/v2/checkpoint")).status == 500  # the rename bites
        for path in ("/api/v2/tile/0/000", "/api/v2/tile/0/001.p/5", "/api/v2/tile/1/000.p/1"):
            assert (await client.get(path)).status == 200, path
        for path in ("/api/v2/tile/entries/000", "/api/v2/tile/entries/001.p/5"):
            assert (await client.get(path)).status == 200, path
        for path in ("/api/v2/tile/0/001", "/api/v2/tile/0/001.p/6", "/api/v2/tile/entries/001"):
            assert (await client.get(path)).status == 404, path
    finally:
        await db.write(lambda c: c.exec_driver_sql("ALTER TABLE th_hidden RENAME TO tree_heads"))


async def test_a_partial_tile_is_404_wider_than_it_is_stored(
    client: TestClient[Any, Any], db: Database, tmp_path: Path
) -> None:
    """The growing edge of each level: a stored tile shorter than the width asked for, or
    entries not all stored, is a 404, never a short answer; indices no tree can reach are a
    404 too, before the database sees them (PostgreSQL refuses integers past BIGINT)."""
    log = client.app[REKOR_V2_LOG]
    await _append_from_a_replica(
        client, db, tmp_path / "data", [b"p%d" % i for i in range(299)]
    )  # size 300
    stored = await log.store.read_tiles(log.tree_id, [(0, 1), (1, 0)])
    assert {k: len(v) // 32 for k, v in stored.items()} == {(0, 1): 44, (1, 0): 1}
    for path in ("/api/v2/tile/0/001.p/44", "/api/v2/tile/1/000.p/1"):
        assert (await client.get(path)).status == 200, path
    huge = "x999/" * 7 + "999"  # 2^72 or so
    for path in (
        "/api/v2/tile/0/001",
        "/api/v2/tile/0/001.p/45",
        "/api/v2/tile/1/000",
        "/api/v2/tile/1/000.p/2",
        "/api/v2/tile/2/000.p/1",
        "/api/v2/tile/entries/001",
        "/api/v2/tile/entries/001.p/45",
        f"/api/v2/tile/0/{huge}",
        f"/api/v2/tile/3/{huge}.p/1",
        f"/api/v2/tile/entries/{huge}",
        "/api/v2/tile/0/x036/x028/x797/x018/x963/968",  # 2^55: leaves from 2^63 on
        "/api/v2/tile/entries/x036/x028/x797/x018/x963/968.p/1",
        "/api/v2/tile/63/000.p/1",
    ):
        assert (await client.get(path)).status == 404, path


def _root(hashes_: list[bytes]) -> bytes:
    """RFC 6962 MTH over leaf hashes, written out independently of the server's code."""
    if len(hashes_) == 1:
        return hashes_[0]
    k = 1
    while k * 2 < len(hashes_):
        k *= 2
    return hashlib.sha256(b"\x01" + _root(hashes_[:k]) + _root(hashes_[k:])).digest()


async def test_a_frozen_log_refuses_writes_for_good(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path
) -> None:
    """``--rekor-v2-freeze``: the final checkpoint carries rekor-tiles' frozen line, writes get
    its 405, reads go on, and a later start without the flag stays frozen."""
    from services.log.rekor.api_v2 import FROZEN_MESSAGE

    settings = Settings(data_dir=tmp_path / "data", public_url=f"http://{HOST}:3000")
    client = await aiohttp_client(create_app(settings, database=db, components=("log",)))
    await client.post("/api/v2/log/entries", json=_python_request(Signer(), b"early"))
    await client.close()
    frozen = dataclasses.replace(settings, rekor_v2_freeze=True)
    for each in (frozen, settings):
        client = await aiohttp_client(create_app(each, database=db, components=("log",)))
        reply = await client.post("/api/v2/log/entries", json=_python_request(Signer(), b"late"))
        assert reply.status == 405
        assert await reply.text() == FROZEN_MESSAGE
        note = await (await client.get("/api/v2/checkpoint")).text()
        assert note.startswith(f"{HOST}\n2\n")
        assert is_frozen(note)
        assert "\nLog frozen \u2014 " in note.partition("\n\n")[0]
        assert (await client.get("/api/v2/tile/entries/000.p/2")).status == 200
        await client.close()


async def test_a_retired_log_is_served_read_only_at_its_host_beside_the_new_one(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path
) -> None:
    """Sharding as rekor-tiles does it, one host per log: the old log frozen and retired keeps
    answering at its host (checkpoint, tiles, search, 405 on writes); the new log, with a new
    key, answers at its own host and at any other name."""
    from services.log.rekor.api_v2 import FROZEN_MESSAGE, REKOR_V2_LOG

    old_url, new_url = "http://old.example:3000", "http://new.example:3000"
    old = Settings(
        data_dir=tmp_path / "data", public_url=f"http://{HOST}:3000", rekor_v2_url=old_url,
        rekor_v2_freeze=True,
    )  # fmt: skip
    client = await aiohttp_client(create_app(old, database=db, components=("log",)))
    tree_id = client.app[REKOR_V2_LOG].tree_id
    await client.close()
    retire_rekor_v2(old.data_dir, old_url, tree_id, datetime.datetime.now(datetime.UTC))
    new = dataclasses.replace(old, rekor_v2_url=new_url, rekor_v2_freeze=False)
    client = await aiohttp_client(create_app(new, database=db, components=("log",)))
    at_old, at_new = {"Host": "old.example:3000"}, {"Host": "new.example:3000"}

    created = await client.post(
        "/api/v2/log/entries", json=_python_request(Signer(), b"new"), headers=at_new
    )
    assert created.status == 201
    assert (await created.json())["logIndex"] == "1"
    new_note = await (await client.get("/api/v2/checkpoint", headers=at_new)).text()
    assert new_note.startswith("new.example\n2\n")
    assert new_note == await (await client.get("/api/v2/checkpoint")).text()  # any other name

    old_note = await (await client.get("/api/v2/checkpoint", headers=at_old)).text()
    assert old_note.startswith("old.example\n1\n")
    assert is_frozen(old_note)
    refused = await client.post(
        "/api/v2/log/entries", json=_python_request(Signer(), b"late"), headers=at_old
    )
    assert refused.status == 405
    assert await refused.text() == FROZEN_MESSAGE
    bundle = await (await client.get("/api/v2/tile/entries/000.p/1", headers=at_old)).read()
    assert b"hashedRekordV002" in bundle
    tile = await (await client.get("/api/v2/tile/0/000.p/1", headers=at_old)).read()
    assert base64.b64encode(tile).decode() == old_note.split("\n")[2]  # one leaf: its hash
    await client.close()


async def test_search_by_digest_identity_and_key_returns_v2_entries(
    client: TestClient[Any, Any],
) -> None:
    """What rekor-tiles dropped: the v1 search, over the v2 log, each hit with its proof."""
    signer = Signer("auditor@example.com")
    request = _python_request(signer, b"find me")
    created = await (await client.post("/api/v2/log/entries", json=request)).json()
    await client.post("/api/v2/log/entries", json=_python_request(Signer(), b"someone else"))
    digest = hashlib.sha256(b"find me").hexdigest()
    cert_pem = signer.cert.public_bytes(serialization.Encoding.PEM)
    log_key = await _log_key(client)
    for query in (
        {"hash": f"sha256:{digest}"},
        {"email": "auditor@example.com"},
        {"publicKey": {"format": "x509", "content": base64.b64encode(cert_pem).decode()}},
        {"hash": digest, "email": "auditor@example.com", "operator": "and"},
    ):
        reply = await client.post("/api/v2/index/retrieve", json=query)
        assert reply.status == 200, await reply.text()
        (hit,) = await reply.json()
        assert hit["logIndex"] == created["logIndex"]
        assert hit["canonicalizedBody"] == created["canonicalizedBody"]
        proof = hit["inclusionProof"]
        _, size, root = _verify_note(proof["checkpoint"]["envelope"], log_key)
        leaf = leaf_hash(base64.b64decode(hit["canonicalizedBody"]))
        hashes_ = [base64.b64decode(h) for h in proof["hashes"]]
        assert root_from_inclusion_proof(int(hit["logIndex"]), size, leaf, hashes_) == root
    nothing = await client.post("/api/v2/index/retrieve", json={"email": "nobody@example.com"})
    assert await nothing.json() == []
    for bad in (b"[]", b"{", b'{"operator": "xor", "email": "a@b.c"}'):
        reply = await client.post("/api/v2/index/retrieve", data=bad)
        assert reply.status == 400, bad


def test_a_refused_algorithm_is_named_for_the_kind_of_request() -> None:
    """The same registry refuses a P-384 key with SHA-256 in either request kind, and each
    error names its own kind (rekor-tiles' message for it)."""
    key = ec.generate_private_key(ec.SECP384R1())
    hashed = _key_request(key, b"m", "PKIX_ECDSA_P256_SHA_256")
    dsse = _dsse_request([key], b"{}")
    for request, kind in ((hashed, "hashedrekord"), (dsse, "dsse")):
        with pytest.raises(InvalidRequest) as info:
            canonicalize_request(request)
        assert info.value.message.startswith(f"invalid {kind} request: ")
        assert "signing algorithm not permitted" in str(info.value)


async def test_a_log_keeps_its_host_for_life(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path
) -> None:
    """A restart under another v2 URL host would sign checkpoints under another origin, which
    cosign and witnesses refuse: the start is refused, naming the way to a new log."""
    settings = Settings(
        data_dir=tmp_path / "data", public_url=f"http://{HOST}:3000",
        rekor_v2_url="http://log2026.example:3000",
    )  # fmt: skip
    client = await aiohttp_client(create_app(settings, database=db, components=("log",)))
    reply = await client.post("/api/v2/log/entries", json=_python_request(Signer(), b"relied on"))
    assert reply.status == 201
    await client.close()
    moved = dataclasses.replace(settings, rekor_v2_url="http://log2027.example:3000")
    with pytest.raises(OperatorError, match="a log keeps its host for life"):
        await aiohttp_client(create_app(moved, database=db, components=("log",)))
    # The same host on another port is the same origin.
    same = dataclasses.replace(settings, rekor_v2_url="https://log2026.example")
    await (await aiohttp_client(create_app(same, database=db, components=("log",)))).close()
