"""Token verification against a live issuer on 127.0.0.1: every refusal, and what must pass."""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.ca import oidc
from services.ca.config import FulcioConfig
from services.ca.errors import InvalidIdentityToken, UnknownIssuer
from services.ca.oidc import Claims, IssuerVerifier, TokenVerifier
from tests.services.ca.conftest import NOW, config_json
from tests.services.ca.oidc_issuer import (
    EC384_KEY,
    EC_KEY,
    ED_KEY,
    FOREIGN_RSA_KEY,
    RSA_KEY,
    Issuer,
    IssuerServer,
    claims_for,
    hmac_signed,
    public_jwk,
    sign,
    unsigned,
)

GENERIC = "There was an error processing the identity token"
MINUTE = datetime.timedelta(minutes=1)


@pytest.fixture
async def issuer(idp: IssuerServer) -> Issuer:
    """An issuer with an RSA and an EC key that advertises every algorithm."""
    iss = idp.add("main", rsa1=RSA_KEY, ec1=EC_KEY)
    iss.algorithms = ["RS256", "PS256", "ES256", "EdDSA"]
    return iss


@pytest.fixture
async def verifier(issuer: Issuer) -> AsyncIterator[TokenVerifier]:
    """A verifier whose only issuer is ``issuer`` (type uri, so no email rules apply)."""
    config = config_json({issuer.url: {"Type": "uri", "SubjectDomain": "http://127.0.0.1"}})
    async with TokenVerifier(config) as v:
        yield v


async def refused(verifier: TokenVerifier, token: str, now: datetime.datetime = NOW) -> str:
    """Assert the token is refused with the generic message; return the logged detail."""
    with pytest.raises(InvalidIdentityToken) as info:
        await verifier.verify(token, now)
    assert str(info.value) == GENERIC
    assert info.value.status == 400
    assert info.value.grpc_code == 3
    return info.value.detail


# --- what must pass --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kid", "alg"),
    [("rsa1", "RS256"), ("rsa1", "PS256"), ("ec1", "ES256")],
)
async def test_valid_tokens_verify(
    verifier: TokenVerifier, issuer: Issuer, kid: str, alg: str
) -> None:
    token = sign(claims_for(issuer, NOW, sub="http://127.0.0.1/x"), issuer.keys[kid], kid, alg)
    claims = await verifier.verify(token, NOW)
    assert isinstance(claims, Claims)
    assert claims.iss == issuer.url
    assert claims.subject == "http://127.0.0.1/x"
    assert claims.issuer.issuer_url == issuer.url


async def test_eddsa_and_token_without_kid(verifier: TokenVerifier, issuer: Issuer) -> None:
    issuer.keys["ed1"] = ED_KEY
    await verifier.verify(sign(claims_for(issuer, NOW), ED_KEY, "ed1", "EdDSA"), NOW)
    # No kid: every compatible key is tried, as go-oidc does.
    await verifier.verify(sign(claims_for(issuer, NOW), EC_KEY, None, "ES256"), NOW)


async def test_audience_list_and_leeways(verifier: TokenVerifier, issuer: Issuer) -> None:
    key = issuer.keys["rsa1"]
    await verifier.verify(
        sign(claims_for(issuer, NOW, audience=["other", "sigstore"]), key, "rsa1", "RS256"), NOW
    )
    # nbf up to 5 minutes in the future is tolerated (go-oidc), exp exactly now still valid.
    t = int(NOW.timestamp())
    await verifier.verify(sign(claims_for(issuer, NOW, nbf=t + 290), key, "rsa1", "RS256"), NOW)
    await verifier.verify(sign(claims_for(issuer, NOW, exp=t), key, "rsa1", "RS256"), NOW)


async def test_keys_are_cached(verifier: TokenVerifier, issuer: Issuer) -> None:
    for _ in range(3):
        await verifier.verify(
            sign(claims_for(issuer, NOW), issuer.keys["rsa1"], "rsa1", "RS256"), NOW
        )
    assert (issuer.discovery_hits, issuer.jwks_hits) == (1, 1)


async def test_rotated_key_is_fetched_on_unknown_kid(
    verifier: TokenVerifier, issuer: Issuer
) -> None:
    await verifier.verify(sign(claims_for(issuer, NOW), RSA_KEY, "rsa1", "RS256"), NOW)
    issuer.keys["ec384"] = EC384_KEY
    issuer.algorithms = ["RS256", "ES384"]
    later = NOW + 2 * MINUTE
    await verifier.verify(sign(claims_for(issuer, later), EC384_KEY, "ec384", "ES384"), later)
    assert issuer.jwks_hits == 2


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose signature is checked from now on, in order."""
    checked: list[str] = []
    original = IssuerVerifier._verify_signature

    def counting(self: IssuerVerifier, token: str, *args: Any) -> bytes | None:
        checked.append(token)
        return original(self, token, *args)

    monkeypatch.setattr(IssuerVerifier, "_verify_signature", counting)
    return checked


async def test_a_verified_token_is_remembered_but_its_claims_are_checked_each_time(
    verifier: TokenVerifier, issuer: Issuer, signature_checks: list[str]
) -> None:
    token = sign(claims_for(issuer, NOW), RSA_KEY, "rsa1", "RS256")
    first = await verifier.verify(token, NOW)
    assert await verifier.verify(token, NOW + MINUTE) == first
    assert signature_checks == [token]
    # The same claims under another signature (another byte string) are verified on their own.
    other = sign(claims_for(issuer, NOW), EC_KEY, "ec1", "ES256")
    await verifier.verify(other, NOW)
    assert signature_checks == [token, other]
    # Time is each request's: past exp (10 minutes) the remembered token is refused...
    assert "expired" in await refused(verifier, token, NOW + 11 * MINUTE)
    # ...and before its nbf too (beyond the 5 minutes of leeway).
    assert "not valid before" in await refused(verifier, other, NOW - 6 * MINUTE)
    # A refusal forgets it: the next use checks the signature again.
    await verifier.verify(token, NOW)
    assert signature_checks == [token, other, token]


async def test_a_refused_token_is_not_remembered(
    verifier: TokenVerifier, issuer: Issuer, signature_checks: list[str]
) -> None:
    token = sign(claims_for(issuer, NOW, audience="other"), RSA_KEY, "rsa1", "RS256")
    for _ in range(2):
        assert "aud" in await refused(verifier, token)
    assert signature_checks == [token, token]


async def test_remembered_tokens_lapse_when_the_keys_are_fetched_again(
    verifier: TokenVerifier, issuer: Issuer, signature_checks: list[str]
) -> None:
    token = sign(claims_for(issuer, NOW), RSA_KEY, "rsa1", "RS256")
    await verifier.verify(token, NOW)
    # A token with an unknown kid makes the verifier fetch the JWKS again; the issuer has
    # meanwhile withdrawn the key that signed the remembered token.
    del issuer.keys["rsa1"]
    issuer.keys["ec384"] = EC384_KEY
    issuer.algorithms = ["ES256", "ES384"]
    later = NOW + 2 * MINUTE
    await verifier.verify(sign(claims_for(issuer, later), EC384_KEY, "ec384", "ES384"), later)
    assert issuer.jwks_hits == 2
    assert "does not verify" in await refused(verifier, token, later)
    assert signature_checks.count(token) == 2


async def test_the_memory_of_tokens_is_bounded(
    verifier: TokenVerifier,
    issuer: Issuer,
    signature_checks: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(oidc, "_VERIFIED_CACHE_SIZE", 2)
    tokens = [sign(claims_for(issuer, NOW, sub=f"s{i}"), EC_KEY, "ec1", "ES256") for i in range(3)]
    for token in tokens:
        await verifier.verify(token, NOW)
    await verifier.verify(tokens[2], NOW)  # remembered
    await verifier.verify(tokens[0], NOW)  # the least recent: forgotten, checked again
    assert signature_checks == [*tokens, tokens[0]]
    # Above the size cap a token is verified every time (real tokens are 1-3 KiB).
    big = sign(claims_for(issuer, NOW, pad="x" * 9000), EC_KEY, "ec1", "ES256")
    for _ in range(2):
        await verifier.verify(big, NOW)
    assert signature_checks[-2:] == [big, big]


# --- refusals ----------------------------------------------------------------------------------


async def test_expired(verifier: TokenVerifier, issuer: Issuer) -> None:
    token = sign(claims_for(issuer, NOW - 11 * MINUTE), RSA_KEY, "rsa1", "RS256")
    assert "expired" in await refused(verifier, token)
    t = int(NOW.timestamp())
    token = sign(claims_for(issuer, NOW, exp=t - 1), RSA_KEY, "rsa1", "RS256")
    assert "expired" in await refused(verifier, token)
    token = sign(claims_for(issuer, NOW, exp=None), RSA_KEY, "rsa1", "RS256")
    assert "exp" in await refused(verifier, token)


async def test_not_yet_valid(verifier: TokenVerifier, issuer: Issuer) -> None:
    t = int(NOW.timestamp())
    token = sign(claims_for(issuer, NOW, nbf=t + 301), RSA_KEY, "rsa1", "RS256")
    assert "not valid before" in await refused(verifier, token)
    token = sign(claims_for(issuer, NOW, iat=t + 3600, nbf=None), RSA_KEY, "rsa1", "RS256")
    assert "future" in await refused(verifier, token)


async def test_wrong_audience(verifier: TokenVerifier, issuer: Issuer) -> None:
    for aud in ("other", ["a", "b"], 5):
        token = sign(claims_for(issuer, NOW, audience=aud), RSA_KEY, "rsa1", "RS256")  # type: ignore[arg-type]
        assert "aud" in await refused(verifier, token)


async def test_unknown_issuer(verifier: TokenVerifier, issuer: Issuer) -> None:
    token = sign(claims_for(issuer, NOW, iss="https://elsewhere.example"), RSA_KEY, "rsa1", "RS256")
    with pytest.raises(UnknownIssuer) as info:
        await verifier.verify(token, NOW)
    assert str(info.value) == GENERIC
    assert issuer.discovery_hits == 0


async def test_token_of_another_configured_issuer(idp: IssuerServer) -> None:
    a = idp.add("a", k=RSA_KEY)
    b = idp.add("b", k=FOREIGN_RSA_KEY)
    config = config_json(
        {
            a.url: {"Type": "uri", "SubjectDomain": "http://127.0.0.1"},
            b.url: {"Type": "uri", "SubjectDomain": "http://127.0.0.1"},
        }
    )
    async with TokenVerifier(config) as verifier:
        # b's key, b's kid, but claiming to be a: verified with a's keys only.
        token = sign(claims_for(a, NOW), FOREIGN_RSA_KEY, "k", "RS256")
        assert "does not verify" in await refused(verifier, token)
        await verifier.verify(sign(claims_for(b, NOW), FOREIGN_RSA_KEY, "k", "RS256"), NOW)


async def test_discovery_issuer_must_match(idp: IssuerServer) -> None:
    liar = idp.add("liar", k=RSA_KEY)
    liar.discovery_issuer = "http://127.0.0.1/someone-else"
    config = config_json({liar.url: {"Type": "uri", "SubjectDomain": "http://127.0.0.1"}})
    async with TokenVerifier(config) as verifier:
        token = sign(claims_for(liar, NOW), RSA_KEY, "k", "RS256")
        assert "discovery issuer" in await refused(verifier, token)


async def test_iss_claim_must_equal_issuer_exactly(idp: IssuerServer) -> None:
    main = idp.add("main", k=RSA_KEY)
    config = config_json(
        {main.url: {"Type": "uri", "SubjectDomain": "http://127.0.0.1"}},
        meta={f"{idp.base_url}/main*": {"Type": "uri", "SubjectDomain": "http://127.0.0.1"}},
    )
    async with TokenVerifier(config) as verifier:
        # Selected by the meta pattern, so discovery runs for ".../mainx", which does not exist.
        token = sign(claims_for(main, NOW, iss=main.url + "x"), RSA_KEY, "k", "RS256")
        await refused(verifier, token)


async def test_alg_none(verifier: TokenVerifier, issuer: Issuer) -> None:
    for header in ({"alg": "none", "kid": "rsa1"}, {"alg": "None"}, {"kid": "rsa1"}):
        token = unsigned(claims_for(issuer, NOW), header)
        assert "algorithm" in await refused(verifier, token)


async def test_hs256_with_the_issuers_public_key(verifier: TokenVerifier, issuer: Issuer) -> None:
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_bytes = json.dumps(public_jwk(RSA_KEY, "rsa1")).encode()
    for secret in (pem, jwk_bytes):
        token = hmac_signed(claims_for(issuer, NOW), secret, "rsa1")
        assert "HS256" in await refused(verifier, token)


async def test_foreign_key_with_the_issuers_kid(verifier: TokenVerifier, issuer: Issuer) -> None:
    await verifier.verify(sign(claims_for(issuer, NOW), RSA_KEY, "rsa1", "RS256"), NOW)
    forged = sign(claims_for(issuer, NOW), FOREIGN_RSA_KEY, "rsa1", "RS256")
    assert "does not verify" in await refused(verifier, forged, NOW + 2 * MINUTE)
    # The failure made us re-read the JWKS once (the IdP might have rotated)...
    assert issuer.jwks_hits == 2
    # ...but a flood of forgeries inside the refresh interval costs the IdP nothing more.
    for _ in range(5):
        await refused(verifier, forged, NOW + 2 * MINUTE)
    assert issuer.jwks_hits == 2


async def test_algorithm_bound_to_key(verifier: TokenVerifier, issuer: Issuer) -> None:
    # The RSA key may sign RS256/PS256; an ES256 header with that kid finds no EC key.
    token = sign(claims_for(issuer, NOW), RSA_KEY, "rsa1", "RS256")
    _header, payload, signature = token.split(".")
    swapped = sign(claims_for(issuer, NOW), EC_KEY, "rsa1", "ES256")
    assert "does not verify" in await refused(verifier, swapped)
    # A signature moved under another header fails too.
    other_header = sign(claims_for(issuer, NOW), RSA_KEY, "rsa1", "PS256").split(".")[0]
    await refused(verifier, f"{other_header}.{payload}.{signature}")


async def test_algorithm_not_advertised(idp: IssuerServer) -> None:
    plain = idp.add("plain", rsa1=RSA_KEY, ec1=EC_KEY)  # advertises nothing: RS256 only
    config = config_json({plain.url: {"Type": "uri", "SubjectDomain": "http://127.0.0.1"}})
    async with TokenVerifier(config) as verifier:
        await verifier.verify(sign(claims_for(plain, NOW), RSA_KEY, "rsa1", "RS256"), NOW)
        await refused(verifier, sign(claims_for(plain, NOW), EC_KEY, "ec1", "ES256"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_jwks_unreachable(idp: IssuerServer) -> None:
    broken = idp.add("broken", k=RSA_KEY)
    broken.jwks_uri = f"http://127.0.0.1:{_closed_port()}/jwks"
    config = config_json({broken.url: {"Type": "uri", "SubjectDomain": "http://127.0.0.1"}})
    async with TokenVerifier(config) as verifier:
        token = sign(claims_for(broken, NOW), RSA_KEY, "k", "RS256")
        assert "unavailable" in await refused(verifier, token)
        # Fails fast inside the refresh interval instead of hitting the IdP again.
        await refused(verifier, token, NOW + 10 * datetime.timedelta(seconds=1))
        assert broken.discovery_hits == 1
        # After the interval the IdP is tried again, and a repaired IdP is used.
        broken.jwks_uri = None
        await verifier.verify(token, NOW + 2 * MINUTE)
        assert broken.discovery_hits == 2


async def test_issuer_unreachable() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/gone"
    config = config_json({url: {"Type": "uri", "SubjectDomain": "http://127.0.0.1"}})
    issuer = Issuer("gone", url)
    async with TokenVerifier(config) as verifier:
        await refused(verifier, sign(claims_for(issuer, NOW), RSA_KEY, "k", "RS256"))


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"email_verified": False}, "not verified"),
        ({"email_verified": "false"}, "not verified"),
        ({"email_verified": None}, "not verified"),
        ({"email": None, "email_verified": True}, "missing email"),
    ],
)
async def test_email_must_be_verified(
    idp: IssuerServer, extra: dict[str, Any], reason: str
) -> None:
    mail = idp.add("mail", k=RSA_KEY)
    config = config_json({mail.url: {"Type": "email"}})
    claims = claims_for(mail, NOW, **{"email": "a@example.com", **extra})
    async with TokenVerifier(config) as verifier:
        assert reason in await refused(verifier, sign(claims, RSA_KEY, "k", "RS256"))


async def test_email_verified_forms_and_skip(idp: IssuerServer) -> None:
    mail = idp.add("mail", k=RSA_KEY)
    entra = idp.add("entra", k=RSA_KEY)
    config = config_json(
        {mail.url: {"Type": "email"}, entra.url: {"Type": "email", "SkipEmailVerification": True}}
    )
    async with TokenVerifier(config) as verifier:
        for verified in (True, "true", "True"):
            claims = claims_for(mail, NOW, email="a@example.com", email_verified=verified)
            await verifier.verify(sign(claims, RSA_KEY, "k", "RS256"), NOW)
        claims = claims_for(entra, NOW, email="a@example.com")
        await verifier.verify(sign(claims, RSA_KEY, "k", "RS256"), NOW)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        "e30=.e30.x",  # padded base64
        "!!!.e30.x",
        "W10.W10.x",  # JSON arrays, not objects
        "e30.e30.x",  # no iss
        "x" * 40_000,
    ],
)
async def test_malformed(verifier: TokenVerifier, token: str) -> None:
    await refused(verifier, token)


async def test_meta_issuer_wildcards(idp: IssuerServer) -> None:
    tenant = idp.add("tenant-a1", k=RSA_KEY)
    config = config_json(
        {},
        meta={f"{idp.base_url}/tenant-*": {"Type": "uri", "SubjectDomain": "http://127.0.0.1"}},
    )
    async with TokenVerifier(config) as verifier:
        claims = await verifier.verify(sign(claims_for(tenant, NOW), RSA_KEY, "k", "RS256"), NOW)
        assert claims.issuer.issuer_url == tenant.url
        # "*" matches one URL part only and the pattern is anchored (GHSA-59jp-pj84-45mr).
        for iss in (f"{tenant.url}/extra", f"{tenant.url}.evil.example", f"x{tenant.url}"):
            token = sign(claims_for(tenant, NOW, iss=iss), RSA_KEY, "k", "RS256")
            with pytest.raises(UnknownIssuer):
                await verifier.verify(token, NOW)


async def test_offline_jwks_file(tmp_path: Path) -> None:
    # The issuer URL points nowhere: the keys come from the file and nothing is fetched.
    url = f"http://127.0.0.1:{_closed_port()}/airgap"
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(EC_KEY, "ec1"), public_jwk(RSA_KEY, "r")]}))
    config: FulcioConfig = config_json(
        {url: {"Type": "uri", "SubjectDomain": "http://127.0.0.1", "JWKSFile": str(jwks)}}
    )
    issuer = Issuer("airgap", url)
    async with TokenVerifier(config) as verifier:
        claims = await verifier.verify(sign(claims_for(issuer, NOW), EC_KEY, "ec1", "ES256"), NOW)
        assert claims.iss == url
        forged = sign(claims_for(issuer, NOW), FOREIGN_RSA_KEY, "r", "RS256")
        await refused(verifier, forged)


async def test_prefetch_reports_unreachable_issuers(idp: IssuerServer) -> None:
    good = idp.add("good", k=RSA_KEY)
    gone = f"http://127.0.0.1:{_closed_port()}/gone"
    config = config_json(
        {
            good.url: {"Type": "uri", "SubjectDomain": "http://127.0.0.1"},
            gone: {"Type": "uri", "SubjectDomain": "http://127.0.0.1"},
        }
    )
    async with TokenVerifier(config) as verifier:
        failures = await verifier.prefetch(NOW)
        assert list(failures) == [gone]
        assert (good.discovery_hits, good.jwks_hits) == (1, 1)
        await verifier.verify(sign(claims_for(good, NOW), RSA_KEY, "k", "RS256"), NOW)
        assert good.jwks_hits == 1


def _tls_material(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    """A private CA and a server certificate for 127.0.0.1: (server context, CA PEM)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "private IdP CA")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context, ca.public_bytes(serialization.Encoding.PEM).decode()


async def test_https_issuer_with_private_ca(tmp_path: Path) -> None:
    server_context, ca_pem = _tls_material(tmp_path)
    server = IssuerServer()
    await server.start(server_context)
    try:
        private = server.add("private", k=RSA_KEY)
        token = sign(claims_for(private, NOW), RSA_KEY, "k", "RS256")
        entry = {"Type": "uri", "SubjectDomain": "https://127.0.0.1", "AllowInsecureHTTP": False}
        async with TokenVerifier(config_json({private.url: entry})) as verifier:
            # Without the IdP's CA the TLS handshake fails: no keys, no token.
            assert "unavailable" in await refused(verifier, token)
        config = config_json({private.url: {**entry, "CACert": ca_pem}})
        async with TokenVerifier(config) as verifier:
            assert (await verifier.verify(token, NOW)).iss == private.url
    finally:
        await server.stop()


async def test_refusal_reason_is_logged_at_debug_only(
    verifier: TokenVerifier, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    token = sign(claims_for(issuer, NOW, audience="other"), RSA_KEY, "rsa1", "RS256")
    with caplog.at_level(logging.DEBUG, logger="services.ca.oidc"):
        await refused(verifier, token)
    [record] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert "aud" in record.getMessage()
    assert token not in caplog.text
