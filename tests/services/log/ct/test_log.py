"""The CT log on both databases; SCTs judged by sigstore-python's own SCT verification."""

from __future__ import annotations

import base64
import datetime
import hashlib
import struct
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sigstore._internal.sct import verify_sct
from sigstore._internal.trust import CTKeyring, Keyring
from sigstore_models.common import v1 as common_v1

from clients.merkle import verify_consistency, verify_inclusion
from services.db import Database
from services.log.checkpoint import CheckpointSigner
from services.log.ct import rfc6962
from services.log.ct.log import CT_LOG, CTLog, add_routes, genesis_entry
from services.log.sequencer import Sequencer
from services.log.sqlstore import SQLLogStore
from tests.services.log.rekor.test_api import AiohttpClient

NOW = datetime.datetime.now(datetime.UTC)


class CA:
    """A root and intermediate, and leaf/precert issuance as Fulcio does it."""

    def __init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.key = ec.generate_private_key(ec.SECP384R1())
        self.root = self._ca("root", self.root_key, self.root_key, None)
        self.intermediate = self._ca("intermediate", self.key, self.root_key, self.root)

    def _ca(
        self,
        cn: str,
        key: ec.EllipticCurvePrivateKey,
        signer: ec.EllipticCurvePrivateKey,
        issuer: x509.Certificate | None,
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer.subject if issuer else name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(signer, hashes.SHA256())
        )

    def builder(self, email: str) -> x509.CertificateBuilder:
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.intermediate.subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW)
            .not_valid_after(NOW + datetime.timedelta(minutes=10))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
        )

    def chain_b64(self, leaf: x509.Certificate) -> list[str]:
        return [
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
            for c in (leaf, self.intermediate, self.root)
        ]


@pytest.fixture
async def ct(
    aiohttp_client: AiohttpClient, db: Database, tmp_path: Path
) -> tuple[TestClient[Any, Any], CA, CheckpointSigner]:
    ca = CA()
    signer = CheckpointSigner("ct.example", ec.generate_private_key(ec.SECP256R1()))
    store = SQLLogStore(db)
    seq = Sequencer(
        store,
        tree_id=77,
        origin="ct.example",
        signer=signer,
        genesis=lambda now: genesis_entry([ca.intermediate, ca.root], now),
        batch_max_age=0.005,
    )
    app = web.Application()
    sub = add_routes(app)

    async def ctx(_app: web.Application) -> Any:
        await seq.start()
        sub[CT_LOG] = CTLog(sequencer=seq, store=store, signer=signer, roots=[ca.root])
        yield
        await seq.stop()

    app.cleanup_ctx.append(ctx)
    return await aiohttp_client(app), ca, signer


def ct_keyring(signer: CheckpointSigner) -> CTKeyring:
    spki = signer.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return CTKeyring(
        Keyring(
            [
                common_v1.PublicKey(
                    raw_bytes=base64.b64encode(spki),
                    key_details=common_v1.PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
                )
            ]
        )
    )


def parse_sct(body: dict[str, Any]) -> rfc6962.SignedCertificateTimestamp:
    """Turn add-chain JSON back into an SCT."""
    sct = rfc6962.SignedCertificateTimestamp.from_add_chain_response(body)
    assert (sct.hash_algorithm, sct.signature_algorithm) == (4, 3)  # SHA-256, ECDSA
    return sct


async def test_precert_flow_sct_verifies_in_sigstore_python(
    ct: tuple[TestClient[Any, Any], CA, CheckpointSigner],
) -> None:
    client, ca, signer = ct
    builder = ca.builder("dev@example.com")
    poison = x509.PrecertPoison()
    precert = builder.add_extension(poison, critical=True).sign(ca.key, hashes.SHA384())
    resp = await client.post("/ct/v1/add-pre-chain", json={"chain": ca.chain_b64(precert)})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert base64.b64decode(body["id"]) == signer.key_id
    # Final certificate: the precert's extensions minus poison, plus the SCT list, same order.
    final = builder.add_extension(
        x509.UnrecognizedExtension(
            x509.ObjectIdentifier(rfc6962.SCT_LIST_OID),
            rfc6962.sct_list_extension_value([parse_sct(body)]),
        ),
        critical=False,
    ).sign(ca.key, hashes.SHA384())
    assert rfc6962.precert_tbs(precert.public_bytes(serialization.Encoding.DER)) == (
        _tbs_without_sct_list(final)
    )
    verify_sct(final, [ca.intermediate, ca.root], ct_keyring(signer))
    # The same precert again: the original SCT, no second entry.
    again = await (
        await client.post("/ct/v1/add-pre-chain", json={"chain": ca.chain_b64(precert)})
    ).json()
    assert again["timestamp"] == body["timestamp"]
    assert (await (await client.get("/ct/v1/get-sth")).json())["tree_size"] == 2  # genesis + 1


def _tbs_without_sct_list(cert: x509.Certificate) -> bytes:
    from asn1crypto import x509 as asn1_x509

    tbs = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))[
        "tbs_certificate"
    ]
    new = tbs.copy()
    new["extensions"] = asn1_x509.Extensions(
        [e for e in tbs["extensions"] if e["extn_id"].dotted != rfc6962.SCT_LIST_OID]
    )
    der: bytes = new.dump()
    return der


async def test_sth_proofs_and_entries(
    ct: tuple[TestClient[Any, Any], CA, CheckpointSigner],
) -> None:
    client, ca, signer = ct
    for i in range(5):
        cert = ca.builder(f"u{i}@example.com").sign(ca.key, hashes.SHA384())
        resp = await client.post("/ct/v1/add-chain", json={"chain": ca.chain_b64(cert)})
        assert resp.status == 200, await resp.text()
    sth = await (await client.get("/ct/v1/get-sth")).json()
    assert sth["tree_size"] == 6  # the genesis entry and five certificates
    root = base64.b64decode(sth["sha256_root_hash"])
    sig = base64.b64decode(sth["tree_head_signature"])
    assert isinstance(signer.public_key, ec.EllipticCurvePublicKey)
    signer.public_key.verify(
        sig[4:], rfc6962.tree_head_input(sth["timestamp"], 6, root), ec.ECDSA(hashes.SHA256())
    )
    entries = (await (await client.get("/ct/v1/get-entries?start=0&end=10")).json())["entries"]
    assert len(entries) == 6
    for index, e in enumerate(entries):
        leaf = base64.b64decode(e["leaf_input"])
        leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()
        q = base64.b64encode(leaf_hash).decode()
        proof = await (
            await client.get("/ct/v1/get-proof-by-hash", params={"hash": q, "tree_size": "6"})
        ).json()
        assert proof["leaf_index"] == index
        verify_inclusion(
            leaf_hash, index, 6, [base64.b64decode(h) for h in proof["audit_path"]], root
        )
    # extra_data of an x509 entry: the chain above its certificate.
    above_leaf = [c.public_bytes(serialization.Encoding.DER) for c in (ca.intermediate, ca.root)]
    for e in entries[1:]:
        assert base64.b64decode(e["extra_data"]) == rfc6962.certificate_chain(above_leaf)
    roots = (await (await client.get("/ct/v1/get-roots")).json())["certificates"]
    assert base64.b64decode(roots[0]) == ca.root.public_bytes(serialization.Encoding.DER)


async def test_genesis_entry_is_the_ca_certificate(
    ct: tuple[TestClient[Any, Any], CA, CheckpointSigner],
) -> None:
    """Index 0 is the log's own: an x509 entry of the CA's signing certificate, chain above."""
    client, ca, _ = ct
    (entry,) = (await (await client.get("/ct/v1/get-entries?start=0&end=0")).json())["entries"]
    leaf = base64.b64decode(entry["leaf_input"])
    version, leaf_type, _timestamp, entry_type = struct.unpack(">BBQH", leaf[:12])
    assert (version, leaf_type, entry_type) == (0, 0, rfc6962.EntryType.X509)
    intermediate = ca.intermediate.public_bytes(serialization.Encoding.DER)
    assert leaf[12:15] == len(intermediate).to_bytes(3, "big")
    assert leaf[15 : 15 + len(intermediate)] == intermediate
    assert base64.b64decode(entry["extra_data"]) == rfc6962.certificate_chain(
        [ca.root.public_bytes(serialization.Encoding.DER)]
    )
    # A client's certificate never takes index 0.
    cert = ca.builder("first@example.com").sign(ca.key, hashes.SHA384())
    await client.post("/ct/v1/add-chain", json={"chain": ca.chain_b64(cert)})
    sth = await (await client.get("/ct/v1/get-sth")).json()
    assert sth["tree_size"] == 2


async def test_consistency(ct: tuple[TestClient[Any, Any], CA, CheckpointSigner]) -> None:
    client, ca, _ = ct
    roots = {}
    sth = await (await client.get("/ct/v1/get-sth")).json()
    roots[sth["tree_size"]] = base64.b64decode(sth["sha256_root_hash"])
    for i in range(2, 7):
        cert = ca.builder(f"c{i}@example.com").sign(ca.key, hashes.SHA384())
        await client.post("/ct/v1/add-chain", json={"chain": ca.chain_b64(cert)})
        sth = await (await client.get("/ct/v1/get-sth")).json()
        roots[sth["tree_size"]] = base64.b64decode(sth["sha256_root_hash"])
    assert sorted(roots) == list(range(1, 7))
    for first in range(1, 7):
        data = await (await client.get(f"/ct/v1/get-sth-consistency?first={first}&second=6")).json()
        verify_consistency(
            first, 6, [base64.b64decode(h) for h in data["consistency"]], roots[first], roots[6]
        )


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/ct/v1/add-chain", {"chain": ["!!"]}, 400),
        ("/ct/v1/add-chain", {"nochain": []}, 400),
        ("/ct/v1/add-chain", {"chain": []}, 400),
    ],
)
async def test_bad_chains(
    ct: tuple[TestClient[Any, Any], CA, CheckpointSigner],
    path: str,
    body: dict[str, Any],
    status: int,
) -> None:
    client, _, _ = ct
    resp = await client.post(path, json=body)
    assert resp.status == status
    assert resp.content_type == "text/plain"


async def test_chain_rules(ct: tuple[TestClient[Any, Any], CA, CheckpointSigner]) -> None:
    client, ca, _ = ct
    plain = ca.builder("a@example.com").sign(ca.key, hashes.SHA384())
    precert = (
        ca.builder("b@example.com")
        .add_extension(x509.PrecertPoison(), critical=True)
        .sign(ca.key, hashes.SHA384())
    )
    assert (
        await client.post("/ct/v1/add-pre-chain", json={"chain": ca.chain_b64(plain)})
    ).status == 400
    assert (
        await client.post("/ct/v1/add-chain", json={"chain": ca.chain_b64(precert)})
    ).status == 400
    stranger = CA()
    foreign = stranger.builder("c@example.com").sign(stranger.key, hashes.SHA384())
    resp = await client.post("/ct/v1/add-chain", json={"chain": stranger.chain_b64(foreign)})
    assert resp.status == 400
    assert "trusted root" in await resp.text()
    assert (await (await client.get("/ct/v1/get-sth")).json())["tree_size"] == 1  # genesis only
    bad = await client.get("/ct/v1/get-entries?start=1&end=2")
    assert bad.status == 400
