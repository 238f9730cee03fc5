"""Certificates per second: the CA's two signatures in process and over HTTP, with the key in
process or in a PKCS#11 token (SoftHSM2), beside the raw ECDSA P-384 signing floor.

Run: ``python -m bench.bench_ca [--n 300] [--requests 300] [--concurrency 16]``

In process, one certificate is what ``signingCert`` signs: the precertificate, the SCT (over the
precertificate entry, by a P-256 log key, as the CT log does) and the final certificate. The
floor is the two P-384 signatures a CA must make per certificate, measured in the same run.
Then each step of a ``signingCert`` request on its own, as ``CertificateAuthority.issue`` runs
it (without HTTP and without the CT log's commit): what one certificate costs the CA's code.
Over HTTP, ``sigstead up`` on SQLite issues through the whole path: OIDC token check (the dev
issuer's offline JWKS), proof of possession, precertificate, CT log commit, final certificate.
The requests come from this process with aiohttp, sharing the machine's two cores with the server.
SoftHSM2 signs in software in the calling process, so a network HSM adds its round trip on top
of the PKCS#11 figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.timing import rate
from services.ca import devissuer
from services.ca import keys as ca_keys
from services.ca import pkcs11 as ca_pkcs11
from services.ca.api import _public_key
from services.ca.certificate import build_final_certificate, build_precertificate
from services.ca.config import load_config
from services.ca.identity import principal_from_claims
from services.ca.keys import CAKeyMaterial
from services.ca.oidc import Claims, TokenVerifier
from services.log.checkpoint import CheckpointSigner
from services.log.ct import rfc6962
from tests.serverproc import start_server, stop_server
from tests.services.ca.checks import public_key_request, sign_precert
from tests.services.ca.softhsm import MODULE, PIN, TOKEN, SoftHSM, create_token
from tests.services.ca.test_certificate import EMAIL as PRINCIPAL

EMAIL = "bench@example.com"


def floor_rate(n: int, curve: ec.EllipticCurve | None = None) -> float:
    """Two CA signatures over a certificate-sized message: the least a certificate costs
    (P-384 with SHA-384 by default, as Fulcio's CA; P-256 with SHA-256)."""
    key = ec.generate_private_key(curve or ec.SECP384R1())
    tbs = os.urandom(700)
    alg = ec.ECDSA(hashes.SHA256() if key.curve.key_size == 256 else hashes.SHA384())
    return rate(n, lambda: (key.sign(tbs, alg), key.sign(tbs, alg)))


def issue_rate(ca: CAKeyMaterial, n: int) -> float:
    leaf = ec.generate_private_key(ec.SECP256R1()).public_key()

    def one() -> None:
        now = datetime.now(UTC)
        precert = build_precertificate(ca=ca, public_key=leaf, principal=PRINCIPAL, now=now)
        sct = sign_precert(precert, ca, int(now.timestamp() * 1000))
        build_final_certificate(precert, ca=ca, sct=sct)

    one()  # warm-up: first use of the key and the token session
    return rate(n, one)


def step_costs(ca: CAKeyMaterial, issuer_dir: Path, n: int) -> list[tuple[str, float]]:
    """Milliseconds per call of each step of ``CertificateAuthority.issue``, in its order."""
    now = datetime.now(UTC)
    config = load_config(issuer_dir / "oidc.yaml")
    # Distinct tokens (one per identity) pay the signature check; one token used again does not.
    tokens = [devissuer.token(issuer_dir, f"bench{i}@example.com", now) for i in range(n)]
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    body = public_key_request(leaf_key, b"bench0@example.com")
    log_signer = CheckpointSigner("bench", ec.generate_private_key(ec.SECP256R1()))
    key_hash = rfc6962.issuer_key_hash(ca.signing_certificate)

    async def verify_each(verifier: TokenVerifier, todo: list[str]) -> float:
        t = time.perf_counter()
        for token in todo:
            await verifier.verify(token, now)
        return (time.perf_counter() - t) * 1000 / len(todo)

    async def tokens_ms() -> tuple[float, float]:
        async with TokenVerifier(config) as verifier:
            await verifier.verify(tokens[0], now)  # warm-up: the JWKS file, the parsed key
            first = await verify_each(verifier, tokens[1:])
            again = await verify_each(verifier, [tokens[0]] * n)
        return first, again

    async def claims_of(token: str) -> Claims:
        async with TokenVerifier(config) as verifier:
            return await verifier.verify(token, now)

    first, again = asyncio.run(tokens_ms())
    claims = asyncio.run(claims_of(tokens[0]))
    principal = principal_from_claims(claims, config)
    precert = build_precertificate(
        ca=ca, public_key=leaf_key.public_key(), principal=principal, now=now
    )

    def sct() -> rfc6962.SignedCertificateTimestamp:
        tbs = rfc6962.remove_poison(precert.tbs_certificate_bytes)
        leaf = rfc6962.TimestampedEntry(
            0, rfc6962.EntryType.PRECERT, tbs, key_hash
        ).merkle_tree_leaf()
        return rfc6962.SignedCertificateTimestamp(log_signer.key_id, 0, log_signer.sign(leaf))

    the_sct = sct()
    final = build_final_certificate(precert, ca=ca, sct=the_sct)
    pems = [c.public_bytes(serialization.Encoding.PEM).decode().strip() for c in (final, *ca.chain)]

    def ms(fn: Callable[[], object]) -> float:
        return 1000 / rate(n, fn)

    return [
        ("identity token, first use", first),
        ("identity token, used again", again),
        ("claims to identity", ms(lambda: principal_from_claims(claims, config))),
        ("public key, proof of possession", ms(lambda: _public_key(body, principal))),
        (
            "precertificate (CA signature)",
            ms(
                lambda: build_precertificate(
                    ca=ca, public_key=leaf_key.public_key(), principal=principal, now=now
                )
            ),
        ),
        ("CT entry and SCT (log signature)", ms(sct)),
        (
            "final certificate (CA signature)",
            ms(lambda: build_final_certificate(precert, ca=ca, sct=the_sct)),
        ),
        (
            "PEM and JSON reply",
            ms(
                lambda: json.dumps(
                    {
                        "chain": [
                            final.public_bytes(serialization.Encoding.PEM).decode().strip(),
                            *pems[1:],
                        ]
                    }
                )
            ),
        ),
    ]


async def http_rate(url: str, issuer_dir: Path, requests: int, concurrency: int) -> float:
    key = ec.generate_private_key(ec.SECP256R1())
    body = {
        "credentials": {"oidcIdentityToken": devissuer.token(issuer_dir, EMAIL, datetime.now(UTC))},
        **public_key_request(key, EMAIL.encode()),
    }
    todo = iter(range(requests))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in todo:
            async with session.post(f"{url}/api/v2/signingCert", json=body) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"signingCert: {resp.status} {await resp.text()}")
                await resp.read()

    async with aiohttp.ClientSession() as session:
        for _ in range(concurrency):  # warm-up: connections, JWKS file, first CT batch
            async with session.post(f"{url}/api/v2/signingCert", json=body) as resp:
                await resp.read()
        t = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return requests / (time.perf_counter() - t)


def over_http(
    work: Path, name: str, flags: list[str], requests: int, concurrency: int, issuer_dir: Path
) -> float:
    data = work / name
    data.mkdir()
    oidc = issuer_dir / "oidc.yaml"
    server = start_server(data, "--oidc-config", str(oidc), *flags)
    try:
        return asyncio.run(http_rate(server.url, issuer_dir, requests, concurrency))
    finally:
        stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="certificates per in-process run")
    parser.add_argument("--requests", type=int, default=300, help="certificates per HTTP run")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # Before python-pkcs11 first loads the module in this process (and in the servers).
        os.environ["SOFTHSM2_CONF"] = str(work / "softhsm2.conf")
        os.environ[ca_pkcs11.PIN_ENV] = PIN
        token: SoftHSM = create_token(work)
        now = datetime.now(UTC)
        _, soft_key, soft_chain = ca_keys.generate(now)
        software = CAKeyMaterial(soft_key, soft_chain)
        _, p256_key, p256_chain = ca_keys.generate(now, key_type=ca_keys.CAKeyType.ECDSA_P256)
        p256 = CAKeyMaterial(p256_key, p256_chain)
        hsm = ca_pkcs11.load(token.config("ec-p384"), token.chains["ec-p384"], now)

        print(f"in process, {args.n} certificates each (precertificate + SCT + final):")
        rows = [
            ("floor: 2 x ECDSA P-384 sign", floor_rate(args.n)),
            ("software P-384 CA key", issue_rate(software, args.n)),
            ("floor: 2 x ECDSA P-256 sign", floor_rate(args.n, ec.SECP256R1())),
            ("software P-256 CA key (--ca-key-type)", issue_rate(p256, args.n)),
            ("PKCS#11 P-384 key (SoftHSM2)", issue_rate(hsm, args.n)),
        ]
        hsm.close()
        for label, per_second in rows:
            print(f"  {label:<40} {per_second:8.0f}/s  {1000 / per_second:6.2f} ms each")

        issuer_dir = work / "dev-issuer"
        devissuer.init(issuer_dir)
        for name, material in (("P-384", software), ("P-256", p256)):
            steps = step_costs(material, issuer_dir, args.n)
            print(f"\neach step of signingCert in process, {name} CA key, {args.n} calls each:")
            for label, ms in steps:
                print(f"  {label:<40} {ms:6.3f} ms")
            print(f"  {'sum':<40} {sum(ms for label, ms in steps[1:]):6.3f} ms (token used again)")
        print(
            f"\nover HTTP (sigstead up, SQLite), {args.requests} requests, "
            f"concurrency {args.concurrency}:"
        )
        generated = over_http(work, "generated", [], args.requests, args.concurrency, issuer_dir)
        generated_p256 = over_http(
            work,
            "generated-p256",
            ["--ca-key-type", "ecdsa-p256"],
            args.requests,
            args.concurrency,
            issuer_dir,
        )
        pkcs11_flags = [
            "--ca-pkcs11-module",
            str(MODULE),
            "--ca-pkcs11-token",
            TOKEN,
            "--ca-pkcs11-key-label",
            "ec-p384",
            "--ca-chain",
            str(token.chains["ec-p384"]),
        ]
        in_token = over_http(
            work, "pkcs11", pkcs11_flags, args.requests, args.concurrency, issuer_dir
        )
        print(f"  {'generated P-384 CA key':<34} {generated:8.0f}/s")
        print(f"  {'generated P-256 CA key':<34} {generated_p256:8.0f}/s")
        print(f"  {'PKCS#11 P-384 key (SoftHSM2)':<34} {in_token:8.0f}/s")


if __name__ == "__main__":
    main()
