"""Leaf profile, precertificate vs final certificate, embedded SCT checked by sigstore-python."""

from __future__ import annotations

import datetime
import hashlib
from types import MappingProxyType
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, SignatureAlgorithmOID
from sigstore._utils import cert_is_leaf
from sigstore.errors import VerificationError

from services.ca import keys
from services.ca.certificate import (
    LEAF_VALIDITY,
    build_certificate,
    build_final_certificate,
    build_precertificate,
)
from services.ca.config import IssuerType, OIDCIssuer
from services.ca.errors import CABackendError
from services.ca.identity import Principal, principal_from_claims
from services.ca.oidc import Claims
from services.log.ct.rfc6962 import (
    POISON_EXTENSION_DER,
    SignedCertificateTimestamp,
    precert_entry,
    strip_poison,
)
from tests.services.ca.checks import LOG_ID, pyca_verify_chain, sign_precert, sigstore_verify_sct
from tests.services.ca.conftest import NOW, config_json

LEAF_KEY = ec.generate_private_key(ec.SECP256R1())
TS = int(NOW.timestamp() * 1000)
ISS = "https://issuer.example.com"
CONFIG = config_json({ISS: {"Type": "email"}})


def _principal(type_: IssuerType = IssuerType.EMAIL, **extra: Any) -> Principal:
    issuer = OIDCIssuer(ISS, "sigstore", type_, **extra)
    values = {"iss": ISS, "sub": "user-1", "email": "dev@example.com", "email_verified": True}
    return principal_from_claims(Claims(issuer, MappingProxyType(values)), CONFIG)


EMAIL = _principal()
USERNAME = _principal(IssuerType.USERNAME, subject_domain="example.com")


def _issue(
    ca: keys.CAKeyMaterial, principal: Principal = EMAIL
) -> tuple[x509.Certificate, x509.Certificate]:
    precert = build_precertificate(
        ca=ca, public_key=LEAF_KEY.public_key(), principal=principal, now=NOW
    )
    final = build_final_certificate(precert, ca=ca, sct=sign_precert(precert, ca, TS))
    return precert, final


@pytest.fixture(params=["p384", "rsa"])
def ca(
    request: pytest.FixtureRequest, ca_p384: keys.CAKeyMaterial, ca_rsa: keys.CAKeyMaterial
) -> keys.CAKeyMaterial:
    """Both generated CA flavours."""
    return ca_p384 if request.param == "p384" else ca_rsa


@pytest.mark.parametrize("principal", [EMAIL, USERNAME], ids=["email", "username"])
def test_final_tbs_is_precert_tbs_minus_poison(
    ca: keys.CAKeyMaterial, principal: Principal
) -> None:
    precert, final = _issue(ca, principal)
    # cryptography's own RFC 6962 reconstruction from the final certificate vs ours from the
    # precertificate: two independent implementations must agree byte for byte.
    assert final.tbs_precertificate_bytes == strip_poison(precert.tbs_certificate_bytes)
    assert POISON_EXTENSION_DER in precert.tbs_certificate_bytes
    assert POISON_EXTENSION_DER not in final.tbs_precertificate_bytes

    pre_exts, fin_exts = list(precert.extensions), list(final.extensions)
    assert pre_exts[-1].oid == ExtensionOID.PRECERT_POISON
    assert pre_exts[-1].critical
    assert fin_exts[-1].oid == ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS
    assert not fin_exts[-1].critical
    assert [(e.oid, e.critical) for e in pre_exts[:-1]] == [
        (e.oid, e.critical) for e in fin_exts[:-1]
    ]
    for attr in (
        "serial_number",
        "not_valid_before_utc",
        "not_valid_after_utc",
        "subject",
        "issuer",
    ):
        assert getattr(precert, attr) == getattr(final, attr)

    scts = final.extensions.get_extension_for_class(
        x509.PrecertificateSignedCertificateTimestamps
    ).value
    assert len(scts) == 1
    assert scts[0].log_id == LOG_ID
    assert scts[0].entry_type == x509.certificate_transparency.LogEntryType.PRE_CERTIFICATE
    assert scts[0].timestamp == NOW.replace(tzinfo=None)
    sigstore_verify_sct(final, ca)


def test_sigstore_rejects_an_sct_over_other_bytes(ca_p384: keys.CAKeyMaterial) -> None:
    precert, _ = _issue(ca_p384)
    other, _ = _issue(ca_p384)  # another serial: the SCT is for a different TBS
    wrong = build_final_certificate(precert, ca=ca_p384, sct=sign_precert(other, ca_p384, TS))
    with pytest.raises(VerificationError, match="SCT verify failed"):
        sigstore_verify_sct(wrong, ca_p384)


def test_leaf_profile(ca: keys.CAKeyMaterial) -> None:
    _, cert = _issue(ca)
    assert cert.version is x509.Version.v3
    assert cert.subject.public_bytes() == b"\x30\x00"
    assert cert.issuer == ca.signing_certificate.subject
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW + LEAF_VALIDITY
    assert 0 < cert.serial_number < 1 << 159
    want_alg = (
        SignatureAlgorithmOID.ECDSA_WITH_SHA384
        if isinstance(ca.key, ec.EllipticCurvePrivateKey)
        else SignatureAlgorithmOID.RSA_WITH_SHA256
    )
    assert cert.signature_algorithm_oid == want_alg
    fulcio = [f"1.3.6.1.4.1.57264.1.{n}" for n in (1, 8, 24)]
    assert [e.oid.dotted_string for e in cert.extensions] == [
        "2.5.29.15",  # keyUsage
        "2.5.29.37",  # extKeyUsage
        "2.5.29.14",  # subjectKeyIdentifier
        "2.5.29.35",  # authorityKeyIdentifier
        "2.5.29.17",  # subjectAltName
        *fulcio,
        "1.3.6.1.4.1.11129.2.4.2",  # SCT list
    ]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not ku.value.key_cert_sign
    assert (
        cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value.public_bytes()
        == b"\x03\x02\x07\x80"
    )
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert not eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.CODE_SIGNING]
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(LEAF_KEY.public_key())
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.signing_certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value
    assert aki.key_identifier == ca_ski.digest
    assert aki.authority_cert_issuer is None
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert list(san.value) == [x509.RFC822Name("dev@example.com")]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.BasicConstraints)
    cert_is_leaf(cert)  # sigstore-python's own leaf profile check


def test_chain_verifies_with_pyca_client_verifier(ca: keys.CAKeyMaterial) -> None:
    _, cert = _issue(ca)
    assert pyca_verify_chain(cert, ca, NOW + LEAF_VALIDITY) == [cert, *ca.chain]
    with pytest.raises(x509.verification.VerificationError):
        pyca_verify_chain(cert, ca, NOW + LEAF_VALIDITY + datetime.timedelta(seconds=1))
    with pytest.raises(x509.verification.VerificationError):
        pyca_verify_chain(cert, ca, NOW - datetime.timedelta(seconds=1))


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP384R1()).public_key(),
        ec.generate_private_key(ec.SECP521R1()).public_key(),
        rsa.generate_private_key(65537, 2048).public_key(),
        ed25519.Ed25519PrivateKey.generate().public_key(),
    ],
    ids=["p384", "p521", "rsa2048", "ed25519"],
)
def test_other_leaf_key_types(ca_p384: keys.CAKeyMaterial, key: Any) -> None:
    precert = build_precertificate(ca=ca_p384, public_key=key, principal=EMAIL, now=NOW)
    final = build_final_certificate(precert, ca=ca_p384, sct=sign_precert(precert, ca_p384, TS))
    assert final.public_key() == key
    sigstore_verify_sct(final, ca_p384)


def test_detached_certificate_has_neither_poison_nor_scts(ca_p384: keys.CAKeyMaterial) -> None:
    cert = build_certificate(ca=ca_p384, public_key=LEAF_KEY.public_key(), principal=EMAIL, now=NOW)
    oids = {e.oid for e in cert.extensions}
    assert ExtensionOID.PRECERT_POISON not in oids
    assert ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS not in oids


def test_final_refuses_foreign_or_unpoisoned_precerts(
    ca_p384: keys.CAKeyMaterial, ca_rsa: keys.CAKeyMaterial
) -> None:
    precert, _final = _issue(ca_p384)
    sct = sign_precert(precert, ca_p384, TS)
    with pytest.raises(CABackendError) as info:
        build_final_certificate(precert, ca=ca_rsa, sct=sct)
    assert "not issued by this CA" in info.value.detail
    # A CA with the very same names but another key is another CA.
    _root_key, twin_key, twin_chain = keys.generate(NOW)
    twin = keys.CAKeyMaterial(twin_key, twin_chain)
    assert twin.signing_certificate.subject == ca_p384.signing_certificate.subject
    with pytest.raises(CABackendError) as info:
        build_final_certificate(precert, ca=twin, sct=sct)
    assert info.value.detail.endswith("issuer or key differs")
    plain = build_certificate(
        ca=ca_p384, public_key=LEAF_KEY.public_key(), principal=EMAIL, now=NOW
    )
    with pytest.raises(CABackendError) as info:
        build_final_certificate(plain, ca=ca_p384, sct=sct)
    assert "no poison" in info.value.detail
    assert str(CABackendError("x")) == "error communicating with CA backend"


def test_ca_must_cover_the_leaf(tmp_path: Any) -> None:
    late = NOW + datetime.timedelta(days=365 * 10)  # the generated chain ends ~10 years after NOW
    ca = keys.load_or_create(tmp_path, NOW)
    with pytest.raises(CABackendError) as info:
        build_precertificate(ca=ca, public_key=LEAF_KEY.public_key(), principal=EMAIL, now=late)
    assert "cannot cover" in info.value.detail
    with pytest.raises(ValueError, match="timezone"):
        build_precertificate(
            ca=ca, public_key=LEAF_KEY.public_key(), principal=EMAIL, now=NOW.replace(tzinfo=None)
        )


def test_precert_entry(ca_p384: keys.CAKeyMaterial) -> None:
    precert, final = _issue(ca_p384)
    entry = precert_entry(precert.public_bytes(Encoding.DER), ca_p384.signing_certificate, TS)
    tbs = final.tbs_precertificate_bytes
    spki = ca_p384.signing_certificate.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    issuer_key_hash = hashlib.sha256(spki).digest()
    assert entry.timestamp_ms == TS
    assert entry.signed_entry() == issuer_key_hash + len(tbs).to_bytes(3, "big") + tbs


def test_strip_poison_refuses_what_it_cannot_strip(ca_p384: keys.CAKeyMaterial) -> None:
    precert, final = _issue(ca_p384)
    with pytest.raises(ValueError, match="0 poison"):
        strip_poison(final.tbs_certificate_bytes)
    tbs = precert.tbs_certificate_bytes
    non_critical = tbs.replace(
        POISON_EXTENSION_DER, bytes.fromhex("3013060a2b06010401d67902040301010004020500")
    )
    with pytest.raises(ValueError, match="critical"):
        strip_poison(non_critical)
    for broken in (b"", tbs[:-1], tbs + b"\x00", b"\x04\x00"):
        with pytest.raises(ValueError, match="DER"):
            strip_poison(broken)


def test_sct_round_trips_through_the_certificate(ca_p384: keys.CAKeyMaterial) -> None:
    precert, _ = _issue(ca_p384)
    sct = sign_precert(precert, ca_p384, TS)
    final = build_final_certificate(precert, ca=ca_p384, sct=sct)
    ext = final.extensions.get_extension_for_oid(ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS)
    assert isinstance(ext.value, x509.PrecertificateSignedCertificateTimestamps)
    parsed = ext.value[0]
    assert (
        SignedCertificateTimestamp(
            log_id=parsed.log_id,
            timestamp=TS,
            signature=parsed.signature,
            extensions=parsed.extension_bytes,
        )
        == sct
    )
