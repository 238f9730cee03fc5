"""Proof of possession in both request forms, key types and the signing-algorithm allow-list."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from services.ca.config import IssuerType, OIDCIssuer
from services.ca.errors import (
    InsecurePublicKey,
    InvalidCSR,
    InvalidProofOfPossession,
    InvalidPublicKey,
    SigningAlgorithmNotPermitted,
)
from services.ca.identity import Principal, principal_from_claims
from services.ca.oidc import Claims
from services.ca.pop import parse_csr, parse_public_key, verify_csr, verify_proof_of_possession
from tests.services.ca.conftest import config_json

ISS = "https://ci.example.com"
CONFIG = config_json({ISS: {"Type": "uri", "SubjectDomain": "https://example.com"}})
SUB = "https://example.com/builds/1"
PRINCIPAL: Principal = principal_from_claims(
    Claims(
        OIDCIssuer(ISS, "sigstore", IssuerType.URI, subject_domain="https://example.com"),
        MappingProxyType({"iss": ISS, "sub": SUB, "email": "bot@example.com"}),
    ),
    CONFIG,
)

P256 = ec.generate_private_key(ec.SECP256R1())
P384 = ec.generate_private_key(ec.SECP384R1())
P521 = ec.generate_private_key(ec.SECP521R1())
RSA2048 = rsa.generate_private_key(65537, 2048)
ED = ed25519.Ed25519PrivateKey.generate()
SHA256 = hashes.SHA256()


def _pem(key: Any) -> bytes:
    out: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return out


def _sign(key: Any, message: str, hash_: hashes.HashAlgorithm | None = None) -> bytes:
    data = message.encode()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hash_ or hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hash_ or hashes.SHA256())
    out: bytes = key.sign(data)
    return out


@pytest.mark.parametrize(
    ("key", "hash_"),
    [
        (P256, hashes.SHA256()),
        (P384, hashes.SHA384()),
        (P521, hashes.SHA512()),
        (RSA2048, hashes.SHA256()),
        (ED, None),
    ],
    ids=["p256", "p384", "p521", "rsa2048", "ed25519"],
)
@pytest.mark.parametrize("message", [SUB, "bot@example.com"], ids=["sub", "email"])
def test_public_key_request_accepted(key: Any, hash_: Any, message: str) -> None:
    public = parse_public_key(_pem(key).decode())
    verify_proof_of_possession(public, _sign(key, message, hash_), PRINCIPAL)


def test_ecdsa_p1363_signatures_are_accepted() -> None:
    r, s = decode_dss_signature(_sign(P256, SUB))
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    verify_proof_of_possession(parse_public_key(_pem(P256)), raw, PRINCIPAL)


def _refused(key: Any, signature: bytes) -> InvalidProofOfPossession:
    with pytest.raises(InvalidProofOfPossession) as info:
        verify_proof_of_possession(parse_public_key(_pem(key)), signature, PRINCIPAL)
    assert str(info.value) == "The signature supplied in the request could not be verified"
    return info.value


def test_proof_over_another_subject_is_refused() -> None:
    _refused(P256, _sign(P256, "https://example.com/builds/2"))
    _refused(ED, _sign(ED, "someone@example.com"))
    _refused(P256, b"")
    _refused(P256, b"\x00" * 2000)


def test_proof_by_another_key_is_refused() -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    _refused(P256, _sign(other, SUB))


def test_wrong_hash_for_the_curve_is_refused() -> None:
    # Fulcio ≥1.7 hashes P-384 proofs with SHA-384; a SHA-256 proof does not verify.
    _refused(P384, _sign(P384, SUB, hashes.SHA256()))
    with pytest.raises(InvalidProofOfPossession):
        verify_proof_of_possession(
            parse_public_key(_pem(RSA2048)),
            RSA2048.sign(
                SUB.encode(), padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()
            ),
            PRINCIPAL,
        )


def test_registry_can_forbid_a_key_type() -> None:
    with pytest.raises(SigningAlgorithmNotPermitted) as info:
        verify_proof_of_possession(
            parse_public_key(_pem(ED)),
            _sign(ED, SUB),
            PRINCIPAL,
            allowed={"ecdsa-sha2-256-nistp256"},
        )
    assert str(info.value) == "signing algorithm not permitted: Ed25519, none"


def test_key_formats() -> None:
    pkcs1 = RSA2048.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )
    assert b"RSA PUBLIC KEY" in pkcs1
    assert parse_public_key(pkcs1) == RSA2048.public_key()
    der = P256.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert parse_public_key(der) == P256.public_key()


@pytest.mark.parametrize(
    "content",
    [b"", b"   ", b"garbage", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"],
)
def test_unparseable_keys(content: bytes) -> None:
    with pytest.raises(InvalidPublicKey) as info:
        parse_public_key(content)
    assert str(info.value) == "The public key supplied in the request could not be parsed"


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP256K1()),
        ec.generate_private_key(ec.SECP224R1()),
        rsa.generate_private_key(65537, 1024),
        rsa.generate_private_key(65537, 2560),
        rsa.generate_private_key(3, 2048),
    ],
    ids=["secp256k1", "p224", "rsa1024", "rsa2560", "rsa2048-e3"],
)
def test_insecure_keys(key: Any) -> None:
    with pytest.raises(InsecurePublicKey) as info:
        parse_public_key(_pem(key))
    assert str(info.value) == "The public key supplied in the request is insecure"


def _csr(key: Any, hash_: Any = SHA256, **kw: Any) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
    return builder.sign(key, hash_, **kw)


def _csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def test_csr_with_rsa_exponent_3_is_refused() -> None:
    """Issue 10: a CSR with an RSA-2048 key and e=3 was certified."""
    with pytest.raises(InsecurePublicKey):
        verify_csr(parse_csr(_csr_pem(_csr(rsa.generate_private_key(3, 2048)))))


def test_csr_as_sigstore_python_sends_it() -> None:
    key = verify_csr(parse_csr(_csr_pem(_csr(P256))))
    assert key == P256.public_key()
    legacy_label = _csr_pem(_csr(P256)).replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST")
    assert verify_csr(parse_csr(legacy_label)) == P256.public_key()
    assert verify_csr(parse_csr(_csr_pem(_csr(ED, None)))) == ED.public_key()
    assert verify_csr(parse_csr(_csr_pem(_csr(P384, hashes.SHA384())))) == P384.public_key()


def test_csr_not_signed_by_its_key() -> None:
    mine = asn1_csr.CertificationRequest.load(_csr(P256).public_bytes(serialization.Encoding.DER))
    theirs = asn1_csr.CertificationRequest.load(
        _csr(ec.generate_private_key(ec.SECP256R1())).public_bytes(serialization.Encoding.DER)
    )
    # My key in the request, someone else's signature over their own request info.
    forged = asn1_csr.CertificationRequest(
        {
            "certification_request_info": mine["certification_request_info"],
            "signature_algorithm": theirs["signature_algorithm"],
            "signature": theirs["signature"],
        }
    )
    pem = x509.load_der_x509_csr(forged.dump()).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(InvalidProofOfPossession) as info:
        verify_csr(parse_csr(pem))
    assert "not signed by its own key" in info.value.detail


def test_csr_algorithms_outside_the_registry() -> None:
    with pytest.raises(SigningAlgorithmNotPermitted) as info:
        verify_csr(parse_csr(_csr_pem(_csr(P256, hashes.SHA384()))))
    assert str(info.value) == "signing algorithm not permitted: ECDSA P-256, sha384"
    pss = _csr(RSA2048, hashes.SHA256(), rsa_padding=padding.PSS(padding.MGF1(hashes.SHA256()), 32))
    with pytest.raises(InvalidProofOfPossession):
        verify_csr(parse_csr(_csr_pem(pss)))
    with pytest.raises(InsecurePublicKey):
        verify_csr(parse_csr(_csr_pem(_csr(ec.generate_private_key(ec.SECP256K1())))))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        _csr(P256).public_bytes(serialization.Encoding.DER),
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ],
    ids=["empty", "der", "bad-pem"],
)
def test_unparseable_csrs(data: bytes) -> None:
    with pytest.raises(InvalidCSR) as info:
        parse_csr(data)
    assert str(info.value) == "The certificate signing request could not be parsed"
