"""hashedrekord v0.0.1: real keys of every type, real client bodies, every rejection path."""

from __future__ import annotations

import base64
import hashlib
import json
import textwrap
from typing import Any

import pytest
import rekor_types
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from sigstore._internal.rekor import _hashedrekord_from_parts
from sigstore._internal.rekor.client import RekorClient
from sigstore._utils import base64_encode_pem_cert
from sigstore.errors import VerificationError
from sigstore.hashes import Hashed
from sigstore.verify.verifier import _validate_hashedrekord_v001_entry_body
from sigstore_models.common.v1 import HashAlgorithm

from services.log.rekor.errors import (
    AlgorithmNotAllowed,
    CertificateChainInvalid,
    KeyUnparseable,
    MalformedEntry,
    SignatureInvalid,
)
from services.log.rekor.kinds import canonicalize_proposed_entry
from services.log.rekor.policy import AlgorithmPolicy
from tests.services.log.rekor import material as m

ARTIFACT = b"the artifact bytes\n"


def _proposed(body: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(body)
    return doc


def _body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _valid(key_type: str = "ecdsa-p256", hash_name: str | None = None) -> bytes:
    key = m.private_key(key_type)
    hash_name = hash_name or m.POLICY_HASH[key_type]
    digest, sig = m.sign_digest(key, ARTIFACT, hash_name)
    return m.hashedrekord_body(m.public_pem(key), sig, digest.hex(), hash_name)


# --- accepted inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", m.KEY_TYPES)
def test_every_default_algorithm_is_accepted_with_a_bare_key(key_type: str) -> None:
    hash_name = m.POLICY_HASH[key_type]
    key = m.private_key(key_type)
    digest, sig = m.sign_digest(key, ARTIFACT, hash_name)
    entry = canonicalize_proposed_entry(
        m.hashedrekord_body(m.public_pem(key), sig, digest.hex(), hash_name)
    )
    assert (entry.kind, entry.api_version) == ("hashedrekord", "0.0.1")
    body = json.loads(entry.leaf)
    assert body["spec"]["data"]["hash"] == {"algorithm": hash_name, "value": digest.hex()}
    assert base64.b64decode(body["spec"]["signature"]["content"]) == sig
    assert base64.b64decode(body["spec"]["signature"]["publicKey"]["content"]) == m.public_pem(key)
    assert f"{hash_name}:{digest.hex()}" in entry.search_keys
    assert entry.attestation is None


def test_sigstore_python_request_with_fulcio_like_cert_round_trips_its_own_body_check() -> None:
    chain = m.chain()
    key = chain.leaf_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    digest = hashlib.sha256(ARTIFACT).digest()
    sig = key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=digest)
    request = RekorClient("http://rekor.invalid")._build_hashed_rekord_request(
        hashed_input=hashed, signature=sig, certificate=chain.leaf
    )
    entry = canonicalize_proposed_entry(json.dumps(request).encode())

    # sigstore-python's verifier (verify/verifier.py::_validate_hashedrekord_v001_entry_body)
    # rebuilds the body from cert, signature and digest and requires equality with ours.
    expected = _hashedrekord_from_parts(chain.leaf, sig, hashed)
    assert rekor_types.Hashedrekord.model_validate_json(entry.leaf) == expected
    # The exact bytes: JCS of what sigstore would build, so a re-serializing client agrees too.
    assert entry.leaf == m.jcs(expected.model_dump(mode="json", by_alias=True))
    body = json.loads(entry.leaf)
    assert body["spec"]["signature"]["publicKey"]["content"] == base64_encode_pem_cert(chain.leaf)

    # And sigstore-python's own check function, run on our leaf, passes; a tampered leaf fails.
    _validate_hashedrekord_v001_entry_body(
        m.sigstore_bundle_view(entry.leaf, chain.leaf, signature=sig), hashed
    )
    tampered = entry.leaf.replace(digest.hex().encode(), digest.hex().upper().encode())
    with pytest.raises(VerificationError, match="inconsistent"):
        _validate_hashedrekord_v001_entry_body(
            m.sigstore_bundle_view(tampered, chain.leaf, signature=sig), hashed
        )


def test_leaf_is_exact_jcs_bytes() -> None:
    key = m.private_key("ecdsa-p256")
    digest, sig = m.sign_digest(key, ARTIFACT, "sha256")
    entry = canonicalize_proposed_entry(m.hashedrekord_body(m.public_pem(key), sig, digest.hex()))
    expected = (
        '{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{"data":{"hash":{"algorithm":'
        f'"sha256","value":"{digest.hex()}"}}}},"signature":{{"content":"{m.b64(sig)}",'
        f'"publicKey":{{"content":"{m.b64(m.public_pem(key))}"}}}}}}}}'
    ).encode()
    assert entry.leaf == expected


def test_certificate_chain_is_verified_and_stored_as_concatenated_pem() -> None:
    chain = m.chain("rsa-2048")
    digest, sig = m.sign_digest(chain.leaf_key, ARTIFACT, "sha256")
    entry = canonicalize_proposed_entry(m.hashedrekord_body(chain.pem(), sig, digest.hex()))
    stored = base64.b64decode(json.loads(entry.leaf)["spec"]["signature"]["publicKey"]["content"])
    assert stored == chain.pem()
    assert "email:alice@example.com" in entry.search_keys
    assert "subject:bob" in entry.search_keys  # the sigstore otherName SAN


def test_expired_chain_is_accepted_because_validity_is_checked_at_leaf_not_before() -> None:
    # The leaf lived for 10 minutes in March 2026; "now" never enters the decision.
    chain = m.chain()
    digest, sig = m.sign_digest(chain.leaf_key, ARTIFACT, "sha256")
    canonicalize_proposed_entry(m.hashedrekord_body(chain.pem(), sig, digest.hex()))


def test_ecdsa_ieee_p1363_signature_is_accepted_like_sigstore_go() -> None:
    key = m.private_key("ecdsa-p256")
    digest, der = m.sign_digest(key, ARTIFACT, "sha256")
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    entry = canonicalize_proposed_entry(m.hashedrekord_body(m.public_pem(key), raw, digest.hex()))
    assert base64.b64decode(json.loads(entry.leaf)["spec"]["signature"]["content"]) == raw


def test_uppercase_hex_is_accepted_stored_verbatim_and_a_different_leaf() -> None:
    key = m.private_key("ecdsa-p256")
    digest, sig = m.sign_digest(key, ARTIFACT, "sha256")
    lower = canonicalize_proposed_entry(m.hashedrekord_body(m.public_pem(key), sig, digest.hex()))
    upper = canonicalize_proposed_entry(
        m.hashedrekord_body(m.public_pem(key), sig, digest.hex().upper())
    )
    assert json.loads(upper.leaf)["spec"]["data"]["hash"]["value"] == digest.hex().upper()
    assert upper.leaf != lower.leaf
    # ...but both are found by the same (lowercase) search key.
    assert f"sha256:{digest.hex()}" in upper.search_keys & lower.search_keys


# --- determinism -------------------------------------------------------------------------------


def _rewrap(pem: bytes, width: int, crlf: bool = False, junk: bool = False) -> bytes:
    lines = pem.decode().strip().splitlines()
    begin, end, body = lines[0], lines[-1], "".join(lines[1:-1])
    sep = "\r\n" if crlf else "\n"
    out = sep.join([begin, *textwrap.wrap(body, width), end]) + sep
    return (("some leading text\n" + out + "\n\n") if junk else out).encode()


@pytest.mark.parametrize(
    ("width", "crlf", "junk"), [(76, False, False), (16, True, False), (64, False, True)]
)
def test_same_key_in_different_pem_wrapping_gives_identical_leaf(
    width: int, crlf: bool, junk: bool
) -> None:
    key = m.private_key("ecdsa-p384")
    digest, sig = m.sign_digest(key, ARTIFACT, "sha384")
    reference = canonicalize_proposed_entry(
        m.hashedrekord_body(m.public_pem(key), sig, digest.hex(), "sha384")
    )
    rewrapped = _rewrap(m.public_pem(key), width, crlf, junk)
    assert rewrapped != m.public_pem(key)
    other = canonicalize_proposed_entry(m.hashedrekord_body(rewrapped, sig, digest.hex(), "sha384"))
    assert other.leaf == reference.leaf
    assert other.search_keys == reference.search_keys


def test_signature_base64_with_line_breaks_is_canonicalized() -> None:
    key = m.private_key("rsa-2048")
    digest, sig = m.sign_digest(key, ARTIFACT, "sha256")
    reference = canonicalize_proposed_entry(
        m.hashedrekord_body(m.public_pem(key), sig, digest.hex())
    )
    doc = json.loads(m.hashedrekord_body(m.public_pem(key), sig, digest.hex()))
    content = doc["spec"]["signature"]["content"]
    doc["spec"]["signature"]["content"] = "\n".join(textwrap.wrap(content, 60))
    assert canonicalize_proposed_entry(_body(doc)).leaf == reference.leaf


def test_field_order_and_whitespace_of_the_request_do_not_matter() -> None:
    body = _valid()
    doc = _proposed(body)
    reordered = json.dumps(
        {"spec": dict(reversed(list(doc["spec"].items()))), "kind": doc["kind"],
         "apiVersion": doc["apiVersion"]},
        indent=3,
    ).encode()  # fmt: skip
    assert canonicalize_proposed_entry(reordered).leaf == canonicalize_proposed_entry(body).leaf


def test_canonical_leaf_validates_as_sigstore_rekor_types_model() -> None:
    for key_type in ("ecdsa-p521", "ed25519"):
        entry = canonicalize_proposed_entry(_valid(key_type))
        model = rekor_types.Hashedrekord.model_validate_json(entry.leaf)
        assert model.kind == "hashedrekord"
        assert model.api_version == "0.0.1"


def test_canonicalizing_is_idempotent_on_the_leaf() -> None:
    entry = canonicalize_proposed_entry(_valid("rsa-3072"))
    assert canonicalize_proposed_entry(entry.leaf).leaf == entry.leaf


# --- rejections --------------------------------------------------------------------------------


def _mutate(body: bytes, path: tuple[str, ...], value: object) -> bytes:
    doc = _proposed(body)
    node = doc
    for part in path[:-1]:
        node = node[part]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return _body(doc)


_DELETE = object()


def test_signature_over_another_digest_is_rejected() -> None:
    key = m.private_key("ecdsa-p256")
    _, sig = m.sign_digest(key, b"something else", "sha256")
    digest = hashlib.sha256(ARTIFACT).hexdigest()
    with pytest.raises(SignatureInvalid) as info:
        canonicalize_proposed_entry(m.hashedrekord_body(m.public_pem(key), sig, digest))
    assert info.value.status == 400
    assert info.value.to_json() == {
        "code": 400,
        "message": "error processing entry: verifying signature: "
        "invalid signature when validating ASN.1 encoded signature",
    }


@pytest.mark.parametrize("key_type", ["rsa-2048", "ed25519", "ecdsa-p521"])
def test_signature_by_another_key_is_rejected(key_type: str) -> None:
    hash_name = m.POLICY_HASH[key_type]
    digest, sig = m.sign_digest(m.private_key(key_type), ARTIFACT, hash_name)
    other = m.public_pem(m.private_key(key_type, 1))
    with pytest.raises(SignatureInvalid, match="verifying signature"):
        canonicalize_proposed_entry(m.hashedrekord_body(other, sig, digest.hex(), hash_name))


def test_pure_ed25519_signature_is_not_ed25519ph() -> None:
    key = m.private_key("ed25519")
    digest = hashlib.sha512(ARTIFACT).digest()
    assert not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    pure = key.sign(digest)  # signing the digest as a message is not Ed25519ph
    with pytest.raises(SignatureInvalid, match="ed25519: invalid signature"):
        canonicalize_proposed_entry(
            m.hashedrekord_body(m.public_pem(key), pure, digest.hex(), "sha512")
        )


def test_ed25519_with_sha256_digest_is_an_unsupported_hash() -> None:
    key = m.private_key("ed25519")
    digest = hashlib.sha256(ARTIFACT).hexdigest()
    with pytest.raises(SignatureInvalid) as info:
        canonicalize_proposed_entry(m.hashedrekord_body(m.public_pem(key), b"x" * 64, digest))
    assert info.value.message == (
        'error processing entry: verifying signature: unsupported hash algorithm: "SHA-256" '
        "not in [SHA-512]"
    )


def test_rsa_pss_signature_is_rejected_because_rekor_verifies_pkcs1v15() -> None:
    key = m.private_key("rsa-2048")
    assert isinstance(key, rsa.RSAPrivateKey)
    digest = hashlib.sha256(ARTIFACT).digest()
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    sig = key.sign(digest, pss, Prehashed(hashes.SHA256()))
    with pytest.raises(SignatureInvalid, match="crypto/rsa: verification error"):
        canonicalize_proposed_entry(m.hashedrekord_body(m.public_pem(key), sig, digest.hex()))


@pytest.mark.parametrize(
    ("key_type", "hash_name"),
    [("ecdsa-p256", "sha384"), ("ecdsa-p384", "sha256"), ("rsa-2048", "sha512")],
)
def test_valid_signature_outside_the_algorithm_policy_is_refused(
    key_type: str, hash_name: str
) -> None:
    with pytest.raises(AlgorithmNotAllowed) as info:
        canonicalize_proposed_entry(_valid(key_type, hash_name))
    assert info.value.to_json() == {
        "code": 400,
        "message": "error processing entry: entry algorithms are not allowed",
    }


def test_small_rsa_key_verifies_but_is_outside_the_policy() -> None:
    key = rsa.generate_private_key(65537, 1024)
    digest, sig = m.sign_digest(key, ARTIFACT, "sha256")
    with pytest.raises(AlgorithmNotAllowed):
        canonicalize_proposed_entry(m.hashedrekord_body(m.public_pem(key), sig, digest.hex()))


def test_restricted_policy_refuses_what_the_default_accepts() -> None:
    only_rsa = AlgorithmPolicy.from_names(["rsa-sign-pkcs1-2048-sha256"])
    canonicalize_proposed_entry(_valid("rsa-2048"), policy=only_rsa)
    with pytest.raises(AlgorithmNotAllowed):
        canonicalize_proposed_entry(_valid("ecdsa-p256"), policy=only_rsa)


def test_dsa_key_parses_but_has_no_verifier() -> None:
    key = dsa.generate_private_key(2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(ARTIFACT).hexdigest()
    with pytest.raises(KeyUnparseable) as info:
        canonicalize_proposed_entry(m.hashedrekord_body(pem, b"sig", digest))
    assert info.value.detail == "verifying signature: unsupported public key type"


@pytest.mark.parametrize(
    ("key_pem", "detail"),
    [
        (b"not a pem at all", "invalid public key: failure decoding PEM"),
        (b"", "invalid public key: failure decoding PEM"),
        (
            b"-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n",
            "invalid public key: cannot handle type RSA PUBLIC KEY",
        ),
    ],
)
def test_unparseable_key_is_rejected(key_pem: bytes, detail: str) -> None:
    digest = hashlib.sha256(ARTIFACT).hexdigest()
    with pytest.raises(KeyUnparseable) as info:
        canonicalize_proposed_entry(m.hashedrekord_body(key_pem, b"sig", digest))
    assert info.value.detail == detail


def test_public_key_block_with_garbage_der_is_rejected() -> None:
    pem = b"-----BEGIN PUBLIC KEY-----\nMAMCAQE=\n-----END PUBLIC KEY-----\n"
    digest = hashlib.sha256(ARTIFACT).hexdigest()
    with pytest.raises(KeyUnparseable, match="x509: failed to parse public key"):
        canonicalize_proposed_entry(m.hashedrekord_body(pem, b"sig", digest))


def test_unsupported_curve_is_rejected_at_parse_time() -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    digest = hashlib.sha256(ARTIFACT).hexdigest()
    with pytest.raises(KeyUnparseable, match="unsupported elliptic curve"):
        canonicalize_proposed_entry(m.hashedrekord_body(m.public_pem(key), b"sig", digest))


def test_chain_of_eleven_certificates_is_too_long() -> None:
    chain = m.chain()
    eleven = chain.pem(chain.leaf, *([chain.intermediate] * 9), chain.root)
    digest, sig = m.sign_digest(chain.leaf_key, ARTIFACT, "sha256")
    with pytest.raises(CertificateChainInvalid) as info:
        canonicalize_proposed_entry(m.hashedrekord_body(eleven, sig, digest.hex()))
    assert info.value.detail == "too many certificates specified in PEM block"


def test_chain_that_does_not_lead_to_its_root_is_rejected() -> None:
    chain = m.chain()
    stranger = m.make_ca("Other Root", m.private_key("ecdsa-p256", 7))
    digest, sig = m.sign_digest(chain.leaf_key, ARTIFACT, "sha256")
    body = m.hashedrekord_body(
        chain.pem(chain.leaf, chain.intermediate, stranger), sig, digest.hex()
    )
    with pytest.raises(CertificateChainInvalid) as info:
        canonicalize_proposed_entry(body)
    assert info.value.detail.startswith(
        "verifying signature: x509: certificate signed by unknown authority"
    )


def test_chain_is_checked_before_the_signature() -> None:
    chain = m.chain()
    stranger = m.make_ca("Other Root", m.private_key("ecdsa-p256", 7))
    body = m.hashedrekord_body(
        chain.pem(chain.leaf, stranger), b"bad signature", hashlib.sha256(ARTIFACT).hexdigest()
    )
    with pytest.raises(CertificateChainInvalid):
        canonicalize_proposed_entry(body)


def test_garbage_after_a_certificate_is_a_chain_parse_error() -> None:
    chain = m.chain()
    digest, sig = m.sign_digest(chain.leaf_key, ARTIFACT, "sha256")
    body = m.hashedrekord_body(chain.pem(chain.leaf) + b"trailing", sig, digest.hex())
    with pytest.raises(KeyUnparseable) as info:
        canonicalize_proposed_entry(body)
    assert info.value.detail == "error during PEM decoding"


@pytest.mark.parametrize(
    ("algorithm", "value", "detail"),
    [
        ("sha256", "ab" * 31, "invalid value for hash"),
        ("sha256", "ab" * 33, "invalid value for hash"),
        ("sha512", "ab" * 32, "invalid value for hash"),
        ("sha384", "ab" * 32, "invalid value for hash"),
        ("sha256", "zz" + "ab" * 31, "encoding/hex: invalid byte: U+007A 'z'"),
        ("sha256", "é" + "a" * 62, "encoding/hex: invalid byte: U+00C3 'Ã'"),
    ],
)
def test_bad_digest_is_rejected(algorithm: str, value: str, detail: str) -> None:
    key = m.private_key("ecdsa-p256")
    body = _mutate(_valid(), ("spec", "data", "hash"), {"algorithm": algorithm, "value": value})
    del key
    with pytest.raises(MalformedEntry) as info:
        canonicalize_proposed_entry(body)
    assert info.value.detail == detail


@pytest.mark.parametrize(
    ("path", "value", "detail"),
    [
        (("spec", "signature"), _DELETE, "validation failure list:\nsignature in body is required"),
        (("spec", "data"), _DELETE, "validation failure list:\ndata in body is required"),
        (("spec", "data"), {}, "validation failure list:\ndata in body is required"),
        (
            ("spec", "data", "hash", "algorithm"),
            "md5",
            "validation failure list:\n"
            "data.hash.algorithm in body should be one of [sha256 sha384 sha512]",
        ),
        (
            ("spec", "data", "hash", "value"),
            _DELETE,
            "validation failure list:\ndata.hash.value in body is required",
        ),
        (("spec", "signature", "publicKey"), _DELETE, "missing public key"),
        (
            ("spec", "signature", "content"),
            "not base64!",
            "failed parsing base64 data for signature content: illegal base64 data at input byte 3",
        ),
        (
            ("spec", "signature", "publicKey", "content"),
            "QQ",
            "failed parsing base64 data for public key content: "
            "illegal base64 data at input byte 2",
        ),
        (("spec",), "a string", "unsupported input type string for DecodeEntry"),
        (("spec",), [1], "unsupported input type []interface {} for DecodeEntry"),
    ],
)
def test_structurally_bad_spec_is_malformed(
    path: tuple[str, ...], value: object, detail: str
) -> None:
    with pytest.raises(MalformedEntry) as info:
        canonicalize_proposed_entry(_mutate(_valid(), path, value))
    assert info.value.detail == detail
    assert info.value.status == 400


def test_missing_signature_content_fails_as_uninitialized_signature() -> None:
    body = _mutate(_valid(), ("spec", "signature", "content"), _DELETE)
    with pytest.raises(SignatureInvalid) as info:
        canonicalize_proposed_entry(body)
    assert info.value.detail == "verifying signature: X509 signature has not been initialized"


def test_truncated_ecdsa_signature_is_rejected_as_bad_p1363() -> None:
    key = m.private_key("ecdsa-p256")
    digest, sig = m.sign_digest(key, ARTIFACT, "sha256")
    with pytest.raises(SignatureInvalid, match="IEEE_P1363"):
        canonicalize_proposed_entry(m.hashedrekord_body(m.public_pem(key), sig[:-1], digest.hex()))
