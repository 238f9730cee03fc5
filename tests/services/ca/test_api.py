"""The Fulcio API end to end in one app: a live OIDC issuer, the CA, and its CT log.

Certificates are requested with sigstore-python's own Fulcio client (CSR form), and with the
publicKeyRequest forms sigstore-js (token in the body) and cosign (Bearer header) send; they are
checked with sigstore-python's SCT verification and pyca's chain verifier.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sigstore._internal.fulcio.client import FulcioClient
from sigstore._internal.sct import verify_sct
from sigstore._internal.trust import CTKeyring, Keyring
from sigstore.oidc import IdentityToken
from sigstore_models.common import v1 as common_v1

from services.app import Settings, create_app
from services.ca.keys import load_or_create as load_ca
from services.db import Database
from services.keys import load_private_key
from tests.services.ca.checks import public_key_request
from tests.services.ca.oidc_issuer import (
    Issuer,
    IssuerServer,
    claims_for,
    sign,
    write_email_issuer_config,
)
from tests.services.log.rekor.test_api import AiohttpClient


@pytest.fixture
async def fulcio(
    aiohttp_client: AiohttpClient,
    db: Database,
    tmp_path: Path,
    issuer: tuple[IssuerServer, Issuer, ec.EllipticCurvePrivateKey],
) -> tuple[TestClient[Any, Any], Path]:
    _, acme, _ = issuer
    config = write_email_issuer_config(tmp_path / "fulcio.json", acme.url)
    data = tmp_path / "data"
    settings = Settings(
        data_dir=data, public_url="http://ca.example", oidc_config=config, batch_max_age=0.005
    )
    return await aiohttp_client(create_app(settings, database=db)), data


def token(issuer: tuple[IssuerServer, Issuer, ec.EllipticCurvePrivateKey], **extra: Any) -> str:
    _, acme, key = issuer
    claims = claims_for(
        acme,
        datetime.datetime.now(datetime.UTC),
        email="dev@example.com",
        email_verified=True,
        **extra,
    )
    return sign(claims, key, "k1", "ES256")


async def issue(
    client: TestClient[Any, Any],
    issuer: tuple[IssuerServer, Issuer, ec.EllipticCurvePrivateKey],
    key: ec.EllipticCurvePrivateKey,
    signed_over: bytes = b"dev@example.com",
) -> int:
    """Ask for a certificate for ``key`` as sigstore-js does (the token in the body); the
    status of the answer."""
    body = public_key_request(key, signed_over)
    body["credentials"] = {"oidcIdentityToken": token(issuer)}
    return (await client.post("/api/v2/signingCert", json=body)).status


def ct_keyring(data: Path) -> CTKeyring:
    key = load_private_key(data / "keys" / "ctlog.pem")
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pk = common_v1.PublicKey(
        raw_bytes=base64.b64encode(spki),
        key_details=common_v1.PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
    )
    return CTKeyring(Keyring([pk]))


def check_chain(pems: list[str], data: Path) -> x509.Certificate:
    chain = [x509.load_pem_x509_certificate(p.encode()) for p in pems]
    assert len(chain) == 3
    leaf = chain[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.RFC822Name) == ["dev@example.com"]
    verify_sct(leaf, chain[1:], ct_keyring(data))
    ca = load_ca(data, datetime.datetime.now(datetime.UTC))
    assert chain[1:] == list(ca.chain)
    return leaf


async def test_csr_form_with_sigstore_python_client(
    fulcio: tuple[TestClient[Any, Any], Path],
    issuer: tuple[IssuerServer, Issuer, ec.EllipticCurvePrivateKey],
) -> None:
    client, data = fulcio
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    url = str(client.make_url("")).rstrip("/")
    fulcio_client = FulcioClient(url)
    identity = IdentityToken(token(issuer), client_id="sigstore")
    resp = await asyncio.to_thread(fulcio_client.signing_cert.post, csr, identity)
    pems = [resp.cert.public_bytes(serialization.Encoding.PEM).decode()] + [
        c.public_bytes(serialization.Encoding.PEM).decode() for c in resp.chain
    ]
    leaf = check_chain(pems, data)
    assert leaf.public_key() == key.public_key()
    sth = await (await client.get("/ct/v1/get-sth")).json()
    assert sth["tree_size"] == 2  # the CT log's genesis entry, then the precertificate


@pytest.mark.parametrize("form", ["sigstore-js (token in body)", "cosign (Bearer header)"])
async def test_public_key_request_forms(
    fulcio: tuple[TestClient[Any, Any], Path],
    issuer: tuple[IssuerServer, Issuer, ec.EllipticCurvePrivateKey],
    form: str,
) -> None:
    client, data = fulcio
    key = ec.generate_private_key(ec.SECP256R1())
    signed_over = b"dev@example.com" if form.startswith("sigstore-js") else b"subject-1"
    body = public_key_request(key, signed_over)
    headers = {}
    if form.startswith("sigstore-js"):
        body["credentials"] = {"oidcIdentityToken": token(issuer)}
    else:
        headers["Authorization"] = f"Bearer {token(issuer)}"
    resp = await client.post("/api/v2/signingCert", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    pems = (await resp.json())["signedCertificateEmbeddedSct"]["chain"]["certificates"]
    assert all(p.endswith("-----END CERTIFICATE-----") for p in pems)
    check_chain(pems, data)


async def test_legacy_v1_form(
    fulcio: tuple[TestClient[Any, Any], Path],
    issuer: tuple[IssuerServer, Issuer, ec.EllipticCurvePrivateKey],
) -> None:
    # cosign 1.x: the key's PEM base64-encoded again, the proof as signedEmailAddress; 201 with
    # the PEM chain as text, leaf first, each PEM ending in its newline but the last.
    client, data = fulcio
    key = ec.generate_private_key(ec.SECP256R1())
    form = public_key_request(key, b"subject-1")["publicKeyRequest"]
    body = {
        "publicKey": {"content": base64.b64encode(form["publicKey"]["content"].encode()).decode()},
        "signedEmailAddress": form["proofOfPossession"],
    }
    resp = await client.post(
        "/api/v1/signingCert", json=body, headers={"Authorization": f"Bearer {token(issuer)}"}
    )
    assert resp.status == 201, await resp.text()
    assert resp.content_type == "application/pem-certificate-chain"
    text = await resp.text()
    chain = x509.load_pem_x509_certificates(text.encode())
    pems = [c.public_bytes(serialization.Encoding.PEM).decode() for c in chain]
    assert text == "".join(pems).strip()
    assert check_chain(pems, data).public_key() == key.public_key()


async def test_refusals_issue_nothing(
    fulcio: tuple[TestClient[Any, Any], Path],
    issuer: tuple[IssuerServer, Issuer, ec.EllipticCurvePrivateKey],
) -> None:
    client, _ = fulcio
    key = ec.generate_private_key(ec.SECP256R1())
    pub = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    good_pop = base64.b64encode(key.sign(b"dev@example.com", ec.ECDSA(hashes.SHA256()))).decode()
    bad_pop = base64.b64encode(key.sign(b"someone-else", ec.ECDSA(hashes.SHA256()))).decode()
    cases = [
        (
            token(issuer, aud="not-sigstore"),
            good_pop,
            "There was an error processing the identity token",
        ),
        ("not.a.jwt", good_pop, "There was an error processing the identity token"),
        (token(issuer), bad_pop, "The signature supplied in the request could not be verified"),
    ]
    for jwt, pop, message in cases:
        body = {
            "credentials": {"oidcIdentityToken": jwt},
            "publicKeyRequest": {"publicKey": {"content": pub}, "proofOfPossession": pop},
        }
        resp = await client.post("/api/v2/signingCert", json=body)
        assert resp.status == 400
        assert await resp.json() == {"code": 3, "message": message, "details": []}
    malformed = await client.post(
        "/api/v2/signingCert", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert malformed.status == 400
    assert (await (await client.get("/ct/v1/get-sth")).json())["tree_size"] == 1  # genesis


async def test_a_refused_token_is_a_warning_with_the_reason(
    fulcio: tuple[TestClient[Any, Any], Path],
    issuer: tuple[IssuerServer, Issuer, ec.EllipticCurvePrivateKey],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client learns only Fulcio's fixed message; the operator's log says why."""
    client, _ = fulcio
    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = {
        "credentials": {"oidcIdentityToken": token(issuer, aud="not-sigstore\nforged line")},
        "publicKeyRequest": {
            "publicKey": {"content": pub.decode()},
            "proofOfPossession": base64.b64encode(
                key.sign(b"dev@example.com", ec.ECDSA(hashes.SHA256()))
            ).decode(),
        },
    }
    with caplog.at_level(logging.WARNING, logger="services.ca.api"):
        resp = await client.post("/api/v2/signingCert", json=body)
    assert (await resp.json())["message"] == "There was an error processing the identity token"
    (record,) = [r for r in caplog.records if r.name == "services.ca.api"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith("identity token refused: ")
    assert "does not contain 'sigstore'" in message
    assert "\n" not in message  # the claim's line break cannot forge a log line


async def test_trust_bundle_and_configuration(
    fulcio: tuple[TestClient[Any, Any], Path],
    issuer: tuple[IssuerServer, Issuer, ec.EllipticCurvePrivateKey],
) -> None:
    client, data = fulcio
    bundle = await (await client.get("/api/v2/trustBundle")).json()
    (chain,) = bundle["chains"]
    certs = [x509.load_pem_x509_certificate(p.encode()) for p in chain["certificates"]]
    ca = load_ca(data, datetime.datetime.now(datetime.UTC))
    assert certs == list(ca.chain)
    conf = await (await client.get("/api/v2/configuration")).json()
    (entry,) = conf["issuers"]
    assert entry["issuerUrl"] == issuer[1].url
    assert entry["audience"] == "sigstore"
    assert entry["challengeClaim"] == "email"


async def test_metrics_count_certificates_by_issuer_and_timestamps(
    fulcio: tuple[TestClient[Any, Any], Path],
    issuer: tuple[IssuerServer, Issuer, ec.EllipticCurvePrivateKey],
) -> None:
    """What an operator sizes the CA and the TSA by: certificates issued per identity provider
    (refusals count nothing) and timestamps signed."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.services.tsa.verifiers import der_request

    client, _ = fulcio
    _, acme, _ = issuer
    key = ec.generate_private_key(ec.SECP256R1())
    for _ in range(2):
        assert await issue(client, issuer, key) == 200
    assert await issue(client, issuer, key, b"someone else") == 400
    stamped = await client.post(
        "/api/v1/timestamp",
        data=der_request(b"stamped"),
        headers={"Content-Type": "application/timestamp-query"},
    )
    assert stamped.status == 200

    text = await (await client.get("/metrics")).text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("sigstead_ca_certificates_issued_total", (("issuer", acme.url),))] == 2
    assert samples[("sigstead_tsa_timestamps_issued_total", ())] == 1
