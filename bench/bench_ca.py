"""Certificates per second: the CA's two signatures in process and over HTTP, with the key in
process or in a PKCS#11 token (SoftHSM2), beside the raw ECDSA P-384 signing floor.

Run: ``python -m bench.bench_ca [--n 300] [--requests 300] [--concurrency 16]``

In process, one certificate is what ``signingCert`` signs: the precertificate, the SCT (over the
precertificate entry, by a P-256 log key, as the CT log does) and the final certificate. The
floor is the two P-384 signatures a CA must make per certificate, measured in the same run.
Over HTTP, ``sigstead up`` on SQLite issues through the whole path: OIDC token check (the dev
issuer's offline JWKS), proof of possession, precertificate, CT log commit, final certificate.
The requests come from this process with aiohttp, sharing the machine's two cores with the server.
SoftHSM2 signs in software in the calling process, so a network HSM adds its round trip on top
of the PKCS#11 figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from bench.timing import rate
from services.ca import devissuer
from services.ca import keys as ca_keys
from services.ca import pkcs11 as ca_pkcs11
from services.ca.certificate import build_final_certificate, build_precertificate
from services.ca.keys import CAKeyMaterial
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
