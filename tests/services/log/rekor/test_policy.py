"""The client signing-algorithm policy (hashedrekord only)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from services.log.rekor.errors import AlgorithmNotAllowed
from services.log.rekor.policy import (
    DEFAULT_ALGORITHM_POLICY,
    AlgorithmPolicy,
    SigningAlgorithm,
    classify,
)
from tests.services.log.rekor import material as m


@pytest.mark.parametrize(
    ("key_type", "hash_name", "expected"),
    [
        ("rsa-2048", "sha256", SigningAlgorithm.RSA_PKCS1_2048_SHA256),
        ("rsa-4096", "sha256", SigningAlgorithm.RSA_PKCS1_4096_SHA256),
        ("rsa-2048", "sha384", None),
        ("ecdsa-p256", "sha256", SigningAlgorithm.ECDSA_P256_SHA256),
        ("ecdsa-p521", "sha512", SigningAlgorithm.ECDSA_P521_SHA512),
        ("ecdsa-p521", "sha256", None),
        ("ed25519", "sha512", SigningAlgorithm.ED25519_PH),
        ("ed25519", "sha256", None),
    ],
)
def test_classify(key_type: str, hash_name: str, expected: SigningAlgorithm | None) -> None:
    assert classify(m.private_key(key_type).public_key(), hash_name) is expected


def test_default_policy_allows_every_registry_default() -> None:
    for key_type, hash_name in m.POLICY_HASH.items():
        DEFAULT_ALGORITHM_POLICY.require(m.private_key(key_type).public_key(), hash_name)


def test_unclassifiable_key_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP224R1()).public_key()
    with pytest.raises(AlgorithmNotAllowed):
        DEFAULT_ALGORITHM_POLICY.require(key, "sha256")


def test_from_names() -> None:
    policy = AlgorithmPolicy.from_names(["ed25519-ph", "ecdsa-sha2-256-nistp256"])
    assert policy.allowed == {SigningAlgorithm.ED25519_PH, SigningAlgorithm.ECDSA_P256_SHA256}
    with pytest.raises(AlgorithmNotAllowed):
        policy.require(m.private_key("rsa-2048").public_key(), "sha256")


def test_unknown_name_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="unknown signing algorithm 'rsa-1024'"):
        AlgorithmPolicy.from_names(["rsa-1024"])
