"""The CA key in a real SoftHSM2 token: issuance through the HTTP API and the CLI, and refusals.

One token per test session, created by ``softhsm2-util`` in a temporary directory, holds EC P-256,
EC P-384 and RSA-3072 keys generated inside it; each key gets an intermediate certificate from a
software root. Certificates are requested with sigstore-python's Fulcio client and checked with
sigstore-python's SCT verification and pyca's chain verifier.
"""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sigstore._internal.fulcio.client import FulcioClient
from sigstore._internal.sct import verify_sct
from sigstore.oidc import IdentityToken

from services.app import Settings, create_app
from services.ca import pkcs11 as ca_pkcs11
from services.ca.api import CA
from services.ca.certificate import build_final_certificate, build_precertificate
from services.ca.errors import CABackendError
from services.ca.keys import CAHash, CAKeyError, CAKeyMaterial
from services.db import Database
from tests.services.ca.checks import pyca_verify_chain, sign_precert, sigstore_verify_sct
from tests.services.ca.oidc_issuer import (
    Issuer,
    IssuerServer,
    claims_for,
    sign,
    write_email_issuer_config,
)
from tests.services.ca.softhsm import (
    KEY_TYPES,
    MODULE,
    PIN,
    TOKEN,
    SoftHSM,
    SoftHSMMissing,
    create_token,
)
from tests.services.ca.test_api import ct_keyring
from tests.services.ca.test_certificate import EMAIL
from tests.services.log.rekor.test_api import AiohttpClient
from tests.services.test_cli import oidc_config_file, serve_ca

# The token's keys by label: KEYS, plus a second P-256 key to pair with the wrong chain.
_KEY_TYPES = {**KEY_TYPES, "ec-p256-b": KEY_TYPES["ec-p256"]}
KEYS = tuple(KEY_TYPES)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSM]:
    """A SoftHSM2 token with keys generated inside it, and a chain file for each key."""
    base = tmp_path_factory.mktemp("softhsm")
    with pytest.MonkeyPatch.context() as mp:
        # SoftHSM reads its config at C_Initialize, which python-pkcs11 does once per process:
        # the token directory has to exist and be named before any test loads the module.
        mp.setenv("SOFTHSM2_CONF", str(base / "softhsm2.conf"))
        try:
            token = create_token(base, _KEY_TYPES)
        except SoftHSMMissing as exc:
            pytest.fail(str(exc))
        yield token


@pytest.fixture
def pin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ca_pkcs11.PIN_ENV, PIN)


NOW = datetime.datetime.now(datetime.UTC)


def _load(softhsm: SoftHSM, label: str, chain: str | None = None, **extra: Any) -> CAKeyMaterial:
    return ca_pkcs11.load(softhsm.config(label, **extra), softhsm.chains[chain or label], NOW)


# -- issuance ---------------------------------------------------------------------------------


@pytest.mark.parametrize("label", KEYS)
@pytest.mark.usefixtures("pin_env")
async def test_issues_through_the_http_api(
    aiohttp_client: AiohttpClient,
    db: Database,
    tmp_path: Path,
    softhsm: SoftHSM,
    issuer: tuple[IssuerServer, Issuer, ec.EllipticCurvePrivateKey],
    label: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, acme, idp_key = issuer
    config = write_email_issuer_config(tmp_path / "fulcio.json", acme.url)
    data = tmp_path / "data"
    settings = Settings(
        data_dir=data,
        public_url="http://ca.example",
        oidc_config=config,
        batch_max_age=0.005,
        ca_chain=softhsm.chains[label],
        ca_pkcs11=softhsm.config(label),
    )
    # The CA and the log it needs; nothing else, so "no CA generated" below is about the CA alone.
    app = create_app(settings, database=db, components=("log", "ca"))
    client: TestClient[Any, Any] = await aiohttp_client(app)
    assert client.app is not None
    ca = client.app[CA].ca
    assert isinstance(ca.key, ca_pkcs11.Pkcs11Signer)
    assert PIN not in repr(ca.key) + repr(ca) + repr(settings)
    # Each token signature blocks its thread for the HSM's round trip: never the event loop's.
    signed_on: list[threading.Thread] = []
    token_sign = ca.key.sign_certificate

    def recording(builder: x509.CertificateBuilder, algorithm: CAHash) -> x509.Certificate:
        signed_on.append(threading.current_thread())
        return token_sign(builder, algorithm)

    monkeypatch.setattr(ca.key, "sign_certificate", recording)

    leaf_key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(leaf_key, hashes.SHA256())
    )
    claims = claims_for(
        acme, datetime.datetime.now(datetime.UTC), email="dev@example.com", email_verified=True
    )
    identity = IdentityToken(sign(claims, idp_key, "k1", "ES256"), client_id="sigstore")
    url = str(client.make_url("")).rstrip("/")
    resp = await asyncio.to_thread(FulcioClient(url).signing_cert.post, csr, identity)

    leaf = resp.cert
    assert resp.chain == list(ca.chain)
    assert leaf.public_key() == leaf_key.public_key()
    assert leaf.signature_hash_algorithm is not None
    assert leaf.signature_hash_algorithm.name == ca.signature_hash.name
    verify_sct(leaf, resp.chain, ct_keyring(data))
    pyca_verify_chain(leaf, ca, datetime.datetime.now(datetime.UTC))
    assert not (data / "ca").exists()  # no software CA was generated beside the token's
    assert len(signed_on) == 2  # the precertificate and the final certificate
    assert threading.main_thread() not in signed_on  # the test's event loop runs there


def test_signs_again_after_losing_the_session(softhsm: SoftHSM, pin_env: None) -> None:
    ca = _load(softhsm, "ec-p384")
    try:
        assert isinstance(ca.key, ca_pkcs11.Pkcs11Signer)
        # What an HSM restart or fail-over does to an open session, done by hand.
        session = ca.key._session
        assert session is not None
        session.close()
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        # The precertificate flow without HTTP: both signatures come from the token.
        precert = build_precertificate(
            ca=ca, public_key=leaf_key.public_key(), principal=EMAIL, now=NOW
        )
        sct = sign_precert(precert, ca, int(NOW.timestamp() * 1000))
        final = build_final_certificate(precert, ca=ca, sct=sct)
        sigstore_verify_sct(final, ca)
        pyca_verify_chain(final, ca, NOW)
    finally:
        ca.close()
    with pytest.raises(CABackendError) as err:
        build_precertificate(ca=ca, public_key=leaf_key.public_key(), principal=EMAIL, now=NOW)
    assert "closed" in err.value.detail


def test_a_pin_refused_after_a_lost_session_is_not_tried_again(
    softhsm: SoftHSM, pin_env: None
) -> None:
    token = pkcs11.lib(str(MODULE)).get_token(token_label=TOKEN)
    changed = "pin-changed-by-the-hsm-admin"
    ca = _load(softhsm, "ec-p256")
    leaf = ec.generate_private_key(ec.SECP256R1()).public_key()
    try:
        assert isinstance(ca.key, ca_pkcs11.Pkcs11Signer)
        # The operator rotates the PIN under the running CA (a session without a PIN of its own
        # shares the CA's login), then the HSM drops the CA's session.
        with token.open(rw=True) as admin:
            admin.set_pin(PIN, changed)
        session = ca.key._session
        assert session is not None
        session.close()
        with pytest.raises(CABackendError) as err:
            build_precertificate(ca=ca, public_key=leaf, principal=EMAIL, now=NOW)
        assert "rejected the PIN" in err.value.detail
        # A second request does not log in again: HSMs lock a PIN after a few failures.
        with pytest.raises(CABackendError) as err:
            build_precertificate(ca=ca, public_key=leaf, principal=EMAIL, now=NOW)
        assert "unavailable until restart" in err.value.detail
    finally:
        ca.close()
        with token.open(rw=True, user_pin=changed) as restore:
            restore.set_pin(changed, PIN)


@pytest.mark.usefixtures("softhsm", "pin_env")
def test_serve_ca_from_the_command_line(tmp_path: Path, softhsm: SoftHSM) -> None:
    log, output = serve_ca(
        tmp_path,
        "--ca-pkcs11-module",
        str(MODULE),
        "--ca-pkcs11-token",
        TOKEN,
        "--ca-pkcs11-key-id",
        "02",
        "--ca-chain",
        str(softhsm.chains["ec-p384"]),
    )
    chain = x509.load_pem_x509_certificates(softhsm.chains["ec-p384"].read_bytes())
    assert [x509.load_pem_x509_certificate(p.encode()) for p in output] == chain
    assert "CA key in PKCS#11 token 'sigstead-ca', key id 02" in log
    assert PIN not in log


def test_command_line_refuses_a_wrong_pin_without_showing_it(
    tmp_path: Path, softhsm: SoftHSM, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "wrong-pin-77ab31"
    pin_file = tmp_path / "pin"
    pin_file.write_text(wrong + "\n")
    pin_file.chmod(0o600)
    monkeypatch.setenv(ca_pkcs11.PIN_ENV, PIN)  # the file wins over the environment
    config = oidc_config_file(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "serve",
            "ca",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            "1",
            "--oidc-config",
            str(config),
            "--ca-pkcs11-module",
            str(MODULE),
            "--ca-pkcs11-token",
            TOKEN,
            "--ca-pkcs11-key-label",
            "ec-p256",
            "--ca-pkcs11-pin-file",
            str(pin_file),
            "--ca-chain",
            str(softhsm.chains["ec-p256"]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert (
        "sigstead: CA key: token 'sigstead-ca', key label 'ec-p256': the token rejected the PIN"
        in (proc.stderr)
    )
    assert "Traceback" not in proc.stderr
    assert wrong not in proc.stdout + proc.stderr
    assert PIN not in proc.stdout + proc.stderr


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("softhsm")
def test_wrong_pin(monkeypatch: pytest.MonkeyPatch, softhsm: SoftHSM) -> None:
    monkeypatch.setenv(ca_pkcs11.PIN_ENV, "not-the-pin")
    with pytest.raises(CAKeyError, match="the token rejected the PIN") as err:
        _load(softhsm, "ec-p256")
    assert "not-the-pin" not in str(err.value)


@pytest.mark.usefixtures("softhsm")
def test_no_pin(monkeypatch: pytest.MonkeyPatch, softhsm: SoftHSM) -> None:
    monkeypatch.delenv(ca_pkcs11.PIN_ENV, raising=False)
    with pytest.raises(CAKeyError, match="no PIN; set SIGSTEAD_PKCS11_PIN"):
        _load(softhsm, "ec-p256")


def test_pin_file(tmp_path: Path, softhsm: SoftHSM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ca_pkcs11.PIN_ENV, raising=False)
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o640)
    with pytest.raises(CAKeyError, match="permissions 640 are too open"):
        _load(softhsm, "ec-p256", pin_file=pin_file)
    pin_file.chmod(0o600)
    _load(softhsm, "ec-p256", pin_file=pin_file).close()


@pytest.mark.usefixtures("softhsm", "pin_env")
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"token_label": "no-such-token"}, "no token labelled 'no-such-token'"),
        ({"module": Path("/nonexistent/libpkcs11.so")}, "no such file"),
        ({"module": Path("/etc/hostname")}, "cannot load PKCS#11 module"),
        ({"key_label": "no-such-key"}, "no such private key in the token"),
        ({"key_label": None, "key_id": b"\x63"}, "no such private key in the token"),
    ],
)
def test_missing_token_module_or_key(
    softhsm: SoftHSM, change: dict[str, Any], message: str
) -> None:
    fields = {"module": MODULE, "token_label": TOKEN, "key_label": "ec-p256", **change}
    config = ca_pkcs11.Pkcs11KeyConfig(**fields)
    with pytest.raises(CAKeyError, match=message):
        ca_pkcs11.load(config, softhsm.chains["ec-p256"], NOW)


def test_config_needs_a_token_and_a_key() -> None:
    with pytest.raises(CAKeyError, match="token label"):
        ca_pkcs11.Pkcs11KeyConfig(module=MODULE, token_label="", key_label="k")
    with pytest.raises(CAKeyError, match="key label or a key id"):
        ca_pkcs11.Pkcs11KeyConfig(module=MODULE, token_label=TOKEN)


@pytest.mark.usefixtures("softhsm", "pin_env")
@pytest.mark.parametrize(
    ("label", "chain", "message"),
    [
        ("ec-p256-b", "ec-p256", "the token key does not match the first certificate"),
        ("ec-p384", "ec-p256", "on secp384r1, the chain's first certificate on secp256r1"),
        ("rsa-3072", "ec-p256", "the token key is RSA, the chain's first certificate is not"),
        ("ec-p256", "rsa-3072", "the token key is EC, the chain's first certificate is not"),
    ],
)
def test_key_and_chain_mismatch(softhsm: SoftHSM, label: str, chain: str, message: str) -> None:
    with pytest.raises(CAKeyError, match=message):
        _load(softhsm, label, chain)
    # The refusal logged out again: the right pairing still loads afterwards.
    _load(softhsm, label).close()


@pytest.mark.usefixtures("softhsm", "pin_env")
def test_chain_that_fails_validation(tmp_path: Path, softhsm: SoftHSM) -> None:
    # The matching intermediate without its root: validate_chain still applies to token keys.
    intermediate = x509.load_pem_x509_certificates(softhsm.chains["ec-p256"].read_bytes())[0]
    alone = tmp_path / "alone.pem"
    alone.write_bytes(intermediate.public_bytes(serialization.Encoding.PEM))
    config = softhsm.config("ec-p256")
    with pytest.raises(CAKeyError, match="not self-signed"):
        ca_pkcs11.load(config, alone, NOW)
    _load(softhsm, "ec-p256").close()
