"""The TSA over HTTP, with tokens checked by three independent verifiers.

openssl ts -verify (Debian openssl), rfc3161-client (what sigstore-python uses) and rfc3161ng.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import rfc3161_client
import rfc3161ng
from aiohttp import web
from aiohttp.test_utils import TestClient
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.tsa import keys
from services.tsa.app import TSA, TSA_CLOCK, add_routes
from services.tsa.authority import TimestampAuthority

AiohttpClient = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]
NOW = datetime.datetime(2026, 11, 22, 12, 34, 56, 789000, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TimestampAuthority]:
    d = tmp_path_factory.mktemp("tsa")
    key, chain = keys.load_or_create(d, NOW - datetime.timedelta(days=1))
    return d, TimestampAuthority(key, chain)


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, material: tuple[Path, TimestampAuthority]
) -> TestClient[Any, Any]:
    app = web.Application()
    app[TSA] = material[1]
    app[TSA_CLOCK] = lambda: NOW
    add_routes(app)
    return await aiohttp_client(app)


def der_request(
    data: bytes,
    hash_name: str = "sha256",
    *,
    nonce: int | None = None,
    cert_req: bool = True,
    policy: str | None = None,
    digest: bytes | None = None,
) -> bytes:
    req: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {
            "hash_algorithm": {"algorithm": hash_name},
            "hashed_message": digest
            if digest is not None
            else hashlib.new(hash_name, data).digest(),
        },
        "cert_req": cert_req,
    }
    if nonce is not None:
        req["nonce"] = nonce
    if policy is not None:
        req["req_policy"] = policy
    return bytes(tsp.TimeStampReq(req).dump())


async def stamp(client: TestClient[Any, Any], body: bytes, ctype: str) -> bytes:
    resp = await client.post("/api/v1/timestamp", data=body, headers={"Content-Type": ctype})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/timestamp-reply"
    return await resp.read()


def openssl_verify(tmp: Path, resp: bytes, data: bytes, chain: list[x509.Certificate]) -> None:
    (tmp / "resp.der").write_bytes(resp)
    (tmp / "data").write_bytes(data)
    (tmp / "root.pem").write_bytes(chain[-1].public_bytes(serialization.Encoding.PEM))
    (tmp / "leaf.pem").write_bytes(chain[0].public_bytes(serialization.Encoding.PEM))
    out = subprocess.run(
        [
            "openssl",
            "ts",
            "-verify",
            "-data",
            str(tmp / "data"),
            "-in",
            str(tmp / "resp.der"),
            "-CAfile",
            str(tmp / "root.pem"),
            "-untrusted",
            str(tmp / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Verification: OK" in out.stdout


def rfc3161_client_verify(
    resp: bytes, data: bytes, chain: list[x509.Certificate], nonce: int | None
) -> rfc3161_client.TimeStampResponse:
    decoded = rfc3161_client.decode_timestamp_response(resp)
    builder = (
        rfc3161_client.VerifierBuilder()
        .add_root_certificate(chain[-1])
        .tsa_certificate(chain[0])
        .policy_id(x509.ObjectIdentifier("1.3.6.1.4.1.57264.2"))
    )
    if nonce is not None:
        builder = builder.nonce(nonce)
    builder.build().verify_message(decoded, data)
    return decoded


class _EcdsaAsRsa:
    """rfc3161ng's ``check_timestamp`` knows only RSA: it ends with
    ``public_key.verify(sig, data, PKCS1v15(), hash)``. This adapter keeps every other step of
    its pipeline (token decoding, imprint, nonce, content type, messageDigest attribute, the
    re-encoding of the signed attributes) and performs that last step as ECDSA instead.
    """

    def __init__(self, cert: x509.Certificate) -> None:
        self._cert = cert

    def public_key(self) -> _EcdsaAsRsa:
        return self

    def verify(self, signature: bytes, data: bytes, _padding: object, algorithm: Any) -> None:
        key = self._cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(signature, data, ec.ECDSA(algorithm))


def rfc3161ng_verify(
    resp: bytes,
    data: bytes,
    chain: list[x509.Certificate],
    hash_name: str,
    nonce: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = tsp.TimeStampResp.load(resp)["time_stamp_token"].dump()
    monkeypatch.setattr(rfc3161ng.api, "load_certificate", lambda *_: _EcdsaAsRsa(chain[0]))
    assert rfc3161ng.check_timestamp(token, data=data, hashname=hash_name, nonce=nonce)
    with pytest.raises(Exception):  # noqa: B017,PT011 -- rfc3161ng raises bare ValueError/InvalidSignature
        rfc3161ng.check_timestamp(token, data=data + b"!", hashname=hash_name, nonce=nonce)


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
async def test_der_request_verifies_in_three_verifiers(
    client: TestClient[Any, Any],
    material: tuple[Path, TimestampAuthority],
    tmp_path: Path,
    hash_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chain = material[1].chain
    data = b"signature bytes " + hash_name.encode()
    resp = await stamp(
        client, der_request(data, hash_name, nonce=2**70 + 5), "application/timestamp-query"
    )
    openssl_verify(tmp_path, resp, data, chain)
    decoded = rfc3161_client_verify(resp, data, chain, 2**70 + 5)
    assert decoded.tst_info.gen_time == NOW.replace(microsecond=0)
    rfc3161ng_verify(resp, data, chain, hash_name, 2**70 + 5, monkeypatch)


async def test_json_request_as_sigstore_js_sends_it(
    client: TestClient[Any, Any],
    material: tuple[Path, TimestampAuthority],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chain = material[1].chain
    data = b"sigstore-js signature"
    body = json.dumps(
        {
            "artifactHash": base64.b64encode(hashlib.sha256(data).digest()).decode(),
            "hashAlgorithm": "sha256",
        }
    ).encode()
    resp = await stamp(client, body, "application/json")
    openssl_verify(tmp_path, resp, data, chain)
    rfc3161_client_verify(resp, data, chain, None)
    rfc3161ng_verify(resp, data, chain, "sha256", None, monkeypatch)
    with_nonce = json.dumps(
        {
            "artifactHash": base64.b64encode(hashlib.sha256(data).digest()).decode(),
            "hashAlgorithm": "sha256",
            "nonce": 42,
            "certificates": True,
        }
    ).encode()
    decoded = rfc3161_client.decode_timestamp_response(
        await stamp(client, with_nonce, "application/json")
    )
    assert decoded.tst_info.nonce == 42


async def test_certificates_only_when_asked(client: TestClient[Any, Any]) -> None:
    with_certs = await stamp(
        client, der_request(b"a", cert_req=True), "application/timestamp-query"
    )
    without = await stamp(client, der_request(b"a", cert_req=False), "application/timestamp-query")

    def signed(r: bytes) -> Any:
        return tsp.TimeStampResp.load(r)["time_stamp_token"]["content"]

    assert len(signed(with_certs)["certificates"]) == 1
    assert signed(without)["certificates"].native is None


async def test_serials_are_unique_and_signer_is_issuer_and_serial(
    client: TestClient[Any, Any],
) -> None:
    serials = set()
    for _ in range(20):
        resp = await stamp(client, der_request(b"s"), "application/timestamp-query")
        token = tsp.TimeStampResp.load(resp)["time_stamp_token"]
        info = token["content"]["encap_content_info"]["content"].parsed
        serials.add(info["serial_number"].native)
        signer = token["content"]["signer_infos"][0]
        assert signer["sid"].name == "issuer_and_serial_number"
        attrs = {a["type"].native for a in signer["signed_attrs"]}
        assert {"content_type", "message_digest", "signing_certificate_v2"} <= attrs
    assert len(serials) == 20


async def test_certchain_endpoint(
    client: TestClient[Any, Any], material: tuple[Path, TimestampAuthority]
) -> None:
    resp = await client.get("/api/v1/timestamp/certchain")
    assert resp.status == 200
    assert resp.content_type == "application/pem-certificate-chain"
    chain = x509.load_pem_x509_certificates(await resp.read())
    assert chain == material[1].chain
    eku = chain[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical
    assert list(eku.value) == [x509.oid.ExtendedKeyUsageOID.TIME_STAMPING]


@pytest.mark.parametrize(
    ("body", "ctype", "status", "message"),
    [
        (b"not der", "application/timestamp-query", 400, "Error generating timestamp response"),
        (
            der_request(b"x") + b"\x00",
            "application/timestamp-query",
            400,
            "Error generating timestamp response",
        ),
        (
            der_request(b"x", "sha1"),
            "application/timestamp-query",
            400,
            "Weak hash algorithm in timestamp request",
        ),
        (
            der_request(b"x", "sha224"),
            "application/timestamp-query",
            400,
            "Error generating timestamp response",
        ),
        (
            der_request(b"x", digest=b"\x01" * 20),
            "application/timestamp-query",
            400,
            "Message digest has incorrect length for specified algorithm",
        ),
        (
            der_request(b"x", policy="1.2.3.4"),
            "application/timestamp-query",
            400,
            "unaccepted policy: requested TSA policy is not supported by the TSA",
        ),
        (b"{", "application/json", 400, "Error generating timestamp response"),
        (
            json.dumps({"artifactHash": "AAAA", "hashAlgorithm": "md5"}).encode(),
            "application/json",
            400,
            "Weak hash algorithm in timestamp request",
        ),
        (
            json.dumps({"artifactHash": "AAAA", "hashAlgorithm": "sha256"}).encode(),
            "application/json",
            400,
            "Message digest has incorrect length for specified algorithm",
        ),
        (b"{" + b" " * 2000 + b"}", "application/json", 400, "timestamp request is too large"),
        (b"x", "text/plain", 415, "unsupported content type 'text/plain'"),
        (
            b"x" * (1024 * 1024 + 1),
            "application/timestamp-query",
            413,
            "timestamp request is too large",
        ),
    ],
)
async def test_bad_input(
    client: TestClient[Any, Any], body: bytes, ctype: str, status: int, message: str
) -> None:
    resp = await client.post("/api/v1/timestamp", data=body, headers={"Content-Type": ctype})
    assert resp.status == status
    assert await resp.json() == {"code": status, "message": message}
    # …and the service keeps serving.
    await stamp(client, der_request(b"after"), "application/timestamp-query")


def test_accepted_policy_list(material: tuple[Path, TimestampAuthority]) -> None:
    d, _ = material
    key, chain = keys.load(d / "tsa.key", d / "tsa-chain.pem")
    custom = TimestampAuthority(key, chain, accepted_policies=["1.2.3.4"])
    from services.tsa.authority import TimestampRequest

    resp = custom.stamp(TimestampRequest("sha256", b"\x00" * 32, policy="1.2.3.4"), NOW)
    info = tsp.TimeStampResp.load(resp)["time_stamp_token"]["content"]["encap_content_info"][
        "content"
    ].parsed
    assert info["policy"].dotted == "1.2.3.4"
