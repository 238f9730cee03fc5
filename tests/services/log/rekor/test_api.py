"""The Rekor v1 API on both databases, judged by sigstore-python's own parsing and checks."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import rekor_types
from aiohttp.test_utils import TestClient
from aiohttp.web import Application
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sigstore._internal.rekor.checkpoint import SignedCheckpoint
from sigstore._internal.rekor.client import RekorClient
from sigstore._internal.trust import Keyring, RekorKeyring
from sigstore._utils import KeyID
from sigstore.dsse import DigestSet, StatementBuilder, Subject
from sigstore.dsse import _sign as dsse_sign
from sigstore.hashes import Hashed
from sigstore.models import TransparencyLogEntry
from sigstore_models.common import v1 as common_v1

from clients.merkle import verify_consistency
from services.app import Settings, create_app
from services.db import Database
from services.log.rekor import api as rekor_api
from services.log.rekor.genesis import GenesisMismatch, statement, verify_genesis
from services.log.rekor.kinds import canonicalize_proposed_entry
from tests.services.log.rekor import material

AiohttpClient = Callable[[Application], Awaitable[TestClient[Any, Any]]]

_NOW = datetime.datetime.now(datetime.UTC)


class Signer:
    """A signing identity with a certificate carrying an email SAN (as Fulcio issues)."""

    def __init__(
        self,
        email: str = "dev@example.com",
        extensions: Sequence[x509.ExtensionType] = (),
        not_before: datetime.datetime = _NOW,
    ) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + datetime.timedelta(minutes=10))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=True)
        )
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        self.cert = builder.sign(self.key, hashes.SHA256())

    def hashedrekord(self, artifact: bytes) -> dict[str, Any]:
        """The exact body sigstore-python posts for ``sign``."""
        digest = hashlib.sha256(artifact).digest()
        sig = self.key.sign(artifact, ec.ECDSA(hashes.SHA256()))
        hashed = Hashed(algorithm=common_v1.HashAlgorithm.SHA2_256, digest=digest)
        return dict(
            RekorClient("http://unused")._build_hashed_rekord_request(hashed, sig, self.cert)
        )

    def dsse(self, image_digest: str) -> dict[str, Any]:
        """The exact body sigstore-python posts for ``attest`` (an in-toto statement in DSSE)."""
        stmt = (
            StatementBuilder()
            .subjects(
                [
                    Subject(
                        name="registry.example/app", digest=DigestSet(root={"sha256": image_digest})
                    )
                ]
            )
            .predicate_type("https://slsa.dev/provenance/v1")
            .predicate({"buildDefinition": {"buildType": "https://example.com/ci"}})
            .build()
        )
        envelope = dsse_sign(self.key, stmt)
        return dict(RekorClient("http://unused")._build_dsse_request(envelope, self.cert))


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path
) -> TestClient[Any, Any]:
    settings = Settings(
        data_dir=tmp_path / "data",
        public_url="http://log.example:3000",
        max_body=64 * 1024,
        batch_max_age=0.005,
    )
    return await aiohttp_client(create_app(settings, database=db))


async def keyring(client: TestClient[Any, Any]) -> tuple[RekorKeyring, bytes]:
    pem = await (await client.get("/api/v1/log/publicKey")).read()
    spki = serialization.load_pem_public_key(pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ring = Keyring(
        [
            common_v1.PublicKey(
                raw_bytes=base64.b64encode(spki),
                key_details=common_v1.PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
            )
        ]
    )
    return RekorKeyring(ring), hashlib.sha256(spki).digest()


async def post_entry(client: TestClient[Any, Any], proposed: dict[str, Any]) -> str:
    """Create an entry and return its entry ID."""
    resp = await client.post("/api/v1/log/entries", json=proposed)
    assert resp.status == 201, await resp.text()
    entry_id: str = next(iter(await resp.json()))
    return entry_id


async def verified(client: TestClient[Any, Any], body: dict[str, Any]) -> TransparencyLogEntry:
    """Parse and fully verify a LogEntry exactly as sigstore-python does for a bundle."""
    ring, _ = await keyring(client)
    entry = TransparencyLogEntry._from_v1_response(body)
    entry._verify(ring)  # inclusion proof, checkpoint signature and root, SET
    return entry


async def test_log_info_and_public_key(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/log")
    assert resp.status == 200
    info = await resp.json()
    assert info["treeSize"] == 1  # the genesis entry
    assert isinstance(info["treeID"], str)
    assert info["treeID"].isdigit()
    note = SignedCheckpoint.from_text(info["signedTreeHead"])
    assert note.checkpoint.origin == f"log.example - {info['treeID']}"
    assert note.signed_note.signatures[0].name == "log.example"
    ring, log_id = await keyring(client)
    note.signed_note.verify(ring, KeyID(log_id))
    pem = await client.get("/api/v1/log/publicKey")
    assert pem.content_type == "application/x-pem-file"
    assert (await client.get(f"/api/v1/log/publicKey?treeID={info['treeID']}")).status == 200
    bad = await client.get("/api/v1/log/publicKey?treeID=1")
    assert bad.status == 400
    assert (await client.get("/healthz")).status == 200


async def test_create_hashedrekord_verifies_in_sigstore_python(
    client: TestClient[Any, Any],
) -> None:
    signer = Signer()
    resp = await client.post("/api/v1/log/entries", json=signer.hashedrekord(b"artifact"))
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    (entry_id,) = body
    assert len(entry_id) == 80
    assert resp.headers["ETag"] == entry_id
    assert resp.headers["Location"] == f"/api/v1/log/entries/{entry_id}"
    entry = await verified(client, body)
    assert entry._inner.log_index == 1  # index 0 is the log's genesis entry
    assert entry._inner.inclusion_proof.tree_size == 2
    assert entry._inner.inclusion_proof.hashes
    value = body[entry_id]
    assert value["logID"] == (await keyring(client))[1].hex()
    assert entry_id.endswith(hashlib.sha256(b"\x00" + base64.b64decode(value["body"])).hexdigest())
    # The stored body validates as rekor-types' Hashedrekord, as sigstore-python requires.
    rekor_types.Hashedrekord.model_validate_json(base64.b64decode(value["body"]))


async def test_duplicate_is_409_with_location(client: TestClient[Any, Any]) -> None:
    proposed = Signer().hashedrekord(b"twice")
    first = await client.post("/api/v1/log/entries", json=proposed)
    (entry_id,) = await first.json()
    again = await client.post("/api/v1/log/entries", json=proposed)
    assert again.status == 409
    assert again.headers["Location"] == f"/api/v1/log/entries/{entry_id}"
    err = await again.json()
    assert err == {
        "code": 409,
        "message": "an equivalent entry already exists in the transparency log with UUID "
        + entry_id,
    }
    follow = await client.get(again.headers["Location"])
    assert follow.status == 200
    await verified(client, await follow.json())
    assert (await (await client.get("/api/v1/log")).json())["treeSize"] == 2


async def test_small_entries_are_checked_on_the_loop_large_ones_in_threads(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where: list[str] = []

    def recording(body: bytes) -> Any:
        where.append(threading.current_thread().name)
        return canonicalize_proposed_entry(body)

    monkeypatch.setattr(rekor_api, "canonicalize_proposed_entry", recording)
    settings = Settings(
        data_dir=tmp_path / "data",
        public_url="http://log.example:3000",
        max_body=64 * 1024,
        batch_max_age=0.005,
    )
    client = await aiohttp_client(create_app(settings, database=db, components=("log",)))
    small = json.dumps(Signer().hashedrekord(b"small")).encode()
    assert len(small) <= rekor_api.INLINE_CANONICALIZE
    assert (await client.post("/api/v1/log/entries", data=small)).status == 201
    # The same entry behind whitespace past the limit: the same leaf, so a duplicate.
    padded = small[:-1] + b" " * rekor_api.INLINE_CANONICALIZE + b"}"
    again = await client.post("/api/v1/log/entries", data=padded)
    assert again.status == 409
    large = json.dumps(Signer().hashedrekord(b"large")).encode()
    large = large[:-1] + b" " * rekor_api.INLINE_CANONICALIZE + b"}"
    assert (await client.post("/api/v1/log/entries", data=large)).status == 201
    loop_thread = threading.current_thread().name
    assert where[0] == loop_thread
    assert where[1] != loop_thread
    assert where[2] != loop_thread


async def test_genesis_entry_is_the_logs_own_and_checkable(client: TestClient[Any, Any]) -> None:
    """Index 0: a hashedrekord by the log's key over the genesis statement of its origin."""
    genesis = await (await client.get("/api/v1/log/entries?logIndex=0")).json()
    entry = await verified(client, genesis)  # sigstore-python takes it like any entry
    body = entry._inner.canonicalized_body
    rekor_types.Hashedrekord.model_validate_json(body)
    info = await (await client.get("/api/v1/log")).json()
    origin = SignedCheckpoint.from_text(info["signedTreeHead"]).checkpoint.origin
    pem = await (await client.get("/api/v1/log/publicKey")).read()
    public_key = serialization.load_pem_public_key(pem)
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    verify_genesis(body, public_key, origin)
    with pytest.raises(GenesisMismatch, match="genesis statement"):
        verify_genesis(body, public_key, "another.example - 1")
    with pytest.raises(GenesisMismatch, match="not signed by the log's key"):
        verify_genesis(body, ec.generate_private_key(ec.SECP256R1()).public_key(), origin)
    # Auditors find it by the statement's digest, and by the log's key.
    digest = hashlib.sha256(statement(origin)).hexdigest()
    found = await (
        await client.post("/api/v1/index/retrieve", json={"hash": f"sha256:{digest}"})
    ).json()
    assert found == list(genesis)
    # The first client entry comes after it, in a tree of two, with a non-empty proof.
    created = await (
        await client.post("/api/v1/log/entries", json=Signer().hashedrekord(b"first"))
    ).json()
    proof = next(iter(created.values()))["verification"]["inclusionProof"]
    assert (proof["logIndex"], proof["treeSize"], len(proof["hashes"])) == (1, 2, 1)


async def test_get_by_index_uuid_and_entry_id(client: TestClient[Any, Any]) -> None:
    signer = Signer()
    ids = []
    for i in range(5):
        resp = await client.post("/api/v1/log/entries", json=signer.hashedrekord(b"a%d" % i))
        (entry_id,) = await resp.json()
        ids.append(entry_id)
    for index, entry_id in enumerate(ids, start=1):
        by_index = await (await client.get(f"/api/v1/log/entries?logIndex={index}")).json()
        assert list(by_index) == [entry_id]
        entry = await verified(client, by_index)
        assert entry._inner.inclusion_proof.tree_size == 6  # proven against the latest head
        by_uuid = await (await client.get(f"/api/v1/log/entries/{entry_id[16:]}")).json()
        assert list(by_uuid) == [entry_id]  # always keyed by the full entry ID
        by_id = await (await client.get(f"/api/v1/log/entries/{entry_id.upper()}")).json()
        assert list(by_id) == [entry_id]


async def test_missing_entries_are_bodiless_404s(client: TestClient[Any, Any]) -> None:
    for path in (
        "/api/v1/log/entries?logIndex=1",
        "/api/v1/log/entries/" + "ab" * 32,
        "/api/v1/log/entries/" + "0" * 16 + "ab" * 32,
    ):
        resp = await client.get(path)
        assert resp.status == 404
        assert await resp.read() == b""
        assert "Content-Type" not in resp.headers


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/api/v1/log/entries/xyz", 605),
        ("/api/v1/log/entries?logIndex=-1", 609),
        ("/api/v1/log/entries?logIndex=abc", 601),
        ("/api/v1/log/entries", 602),
        ("/api/v1/log/proof", 602),
        ("/api/v1/log/proof?lastSize=0", 609),
    ],
)
async def test_invalid_parameters_are_422(
    client: TestClient[Any, Any], path: str, code: int
) -> None:
    resp = await client.get(path)
    assert resp.status == 422
    assert (await resp.json())["code"] == code


async def test_retrieve_by_uuid_index_and_entry(client: TestClient[Any, Any]) -> None:
    signer = Signer()
    proposals = [signer.hashedrekord(b"r%d" % i) for i in range(3)]
    ids = [await post_entry(client, p) for p in proposals]
    for path in ("/api/v1/log/entries/retrieve", "/api/v1/log/entries/retrieve/"):
        resp = await client.post(
            path,
            json={
                "entryUUIDs": [ids[0][16:], "cd" * 32],
                "logIndexes": [3, 99],
                "entries": [proposals[1]],
            },
        )
        assert resp.status == 200
        results = await resp.json()
        assert [next(iter(r)) for r in results] == [ids[0], ids[1], ids[2]]
        for r in results:
            await verified(client, r)
    none = await client.post("/api/v1/log/entries/retrieve", json={"logIndexes": [50]})
    assert await none.json() == []
    too_many = await client.post(
        "/api/v1/log/entries/retrieve",
        json={"logIndexes": list(range(6)), "entryUUIDs": [ids[0]] * 5},
    )
    assert too_many.status == 422
    assert (await too_many.json())["message"] == "more than max allowed 10 entries in request"


async def test_sigstore_python_retrieve_finds_the_entry(client: TestClient[Any, Any]) -> None:
    signer = Signer()
    proposed = signer.hashedrekord(b"detached")
    await client.post("/api/v1/log/entries", json=proposed)
    expected = rekor_types.Hashedrekord.model_validate(proposed)
    resp = await client.post(
        "/api/v1/log/entries/retrieve/",
        json={"entries": [expected.model_dump(mode="json", by_alias=True)]},
    )
    (result,) = await resp.json()
    await verified(client, result)


async def test_dsse_attestation_is_stored_canonically_and_found_by_subject(
    client: TestClient[Any, Any],
) -> None:
    signer = Signer(email="ci@example.com")
    image = hashlib.sha256(b"image").hexdigest()
    resp = await client.post("/api/v1/log/entries", json=signer.dsse(image))
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    entry = await verified(client, body)
    leaf = json.loads(entry._inner.canonicalized_body)
    assert leaf["kind"] == "dsse"
    assert set(leaf["spec"]) == {"envelopeHash", "payloadHash", "signatures"}
    (entry_id,) = body
    # An auditor finds the provenance by the image digest it describes, and by identity.
    for query in (
        {"hash": f"sha256:{image}"},
        {"hash": image.upper()},
        {"email": "CI@example.com"},
    ):
        found = await (await client.post("/api/v1/index/retrieve", json=query)).json()
        assert found == [entry_id], query


async def test_index_search_operators(client: TestClient[Any, Any]) -> None:
    alice, bob = Signer("alice@example.com"), Signer("bob@example.com")
    art = b"shared artifact"
    a = await post_entry(client, alice.hashedrekord(art))
    b = await post_entry(client, bob.hashedrekord(art))
    digest = hashlib.sha256(art).hexdigest()

    async def search(query: dict[str, Any]) -> list[str]:
        resp = await client.post("/api/v1/index/retrieve", json=query)
        assert resp.status == 200, await resp.text()
        return sorted(await resp.json())

    assert await search({"hash": f"sha256:{digest}"}) == sorted([a, b])
    assert await search(
        {"hash": f"sha256:{digest}", "email": "alice@example.com", "operator": "and"}
    ) == [a]
    assert await search(
        {"email": "alice@example.com", "operator": "or", "hash": "sha256:" + "0" * 64}
    ) == [a]
    cert_pem = alice.cert.public_bytes(serialization.Encoding.PEM)
    assert await search(
        {"publicKey": {"format": "x509", "content": base64.b64encode(cert_pem).decode()}}
    ) == [a]
    assert await search({"hash": "sha256:" + "1" * 64}) == []
    bad = await client.post("/api/v1/index/retrieve", json={"hash": "nothex"})
    assert bad.status == 422


async def test_consistency_proof_endpoint(client: TestClient[Any, Any]) -> None:
    signer = Signer()
    roots = {}
    info = await (await client.get("/api/v1/log")).json()
    roots[info["treeSize"]] = bytes.fromhex(info["rootHash"])
    for i in range(2, 8):
        body = await (
            await client.post("/api/v1/log/entries", json=signer.hashedrekord(b"c%d" % i))
        ).json()
        proof = next(iter(body.values()))["verification"]["inclusionProof"]
        roots[proof["treeSize"]] = bytes.fromhex(proof["rootHash"])
    assert sorted(roots) == list(range(1, 8))
    for first in range(1, 8):
        resp = await client.get(f"/api/v1/log/proof?firstSize={first}&lastSize=7")
        assert resp.status == 200
        data = await resp.json()
        assert bytes.fromhex(data["rootHash"]) == roots[7]
        verify_consistency(
            first, 7, [bytes.fromhex(h) for h in data["hashes"]], roots[first], roots[7]
        )
    older = await (await client.get("/api/v1/log/proof?firstSize=2&lastSize=5")).json()
    assert bytes.fromhex(older["rootHash"]) == roots[5]
    beyond = await client.get("/api/v1/log/proof?lastSize=8")
    assert beyond.status == 400
    assert (await beyond.json())["message"] == (
        "the tree size requested(8) was greater than what is currently observable(7)"
    )
    backwards = await client.get("/api/v1/log/proof?firstSize=5&lastSize=3")
    assert (await backwards.json()) == {
        "code": 400,
        "message": "firstSize(5) must be less than lastSize(3)",
    }


async def test_bad_input_is_refused_and_nothing_is_stored(client: TestClient[Any, Any]) -> None:
    signer = Signer()
    good = signer.hashedrekord(b"x")
    wrong_sig = json.loads(json.dumps(good))
    wrong_sig["spec"]["data"]["hash"]["value"] = hashlib.sha256(b"other").hexdigest()
    bad_key = json.loads(json.dumps(good))
    bad_key["spec"]["signature"]["publicKey"]["content"] = base64.b64encode(b"not a key").decode()
    short_digest = json.loads(json.dumps(good))
    short_digest["spec"]["data"]["hash"]["value"] = "abcd"
    cases: list[tuple[bytes, int]] = [
        (b"{not json", 400),
        (json.dumps({"kind": "nosuchkind", "apiVersion": "0.0.1", "spec": {}}).encode(), 422),
        (json.dumps({**good, "apiVersion": "9.9.9"}).encode(), 400),
        (json.dumps(wrong_sig).encode(), 400),
        (json.dumps(bad_key).encode(), 400),
        (json.dumps(short_digest).encode(), 400),
        (b"x" * (65 * 1024), 413),
    ]
    before = await (await client.get("/api/v1/log")).json()
    for raw, status in cases:
        resp = await client.post(
            "/api/v1/log/entries", data=raw, headers={"Content-Type": "application/json"}
        )
        assert resp.status == status, (raw[:80], await resp.text())
        err = await resp.json()
        assert err["code"] in (status, *range(600, 700)), err
        assert err["message"], err
    after = await (await client.get("/api/v1/log")).json()
    assert after["treeSize"] == before["treeSize"] == 1
    assert after["rootHash"] == before["rootHash"]
    # …and it keeps serving.
    assert (await client.post("/api/v1/log/entries", json=good)).status == 201


async def test_unknown_route_and_method(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/nope")
    assert resp.status == 404
    assert (await resp.json())["code"] == 404
    resp = await client.delete("/api/v1/log")
    assert resp.status == 405
    assert "GET" in resp.headers["Allow"]


async def test_intoto_from_sigstore_js_is_logged_and_found_by_subject(
    client: TestClient[Any, Any],
) -> None:
    """intoto 0.0.2 exactly as sigstore-js's CLI builds it; the image digest finds it."""
    signer = Signer()
    image = hashlib.sha256(b"image for intoto").hexdigest()
    payload = material.statement([image])
    payload_type = "application/vnd.in-toto+json"
    sig = signer.key.sign(material.pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
    cert_pem = signer.cert.public_bytes(serialization.Encoding.PEM)
    body = material.intoto_body(payload, payload_type, sig, cert_pem)
    resp = await client.post(
        "/api/v1/log/entries", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    (entry_id,) = created
    leaf = json.loads(base64.b64decode(created[entry_id]["body"]))
    assert leaf["kind"] == "intoto"
    assert "payload" not in leaf["spec"]["content"]["envelope"]
    found = await (await client.post("/api/v1/index/retrieve", json={"hash": image})).json()
    assert found == [entry_id]
    again = await client.post(
        "/api/v1/log/entries", data=body, headers={"Content-Type": "application/json"}
    )
    assert again.status == 409
