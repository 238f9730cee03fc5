"""Verification material parsing, Go-style chain verification and signature verifiers."""

from __future__ import annotations

import datetime

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from services.log.rekor.keys import (
    ChainError,
    ChainTooLong,
    MaterialError,
    MaterialKind,
    SignatureError,
    UnsupportedKeyType,
    message_verifier,
    parse_material,
    verify_chain,
    verify_digest_signature,
)
from tests.services.log.rekor import material as m


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _verify(*certs: x509.Certificate) -> None:
    verify_chain(certs, [_der(c) for c in certs])


def test_parse_public_key() -> None:
    key = m.private_key("ed25519")
    material = parse_material(m.public_pem(key))
    assert material.kind is MaterialKind.PUBLIC_KEY
    assert material.canonical_pem == m.public_pem(key)
    assert material.certificates == ()
    assert material.leaf_certificate_sha256 is None
    assert material.identities().all() == ()


def test_parse_certificate_keeps_original_der_and_lists_sans() -> None:
    chain = m.chain()
    material = parse_material(chain.pem(chain.leaf))
    assert material.kind is MaterialKind.CERTIFICATE
    assert material.canonical_pem == chain.pem(chain.leaf)
    ids = material.identities()
    assert ids.emails == ("Alice@Example.COM",)
    assert ids.other_names == ("bob",)
    assert ids.uris[0].startswith("https://github.com/Org/Repo")


def test_parse_chain_of_ten_is_the_limit() -> None:
    chain = m.chain()
    ten = chain.pem(chain.leaf, *([chain.intermediate] * 8), chain.root)
    assert len(parse_material(ten).certificates) == 10
    with pytest.raises(ChainTooLong, match="too many certificates"):
        parse_material(chain.pem(chain.leaf, *([chain.intermediate] * 9), chain.root))


def test_public_key_block_inside_a_chain_is_a_malformed_certificate() -> None:
    chain = m.chain()
    with pytest.raises(MaterialError, match="malformed certificate"):
        parse_material(chain.pem(chain.leaf) + m.public_pem(m.private_key("ecdsa-p256")))


# --- chains ------------------------------------------------------------------------------------


def test_three_certificate_chain_verifies() -> None:
    chain = m.chain()
    _verify(chain.leaf, chain.intermediate, chain.root)


def test_single_certificate_needs_no_verification() -> None:
    _verify(m.chain().leaf)


def test_leaf_directly_under_root() -> None:
    root_key = m.private_key("ecdsa-p256", 20)
    root = m.make_ca("R", root_key)
    leaf = m.make_leaf(m.private_key("ecdsa-p256", 21), (root, root_key))
    _verify(leaf, root)


def test_leaf_that_is_its_own_root_verifies_like_go() -> None:
    chain = m.chain()
    _verify(chain.leaf, chain.leaf)


def test_intermediates_may_be_in_any_order() -> None:
    root_key, k1, k2 = (m.private_key("ecdsa-p256", i) for i in (30, 31, 32))
    root = m.make_ca("R", root_key)
    i1 = m.make_ca("I1", k1, (root, root_key))
    i2 = m.make_ca("I2", k2, (i1, k1))
    leaf = m.make_leaf(m.private_key("ecdsa-p256", 33), (i2, k2))
    _verify(leaf, i1, i2, root)


def test_missing_intermediate_fails() -> None:
    chain = m.chain()
    with pytest.raises(ChainError, match="unknown authority"):
        _verify(chain.leaf, chain.root)


def test_intermediate_that_is_not_a_ca_fails() -> None:
    root_key, inter_key = m.private_key("ecdsa-p256", 40), m.private_key("ecdsa-p256", 41)
    root = m.make_ca("R", root_key)
    inter = m.make_ca("I", inter_key, (root, root_key), ca=False)
    leaf = m.make_leaf(m.private_key("ecdsa-p256", 42), (inter, inter_key))
    with pytest.raises(ChainError):
        _verify(leaf, inter, root)


def test_path_length_constraint_is_enforced() -> None:
    root_key, k1, k2 = (m.private_key("ecdsa-p256", i) for i in (50, 51, 52))
    root = m.make_ca("R", root_key, path_length=0)
    i1 = m.make_ca("I1", k1, (root, root_key))
    leaf = m.make_leaf(m.private_key("ecdsa-p256", 53), (i1, k1))
    with pytest.raises(ChainError, match="unknown authority"):
        _verify(leaf, i1, root)
    del k2


def test_parent_without_key_cert_sign_fails() -> None:
    root_key = m.private_key("ecdsa-p256", 60)
    root = m.make_ca("R", root_key, key_cert_sign=False)
    leaf = m.make_leaf(m.private_key("ecdsa-p256", 61), (root, root_key))
    with pytest.raises(ChainError):
        _verify(leaf, root)


def test_intermediate_not_valid_at_leaf_issuance_fails_even_if_valid_now() -> None:
    root_key, inter_key = m.private_key("ecdsa-p256", 70), m.private_key("ecdsa-p256", 71)
    root = m.make_ca("R", root_key)
    inter = m.make_ca(
        "I", inter_key, (root, root_key), not_before=m.T0 + datetime.timedelta(days=1)
    )
    leaf = m.make_leaf(m.private_key("ecdsa-p256", 72), (inter, inter_key))
    with pytest.raises(ChainError, match="expired or is not yet valid"):
        _verify(leaf, inter, root)


def test_unhandled_critical_extension_on_the_leaf_fails() -> None:
    root_key = m.private_key("ecdsa-p256", 80)
    root = m.make_ca("R", root_key)
    leaf = m.make_leaf(m.private_key("ecdsa-p256", 81), (root, root_key), critical_unknown=True)
    with pytest.raises(ChainError, match="unhandled critical extension"):
        _verify(leaf, root)


def _resign_with_sha1(cert: x509.Certificate, issuer_key: rsa.RSAPrivateKey) -> x509.Certificate:
    # cryptography refuses to *build* SHA-1 certificates, so re-sign the TBS by hand.
    parsed = asn1_x509.Certificate.load(_der(cert))
    tbs = parsed["tbs_certificate"]
    tbs["signature"] = asn1_x509.SignedDigestAlgorithm({"algorithm": "sha1_rsa"})
    tbs_der = tbs.dump(force=True)
    signature = issuer_key.sign(tbs_der, padding.PKCS1v15(), hashes.SHA1())
    rebuilt = asn1_x509.Certificate(
        {
            "tbs_certificate": asn1_x509.TbsCertificate.load(tbs_der),
            "signature_algorithm": asn1_x509.SignedDigestAlgorithm({"algorithm": "sha1_rsa"}),
            "signature_value": signature,
        }
    )
    return x509.load_der_x509_certificate(rebuilt.dump())


def test_sha1_signed_certificate_fails() -> None:
    root_key = m.private_key("rsa-2048", 85)
    assert isinstance(root_key, rsa.RSAPrivateKey)
    root = m.make_ca("R", root_key)
    leaf = _resign_with_sha1(
        m.make_leaf(m.private_key("ecdsa-p256", 86), (root, root_key)), root_key
    )
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA1)
    root_public = root.public_key()
    assert isinstance(root_public, rsa.RSAPublicKey)
    # The signature itself is fine; only SHA-1 is refused.
    root_public.verify(
        leaf.signature, leaf.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA1()
    )
    with pytest.raises(ChainError, match="insecure algorithm"):
        _verify(leaf, root)


def test_ed25519_certificate_chain_verifies() -> None:
    root_key = m.private_key("ed25519", 87)
    root = m.make_ca("R", root_key)
    leaf = m.make_leaf(m.private_key("ecdsa-p256", 88), (root, root_key))
    _verify(leaf, root)


def test_signature_check_budget_bounds_pathological_chains() -> None:
    # Nine intermediates with one name and one key: each is a valid parent of every other.
    # Go treats same subject + same key + same SANs as one certificate, so they cannot loop;
    # and at most 100 signature checks are spent. Without both this took ~30 s.
    import time

    root_key, key = m.private_key("ecdsa-p256", 95), m.private_key("ecdsa-p256", 96)
    root = m.make_ca("Other", root_key)
    same = [m.make_ca("Loop", key, (m.make_ca("Loop", key), key)) for _ in range(8)]
    leaf = m.make_leaf(m.private_key("ecdsa-p256", 97), (same[0], key))
    started = time.monotonic()
    with pytest.raises(ChainError, match="unknown authority"):
        _verify(leaf, *same, root)
    assert time.monotonic() - started < 2


# --- verifiers ---------------------------------------------------------------------------------


def test_digest_verifier_rejects_empty_signature() -> None:
    material = parse_material(m.public_pem(m.private_key("ecdsa-p256")))
    with pytest.raises(SignatureError, match="has not been initialized"):
        verify_digest_signature(material, b"", b"\x00" * 32, "sha256")


def test_message_verifier_for_ecdsa_p384_uses_sha256() -> None:
    key = m.private_key("ecdsa-p384")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    verify = message_verifier(parse_material(m.public_pem(key)))
    verify(key.sign(b"msg", ec.ECDSA(hashes.SHA256())), b"msg")
    with pytest.raises(SignatureError):
        verify(key.sign(b"msg", ec.ECDSA(hashes.SHA384())), b"msg")


def test_message_verifier_refuses_keys_it_cannot_use() -> None:
    from cryptography.hazmat.primitives.asymmetric import x25519

    pem = (
        x25519.X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(UnsupportedKeyType):
        message_verifier(parse_material(pem))


def test_rsa_public_exponent_below_65537_is_refused() -> None:
    """Exponent 3 invites forgeries against lax PKCS#1 v1.5 verifiers (issue 10): refused for
    hashedrekord's digest signatures and for DSSE/intoto message signatures, even when the
    signature itself is valid."""
    key = rsa.generate_private_key(3, 2048)
    material = parse_material(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"msg")
    signature = key.sign(b"msg", padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(SignatureError, match="public exponent 3 is below 65537"):
        verify_digest_signature(material, signature, digest.finalize(), "sha256")
    with pytest.raises(SignatureError, match="public exponent 3 is below 65537"):
        message_verifier(material)(signature, b"msg")
