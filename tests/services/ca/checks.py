"""A minimal SCT signer for tests (the real CT log lives elsewhere), the verifiers that
sigstore-python applies to a Fulcio certificate (its chain policy and its SCT check), and the
publicKeyRequest body that sigstore-js and cosign send."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store
from sigstore._internal.sct import verify_sct
from sigstore._internal.trust import CTKeyring, Keyring
from sigstore_models.common.v1 import PublicKey

from services.ca.keys import CAKeyMaterial
from services.log.ct.rfc6962 import SignedCertificateTimestamp, precert_entry

LOG_KEY = ec.generate_private_key(ec.SECP256R1())
LOG_SPKI = LOG_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)
LOG_ID = hashlib.sha256(LOG_SPKI).digest()


def sign_precert(
    precert: x509.Certificate, ca: CAKeyMaterial, timestamp_ms: int
) -> SignedCertificateTimestamp:
    """What add-pre-chain answers: an SCT over the precert entry, signed by ``LOG_KEY``."""
    der = precert.public_bytes(serialization.Encoding.DER)
    entry = precert_entry(der, ca.signing_certificate, timestamp_ms)
    data = entry.sct_signed_input()
    return SignedCertificateTimestamp(
        log_id=LOG_ID,
        timestamp=timestamp_ms,
        signature=LOG_KEY.sign(data, ec.ECDSA(hashes.SHA256())),
    )


def sigstore_verify_sct(cert: x509.Certificate, ca: CAKeyMaterial) -> None:
    """sigstore-python's own SCT verification, with our test log's key as the only CT key."""
    key = PublicKey.model_validate_json(
        json.dumps(
            {
                "rawBytes": base64.b64encode(LOG_SPKI).decode(),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
            }
        )
    )
    verify_sct(cert, list(ca.chain), CTKeyring(Keyring([key])))


def pyca_verify_chain(
    cert: x509.Certificate, ca: CAKeyMaterial, at: datetime.datetime
) -> list[x509.Certificate]:
    """pyca's client verifier with the root as the only store and sigstore-python's policy
    (WebPKI defaults, EKU relaxed because Fulcio leaves carry codeSigning); returns the chain."""
    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    verifier = (
        PolicyBuilder()
        .store(Store([ca.root]))
        .time(at)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    return verifier.verify(cert, list(ca.chain[:-1])).chain


def public_key_request(key: ec.EllipticCurvePrivateKey, signed_over: bytes) -> dict[str, Any]:
    """The ``signingCert`` v2 ``publicKeyRequest`` for ``key``, its proof of possession signed
    over ``signed_over`` (sigstore-js signs the email, cosign the token's subject)."""
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    proof = key.sign(signed_over, ec.ECDSA(hashes.SHA256()))
    return {
        "publicKeyRequest": {
            "publicKey": {"algorithm": "ECDSA", "content": pem.decode()},
            "proofOfPossession": base64.b64encode(proof).decode(),
        }
    }
