"""The TSA over real HTTP (aiohttp), its tokens checked by independent verifiers."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from asn1crypto import tsp
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from services.tsa import keys
from services.tsa.app import create_app, serve
from services.tsa.authority import TimestampAuthority
from tests.serverproc import free_port
from tests.services.tsa.conftest import AiohttpClient, Material
from tests.services.tsa.material import (
    EXTENSION,
    GENERATE,
    LENGTH,
    NOW,
    OID_LONG,
    POLICY,
    TOO_LARGE,
    WEAK,
    FailingKey,
)
from tests.services.tsa.verifiers import (
    der_request,
    json_request,
    openssl_verify,
    rfc3161_client_verify,
    rfc3161ng_verify,
    sigstore_python_verify,
)

DER = "application/timestamp-query"
JSON = "application/json"
UNSUPPORTED = "only [application/json application/timestamp-query] are allowed"


async def stamp(client: TestClient[Any, Any], body: bytes, ctype: str = DER) -> bytes:
    resp = await client.post("/api/v1/timestamp", data=body, headers={"Content-Type": ctype})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/timestamp-reply"
    assert resp.headers["Cache-Control"] == "no-cache"
    return await resp.read()


def _info(resp: bytes) -> Any:
    return tsp.TimeStampResp.load(resp)["time_stamp_token"]["content"]["encap_content_info"][
        "content"
    ].parsed


def _embedded(resp: bytes) -> int:
    certs = tsp.TimeStampResp.load(resp)["time_stamp_token"]["content"]["certificates"]
    return 0 if certs.native is None else len(certs)


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
async def test_der_request_verifies_everywhere(
    client: TestClient[Any, Any],
    material: Material,
    tmp_path: Path,
    hash_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sigstore-python's request shape: DER, random nonce, certReq."""
    _, chain = material
    data = b"signature bytes " + hash_name.encode()
    nonce = 2**70 + 5
    resp = await stamp(client, der_request(data, hash_name, nonce=nonce))
    openssl_verify(tmp_path, resp, chain, NOW, data=data)
    openssl_verify(tmp_path, resp, chain, NOW, digest=hashlib.new(hash_name, data).digest())
    decoded = rfc3161_client_verify(resp, data, chain, nonce=nonce)
    assert decoded.tst_info.nonce == nonce
    assert decoded.tst_info.gen_time == NOW.replace(microsecond=0)
    assert rfc3161ng_verify(resp, data, chain[0], hash_name, nonce, monkeypatch) == NOW.replace(
        microsecond=0
    )
    assert sigstore_python_verify(resp, data, chain, NOW - datetime.timedelta(days=1)) == (
        NOW.replace(microsecond=0)
    )
    assert _embedded(resp) == 1


async def test_tampered_or_foreign_tokens_fail_the_verifiers(
    client: TestClient[Any, Any], material: Material, tmp_path: Path
) -> None:
    """The verifiers above are not vacuous: they refuse wrong data, a wrong nonce, a wrong
    root, a flipped signature bit and a token from before the TSA's validFor window.
    """
    _, chain = material
    resp = await stamp(client, der_request(b"d", nonce=7))
    with pytest.raises(AssertionError, match="FAILED"):
        openssl_verify(tmp_path, resp, chain, NOW, data=b"other")
    with pytest.raises(Exception, match="Mismatch between messages"):
        rfc3161_client_verify(resp, b"other", chain, nonce=7)
    with pytest.raises(Exception, match="Nonce mismatch"):
        rfc3161_client_verify(resp, b"d", chain, nonce=8)
    foreign_root = keys.generate(NOW - datetime.timedelta(days=1))[2][-1]
    with pytest.raises(Exception, match="certificates"):
        rfc3161_client_verify(resp, b"d", [chain[0], foreign_root], nonce=7)
    flipped = bytearray(resp)
    flipped[-5] ^= 0x01  # inside the ECDSA signature, the last element of the token
    with pytest.raises(Exception, match="certificates"):
        rfc3161_client_verify(bytes(flipped), b"d", chain, nonce=7)
    assert sigstore_python_verify(resp, b"d", chain, NOW + datetime.timedelta(seconds=1)) is None


async def test_json_request_as_sigstore_js_sends_it(
    client: TestClient[Any, Any],
    material: Material,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, chain = material
    data = b"sigstore-js signature"
    resp = await stamp(client, json_request(data), JSON)
    assert _embedded(resp) == 0  # certificates: false
    assert _info(resp)["nonce"].native is None
    openssl_verify(tmp_path, resp, chain, NOW, data=data)
    rfc3161_client_verify(resp, data, chain)
    rfc3161ng_verify(resp, data, chain[0], "sha256", None, monkeypatch)
    assert sigstore_python_verify(resp, data, chain, NOW - datetime.timedelta(days=1))


async def test_json_request_with_every_field(
    client: TestClient[Any, Any], material: Material, tmp_path: Path
) -> None:
    _, chain = material
    body = json_request(
        b"x", "sha384", nonce=2**100, certificates=True, tsaPolicyOID="1.3.6.1.4.1.57264.2"
    )
    resp = await stamp(client, body, "application/json; charset=utf-8")
    assert _embedded(resp) == 1
    rfc3161_client_verify(resp, b"x", chain, nonce=2**100)
    openssl_verify(tmp_path, resp, chain, NOW, data=b"x")


async def test_cert_req_controls_embedded_certificates(
    client: TestClient[Any, Any], material: Material, tmp_path: Path
) -> None:
    _, chain = material
    with_certs = await stamp(client, der_request(b"a", cert_req=True))
    without = await stamp(client, der_request(b"a", cert_req=False))
    assert _embedded(with_certs) == 1
    assert _embedded(without) == 0
    for resp in (with_certs, without):  # verifiable either way with the chain in hand
        openssl_verify(tmp_path, resp, chain, NOW, data=b"a")
        rfc3161_client_verify(resp, b"a", chain)


async def test_policy_accepted_and_refused(
    aiohttp_client: AiohttpClient, material: Material
) -> None:
    authority = TimestampAuthority(*material, accepted_policies=["1.2.3.4"])
    client = await aiohttp_client(create_app(authority, clock=lambda: NOW))
    resp = await stamp(client, der_request(b"p", policy="1.2.3.4"))
    rfc3161_client_verify(resp, b"p", material[1], policy="1.2.3.4")
    default = await stamp(client, der_request(b"p"))
    assert _info(default)["policy"].dotted == "1.3.6.1.4.1.57264.2"
    via_json = await stamp(client, json_request(b"p", tsaPolicyOID="1.2.3.4"), JSON)
    assert _info(via_json)["policy"].dotted == "1.2.3.4"
    refused = await client.post(
        "/api/v1/timestamp",
        data=der_request(b"p", policy="1.2.3.5"),
        headers={"Content-Type": DER},
    )
    assert refused.status == 400
    assert await refused.json() == {"code": 400, "message": POLICY}


async def test_gen_time_follows_the_clock(
    aiohttp_client: AiohttpClient, authority: TimestampAuthority
) -> None:
    times = iter(
        [
            datetime.datetime(2030, 1, 2, 3, 4, 5, 999999, tzinfo=datetime.UTC),
            datetime.datetime(2030, 1, 2, 3, 4, 6, tzinfo=datetime.UTC),
        ]
    )
    client = await aiohttp_client(create_app(authority, clock=lambda: next(times)))
    first = _info(await stamp(client, der_request(b"t")))["gen_time"]
    second = _info(await stamp(client, der_request(b"t")))["gen_time"]
    assert first.contents == b"20300102030405Z"  # truncated, not rounded up
    assert second.contents == b"20300102030406Z"


async def test_serials_are_unique(client: TestClient[Any, Any]) -> None:
    serials = set()
    for _ in range(30):
        serials.add(_info(await stamp(client, der_request(b"s")))["serial_number"].native)
    assert len(serials) == 30


async def _chunked(body: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(body), 256 * 1024):
        yield body[i : i + 256 * 1024]


BAD_INPUTS = [
    pytest.param(b"not der", DER, 400, GENERATE, id="not-der"),
    pytest.param(b"", DER, 400, GENERATE, id="empty"),
    pytest.param(der_request(b"x") + b"\x00", DER, 400, GENERATE, id="trailing-bytes"),
    pytest.param(der_request(b"x", "sha1"), DER, 400, WEAK, id="sha1"),
    pytest.param(der_request(b"x", "sha224"), DER, 400, GENERATE, id="sha224"),
    pytest.param(der_request(b"", digest=b"\x01" * 20), DER, 400, LENGTH, id="imprint-length"),
    pytest.param(der_request(b"x", policy="1.2.3.4"), DER, 400, POLICY, id="policy"),
    pytest.param(
        der_request(
            b"x", extensions=[{"extn_id": "1.2.3.4", "critical": False, "extn_value": b"\x05\x00"}]
        ),
        DER,
        400,
        EXTENSION,
        id="extensions",
    ),
    pytest.param(b"{", JSON, 400, GENERATE, id="json-syntax"),
    pytest.param(json_request(b"x", "sha1"), JSON, 400, WEAK, id="json-sha1"),
    pytest.param(json_request(b"x", "md5"), JSON, 400, GENERATE, id="json-md5"),
    pytest.param(
        json.dumps({"artifactHash": "AAAA", "hashAlgorithm": "sha256"}).encode(),
        JSON,
        400,
        LENGTH,
        id="json-length",
    ),
    pytest.param(json_request(b"x", tsaPolicyOID="1.2.3.4"), JSON, 400, POLICY, id="json-policy"),
    pytest.param(
        json_request(b"x", tsaPolicyOID=".".join(["1"] * 129)), JSON, 400, OID_LONG, id="oid-129"
    ),
    pytest.param(json_request(b"x", p=" " * 1024), JSON, 400, TOO_LARGE, id="json-over-1024"),
    pytest.param(der_request(b"x"), "text/plain", 415, UNSUPPORTED, id="text-plain"),
    pytest.param(der_request(b"x"), "application/xml", 415, UNSUPPORTED, id="application-xml"),
    pytest.param(
        der_request(b"x"), "application/octet-stream", 415, UNSUPPORTED, id="octet-stream"
    ),
    pytest.param(b"x" * (1024 * 1024 + 1), DER, 413, "request body too large", id="over-1MiB"),
]


@pytest.mark.parametrize(("body", "ctype", "status", "message"), BAD_INPUTS)
async def test_bad_input_then_still_serving(
    client: TestClient[Any, Any], body: bytes, ctype: str, status: int, message: str
) -> None:
    resp = await client.post("/api/v1/timestamp", data=body, headers={"Content-Type": ctype})
    assert resp.status == status
    assert resp.content_type == "application/json"
    doc = await resp.json()
    assert doc["code"] == status
    assert message in doc["message"]
    await stamp(client, der_request(b"after"))  # the service keeps serving


async def test_chunked_body_over_the_limit_is_413(client: TestClient[Any, Any]) -> None:
    """No Content-Length to check up front: the limit holds while reading."""
    resp = await client.post(
        "/api/v1/timestamp",
        data=_chunked(b"\x30" * (1024 * 1024 + 1)),
        headers={"Content-Type": DER},
    )
    assert resp.status == 413
    assert (await resp.json())["code"] == 413
    await stamp(client, der_request(b"after"))


async def test_chunked_body_under_the_limit_is_read_whole(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/api/v1/timestamp", data=_chunked(der_request(b"c")), headers={"Content-Type": DER}
    )
    assert resp.status == 200


async def test_missing_content_type_is_415(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/api/v1/timestamp", data=der_request(b"x"), skip_auto_headers=["Content-Type"]
    )
    assert resp.status == 415


async def test_a_smaller_body_limit(
    aiohttp_client: AiohttpClient, authority: TimestampAuthority
) -> None:
    client = await aiohttp_client(create_app(authority, clock=lambda: NOW, max_body=100))
    small = await client.post(
        "/api/v1/timestamp", data=der_request(b"x"), headers={"Content-Type": DER}
    )
    assert small.status == 200
    big = await client.post("/api/v1/timestamp", data=b"\x00" * 101, headers={"Content-Type": DER})
    assert big.status == 413


async def test_signing_failure_is_500_json_and_the_app_stays_up(
    aiohttp_client: AiohttpClient, material: Material
) -> None:
    key, chain = material
    client = await aiohttp_client(
        create_app(TimestampAuthority(FailingKey(key), chain), clock=lambda: NOW)
    )
    resp = await client.post(
        "/api/v1/timestamp", data=der_request(b"x"), headers={"Content-Type": DER}
    )
    assert resp.status == 500
    assert await resp.json() == {"code": 500, "message": GENERATE}
    assert (await client.get("/api/v1/timestamp/certchain")).status == 200


async def test_certchain(client: TestClient[Any, Any], material: Material) -> None:
    resp = await client.get("/api/v1/timestamp/certchain")
    assert resp.status == 200
    assert resp.content_type == "application/pem-certificate-chain"
    assert resp.headers["Cache-Control"] == "max-age=86400, immutable"
    chain = x509.load_pem_x509_certificates(await resp.read())
    assert chain == material[1]  # leaf first, root last
    eku = chain[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]


async def test_ping(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/ping")
    assert (resp.status, await resp.text()) == (200, "pong")


async def test_serve_generates_then_reloads_keys(tmp_path: Path) -> None:
    """``serve`` on a real socket: first start generates the keys, a restart reuses them."""
    chains = []
    for _ in range(2):
        port = free_port()
        started = asyncio.Event()
        task = asyncio.create_task(serve(tmp_path, "127.0.0.1", port, started=started))
        await asyncio.wait_for(started.wait(), 10)
        try:
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{port}/api/v1/timestamp"
                async with session.get(f"{url}/certchain") as r:
                    chain = x509.load_pem_x509_certificates(await r.read())
                async with session.post(
                    url, data=der_request(b"live", nonce=3), headers={"Content-Type": DER}
                ) as r:
                    assert r.status == 200
                    resp = await r.read()
            decoded = rfc3161_client_verify(resp, b"live", chain, nonce=3)
            now = datetime.datetime.now(datetime.UTC)
            assert abs((decoded.tst_info.gen_time - now).total_seconds()) < 60
            chains.append(chain)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert chains[0] == chains[1]
    assert (tmp_path / "tsa" / keys.KEY_FILE).stat().st_mode & 0o777 == 0o600
