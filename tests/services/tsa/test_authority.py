"""Request parsing and token construction, without HTTP (services/tsa/authority.py)."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import core, tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from services.tsa.authority import (
    DEFAULT_POLICY,
    DigestLengthMismatch,
    MalformedRequest,
    OIDTooLong,
    RequestTooLarge,
    SigningFailed,
    TimestampAuthority,
    TimestampRequest,
    TSAError,
    UnacceptedExtension,
    UnacceptedPolicy,
    WeakHashAlgorithm,
    _integer,
    _tlv,
    parse_der_request,
    parse_json_request,
)
from tests.services.tsa.conftest import Material
from tests.services.tsa.material import (
    EXTENSION,
    GENERATE,
    LENGTH,
    NOW,
    OID_LONG,
    POLICY,
    TOO_LARGE,
    WEAK,
    ChainSpec,
    FailingKey,
    build_chain,
)
from tests.services.tsa.verifiers import (
    asn1crypto_parse_request,
    asn1crypto_rebuild,
    der_request,
    json_request,
    openssl_verify,
    rfc3161_client_verify,
)


def _signed(resp: bytes) -> Any:
    return tsp.TimeStampResp.load(resp)["time_stamp_token"]["content"]


def _tst_info(resp: bytes) -> Any:
    return _signed(resp)["encap_content_info"]["content"].parsed


# --- parsing -----------------------------------------------------------------------------------


def test_der_request_fields() -> None:
    digest = hashlib.sha384(b"x").digest()
    req = parse_der_request(
        der_request(b"", "sha384", digest=digest, nonce=-5, cert_req=True, policy="1.2.3")
    )
    assert req == TimestampRequest("sha384", digest, nonce=-5, cert_req=True, policy="1.2.3")
    bare = parse_der_request(der_request(b"y", cert_req=False))
    assert (bare.nonce, bare.cert_req, bare.policy) == (None, False, None)


def _with_imprint_oid(oid: str, digest: bytes) -> bytes:
    der: bytes = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {"hash_algorithm": {"algorithm": oid}, "hashed_message": digest},
        }
    ).dump()
    return der


@pytest.mark.parametrize(
    ("der", "error", "message"),
    [
        pytest.param(b"not der", MalformedRequest, GENERATE, id="not-der"),
        pytest.param(b"", MalformedRequest, GENERATE, id="empty-body"),
        pytest.param(der_request(b"x") + b"\x00", MalformedRequest, GENERATE, id="trailing"),
        pytest.param(der_request(b"x")[:-1], MalformedRequest, GENERATE, id="truncated"),
        pytest.param(der_request(b"x", "sha1"), WeakHashAlgorithm, WEAK, id="sha1"),
        pytest.param(der_request(b"x", "sha224"), MalformedRequest, GENERATE, id="sha224"),
        pytest.param(der_request(b"x", "md5"), MalformedRequest, GENERATE, id="md5"),
        pytest.param(
            _with_imprint_oid("1.2.3.4", b"\x00" * 32), MalformedRequest, GENERATE, id="unknown"
        ),
        pytest.param(
            der_request(b"", digest=b"\x01" * 20), DigestLengthMismatch, LENGTH, id="short"
        ),
        pytest.param(
            der_request(b"", "sha512", digest=b"\x01" * 32),
            DigestLengthMismatch,
            LENGTH,
            id="sha512-with-32-bytes",
        ),
        pytest.param(der_request(b"", digest=b""), MalformedRequest, GENERATE, id="empty-digest"),
        pytest.param(
            der_request(
                b"x",
                extensions=[{"extn_id": "1.2.3.4", "critical": False, "extn_value": b"\x05\x00"}],
            ),
            UnacceptedExtension,
            EXTENSION,
            id="extensions",
        ),
    ],
)
def test_der_refusals(der: bytes, error: type[TSAError], message: str) -> None:
    with pytest.raises(error) as info:
        parse_der_request(der)
    assert info.value.status == 400
    assert info.value.to_json() == {"code": 400, "message": message}


def test_json_request_fields() -> None:
    digest = hashlib.sha512(b"a").digest()
    req = parse_json_request(
        json_request(
            b"a", "sha512", nonce=2**200, certificates=True, tsaPolicyOID="1.3.6.1.4.1.57264.2"
        )
    )
    assert req == TimestampRequest("sha512", digest, 2**200, True, "1.3.6.1.4.1.57264.2")
    # As sigstore-js sends it: no nonce, no certificates; names are case-insensitive.
    plain = parse_json_request(json_request(b"a", "sha256", hashAlgorithm="SHA256"))
    assert (plain.hash_name, plain.nonce, plain.cert_req, plain.policy) == (
        "sha256",
        None,
        False,
        None,
    )
    assert parse_json_request(json_request(b"a", certificates=None)).cert_req is False
    # Leading zeros in an OID component do not make another OID.
    assert parse_json_request(json_request(b"a", tsaPolicyOID="1.3.06")).policy == "1.3.6"


def _json(**doc: Any) -> bytes:
    return json.dumps(doc).encode()


SHA256_B64 = json.loads(json_request(b"a"))["artifactHash"]


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        pytest.param(b"{", MalformedRequest, GENERATE, id="not-json"),
        pytest.param(b"\xff\xfe", MalformedRequest, GENERATE, id="not-utf8"),
        pytest.param(b"[]", MalformedRequest, GENERATE, id="not-object"),
        pytest.param(_json(artifactHash=SHA256_B64), MalformedRequest, GENERATE, id="no-alg"),
        pytest.param(
            _json(artifactHash=SHA256_B64, hashAlgorithm="SHA1"), WeakHashAlgorithm, WEAK, id="sha1"
        ),
        pytest.param(
            _json(artifactHash=SHA256_B64, hashAlgorithm="md5"),
            MalformedRequest,
            GENERATE,
            id="md5",
        ),
        pytest.param(_json(hashAlgorithm="sha256"), MalformedRequest, GENERATE, id="no-hash"),
        pytest.param(
            _json(artifactHash="!!", hashAlgorithm="sha256"), MalformedRequest, GENERATE, id="b64"
        ),
        pytest.param(
            _json(artifactHash="", hashAlgorithm="sha256"), MalformedRequest, GENERATE, id="empty"
        ),
        pytest.param(
            _json(artifactHash="AAAA", hashAlgorithm="sha256"),
            DigestLengthMismatch,
            LENGTH,
            id="len",
        ),
        pytest.param(json_request(b"a", nonce=1.5), MalformedRequest, GENERATE, id="nonce-float"),
        pytest.param(json_request(b"a", nonce=True), MalformedRequest, GENERATE, id="nonce-bool"),
        pytest.param(json_request(b"a", nonce="1"), MalformedRequest, GENERATE, id="nonce-str"),
        pytest.param(
            json_request(b"a", certificates="yes"), MalformedRequest, GENERATE, id="certs-str"
        ),
        pytest.param(
            json_request(b"a", tsaPolicyOID=123), MalformedRequest, GENERATE, id="policy-int"
        ),
        pytest.param(
            json_request(b"a", tsaPolicyOID="1.2.x"), MalformedRequest, GENERATE, id="policy-x"
        ),
        pytest.param(
            json_request(b"a", tsaPolicyOID="7.1"), MalformedRequest, GENERATE, id="policy-arc"
        ),
        pytest.param(
            json_request(b"a", tsaPolicyOID=".".join(["1"] * 129)),
            OIDTooLong,
            OID_LONG,
            id="oid-129",
        ),
        pytest.param(
            json_request(b"a", padding=" " * 1000), RequestTooLarge, TOO_LARGE, id="1025+bytes"
        ),
    ],
)
def test_json_refusals(body: bytes, error: type[TSAError], message: str) -> None:
    with pytest.raises(error) as info:
        parse_json_request(body)
    assert info.value.to_json() == {"code": 400, "message": message}


def test_json_limit_is_1024_bytes() -> None:
    base = json_request(b"a")
    pad = 1024 - len(base) - len(', "p": ""')
    exactly = base[:-1] + b', "p": "' + b" " * pad + b'"}'
    assert len(exactly) == 1024
    parse_json_request(exactly)
    with pytest.raises(RequestTooLarge):
        parse_json_request(exactly[:-1] + b" }")


def test_128_component_policy_is_allowed() -> None:
    oid = ".".join(["1"] * 128)
    assert parse_json_request(json_request(b"a", tsaPolicyOID=oid)).policy == oid


HASH_OIDS = {
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}


def _agrees_with_asn1crypto(der: bytes) -> None:
    """Our strict reader against asn1crypto: whatever we accept, asn1crypto reads the same;
    whatever we refuse, we refuse with a TSAError (never another exception).
    """
    try:
        ours = parse_der_request(der)
    except TSAError:
        return
    oid, digest, nonce, cert_req, policy, extensions = asn1crypto_parse_request(der)
    assert (HASH_OIDS[ours.hash_name], ours.digest) == (oid, digest)
    assert (ours.nonce, ours.cert_req, ours.policy, extensions) == (nonce, cert_req, policy, 0)


requests = st.builds(
    der_request,
    st.binary(max_size=8),
    st.sampled_from(["sha256", "sha384", "sha512", "sha1", "sha224"]),
    nonce=st.none() | st.integers(min_value=-(2**200), max_value=2**200),
    cert_req=st.booleans(),
    policy=st.none() | st.sampled_from(["1.2.3.4", DEFAULT_POLICY, "2.999.12345678901234567"]),
)


@settings(max_examples=300, deadline=None)
@given(requests)
def test_der_reader_equals_asn1crypto_on_valid_requests(der: bytes) -> None:
    oid, digest, nonce, cert_req, policy, _ = asn1crypto_parse_request(der)
    if oid not in HASH_OIDS.values():
        with pytest.raises((WeakHashAlgorithm, MalformedRequest)):
            parse_der_request(der)
        return
    ours = parse_der_request(der)
    assert (HASH_OIDS[ours.hash_name], ours.digest) == (oid, digest)
    assert (ours.nonce, ours.cert_req, ours.policy) == (nonce, cert_req, policy)


@settings(max_examples=500, deadline=None)
@given(requests, st.data())
def test_der_reader_on_mutated_requests(der: bytes, data: st.DataObject) -> None:
    mutated = bytearray(der)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(mutated) - 1))
        mutated[i] = data.draw(st.integers(0, 255))
    _agrees_with_asn1crypto(bytes(mutated))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_der_reader_on_any_bytes(der: bytes) -> None:
    _agrees_with_asn1crypto(der)


_BODY = der_request(b"x", cert_req=False)[2:]  # the fields, without the outer header
assert _BODY.startswith(bytes.fromhex("020101"))  # version 1 first


@pytest.mark.parametrize(
    "der",
    [
        pytest.param(b"\x30\x80" + _BODY + b"\x00\x00", id="indefinite-length"),
        pytest.param(b"\x30\x81" + bytes([len(_BODY)]) + _BODY, id="non-minimal-length"),
        pytest.param(_tlv(0x30, bytes.fromhex("02020001") + _BODY[3:]), id="non-minimal-int"),
        pytest.param(_tlv(0x30, _BODY + bytes.fromhex("010101")), id="boolean-not-ff"),
        pytest.param(_tlv(0x30, _BODY + bytes.fromhex("0101ff0101ff")), id="two-booleans"),
        pytest.param(_tlv(0x30, _BODY + bytes.fromhex("0101ff020105")), id="out-of-order"),
        pytest.param(_tlv(0x30, _BODY + bytes.fromhex("0600")), id="empty-policy"),
        pytest.param(_tlv(0x30, _BODY + bytes.fromhex("0200")), id="empty-nonce"),
        pytest.param(_tlv(0x30, _BODY + bytes.fromhex("1f0100")), id="high-tag"),
    ],
)
def test_der_reader_refuses_ber(der: bytes) -> None:
    with pytest.raises(MalformedRequest):
        parse_der_request(der)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=15), inner),
        max_leaves=8,
    )
)
def test_json_parser_raises_only_tsa_errors(doc: Any) -> None:
    for body in (json.dumps(doc).encode(), _json(artifactHash=SHA256_B64, hashAlgorithm=doc)):
        with contextlib.suppress(TSAError):
            parse_json_request(body)


@given(st.integers(min_value=-(2**300), max_value=2**300))
def test_integer_encoding_is_minimal_der(value: int) -> None:
    assert _integer(value) == core.Integer(value).dump()


# --- tokens ------------------------------------------------------------------------------------


def test_token_structure(authority: TimestampAuthority, material: Material) -> None:
    """Every field fulcio.md §7.3 names, read back with asn1crypto."""
    _, chain = material
    leaf_der = chain[0].public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha384(b"data").digest()
    resp = authority.stamp(TimestampRequest("sha384", digest, nonce=99, cert_req=True), NOW)

    outer = tsp.TimeStampResp.load(resp)
    assert outer["status"].native == {"status": "granted", "status_string": None, "fail_info": None}
    assert outer["status"].contents == b"\x02\x01\x00"  # no statusString, no failInfo
    token = outer["time_stamp_token"]
    assert token["content_type"].native == "signed_data"
    signed = token["content"]
    assert signed["version"].native == "v3"
    assert [a.dump() for a in signed["digest_algorithms"]] == [
        bytes.fromhex("300b0609608648016503040201")  # SHA-256, parameters absent
    ]
    assert signed["encap_content_info"]["content_type"].dotted == "1.2.840.113549.1.9.16.1.4"

    info = signed["encap_content_info"]["content"].parsed
    assert info["version"].native == "v1"
    assert info["policy"].dotted == DEFAULT_POLICY
    imprint = info["message_imprint"]
    assert imprint["hash_algorithm"].dump() == bytes.fromhex("300d06096086480165030402020500")
    assert imprint["hashed_message"].native == digest
    serial = info["serial_number"].native
    assert 0 < serial < 2**160
    assert info["gen_time"].contents == b"20261122123456Z"  # whole seconds, no fraction
    assert info["accuracy"].native == {"seconds": 1, "millis": None, "micros": None}
    assert info["ordering"].native is False
    assert info["nonce"].native == 99
    assert info["tsa"].name == "directory_name"
    assert info["tsa"].chosen.untag().dump() == chain[0].subject.public_bytes()
    assert info["extensions"].native is None

    assert [c.dump() for c in signed["certificates"]] == [leaf_der]
    (signer,) = signed["signer_infos"]
    assert signer["version"].native == "v1"
    assert signer["sid"].name == "issuer_and_serial_number"
    assert signer["sid"].chosen["serial_number"].native == chain[0].serial_number
    assert signer["sid"].chosen["issuer"].dump() == chain[0].issuer.public_bytes()
    assert signer["signature_algorithm"]["algorithm"].native == "sha256_ecdsa"
    attrs = {a["type"].native: a["values"][0] for a in signer["signed_attrs"]}
    assert set(attrs) == {
        "content_type",
        "message_digest",
        "signing_time",
        "signing_certificate_v2",
    }
    assert attrs["content_type"].native == "tst_info"
    assert attrs["message_digest"].native == hashlib.sha256(info.dump()).digest()
    assert attrs["signing_time"].name == "utc_time"
    assert attrs["signing_time"].native == NOW.replace(microsecond=0)
    (ess,) = attrs["signing_certificate_v2"]["certs"]
    # SHA-256, the DEFAULT, whatever the request's hash: hashAlgorithm is absent.
    assert ess.dump()[2] == 0x04  # the first element is certHash
    assert ess["cert_hash"].native == hashlib.sha256(leaf_der).digest()
    assert ess["issuer_serial"]["serial_number"].native == chain[0].serial_number

    public = chain[0].public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    signed_attrs = signer["signed_attrs"].dump(force=False)
    public.verify(
        signer["signature"].native,
        b"\x31" + signed_attrs[1:],  # verified as SET OF, stored as [0] IMPLICIT
        ec.ECDSA(hashes.SHA256()),
    )


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("nonce", [None, 0, -(2**63), 2**64 - 1, 2**300])
@pytest.mark.parametrize("cert_req", [False, True])
def test_hand_framing_equals_asn1crypto(
    authority: TimestampAuthority,
    material: Material,
    hash_name: str,
    nonce: int | None,
    cert_req: bool,
) -> None:
    digest = hashlib.new(hash_name, b"z").digest()
    resp = authority.stamp(TimestampRequest(hash_name, digest, nonce, cert_req), NOW)
    assert resp == asn1crypto_rebuild(resp, material[1], certs=1 if cert_req else 0)


def test_whole_chain_in_tokens_when_configured(tmp_path: Path) -> None:
    key, chain = build_chain(ChainSpec(intermediate=True))
    authority = TimestampAuthority(key, chain, include_chain=True)
    resp = authority.stamp(TimestampRequest("sha256", hashlib.sha256(b"c").digest(), 1, True), NOW)
    assert len(_signed(resp)["certificates"]) == 3
    assert resp == asn1crypto_rebuild(resp, chain, certs=3)
    openssl_verify(tmp_path, resp, chain, NOW, data=b"c")
    rfc3161_client_verify(resp, b"c", chain, nonce=1)
    without = authority.stamp(TimestampRequest("sha256", hashlib.sha256(b"c").digest()), NOW)
    assert _signed(without)["certificates"].native is None


def test_signing_time_is_generalized_from_2050(authority: TimestampAuthority) -> None:
    when = datetime.datetime(2050, 1, 1, 0, 0, 1, tzinfo=datetime.UTC)
    resp = authority.stamp(TimestampRequest("sha256", b"\x00" * 32), when)
    (signer,) = _signed(resp)["signer_infos"]
    times = [a["values"][0] for a in signer["signed_attrs"] if a["type"].native == "signing_time"]
    assert times[0].name == "generalized_time"
    assert times[0].native == when


def test_now_in_another_zone_is_converted_to_utc(authority: TimestampAuthority) -> None:
    cet = datetime.timezone(datetime.timedelta(hours=1))
    resp = authority.stamp(TimestampRequest("sha256", b"\x00" * 32), NOW.astimezone(cet))
    assert _tst_info(resp)["gen_time"].native == NOW.replace(microsecond=0)


def test_naive_now_is_refused(authority: TimestampAuthority) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        authority.stamp(TimestampRequest("sha256", b"\x00" * 32), NOW.replace(tzinfo=None))


def test_serials_are_unique_160_bit(authority: TimestampAuthority) -> None:
    req = TimestampRequest("sha256", b"\x00" * 32)
    serials = [_tst_info(authority.stamp(req, NOW))["serial_number"].native for _ in range(300)]
    assert len(set(serials)) == 300
    assert all(0 < s < 2**160 for s in serials)
    assert max(serials).bit_length() > 150  # random over 160 bits, not a counter


def test_policies(material: Material) -> None:
    digest = b"\x00" * 32
    default = TimestampAuthority(*material)
    assert default.accepted_policies == {DEFAULT_POLICY}
    assert _tst_info(default.stamp(TimestampRequest("sha256", digest), NOW))["policy"].dotted == (
        DEFAULT_POLICY
    )
    with pytest.raises(UnacceptedPolicy) as info:
        default.stamp(TimestampRequest("sha256", digest, policy="1.2.3.4"), NOW)
    assert info.value.to_json() == {"code": 400, "message": POLICY}

    custom = TimestampAuthority(*material, default_policy="1.2.3", accepted_policies=["1.2.3.4"])
    assert custom.accepted_policies == {"1.2.3", "1.2.3.4"}
    for asked, got in [(None, "1.2.3"), ("1.2.3.4", "1.2.3.4"), ("1.2.3", "1.2.3")]:
        resp = custom.stamp(TimestampRequest("sha256", digest, policy=asked), NOW)
        assert _tst_info(resp)["policy"].dotted == got
    with pytest.raises(UnacceptedPolicy):
        custom.stamp(TimestampRequest("sha256", digest, policy=DEFAULT_POLICY), NOW)
    with pytest.raises(ValueError, match="dotted OIDs"):
        TimestampAuthority(*material, accepted_policies=["not.an.oid"])


def test_p384_key_signs_with_sha384(tmp_path: Path) -> None:
    key, chain = build_chain(ChainSpec(curve=ec.SECP384R1()))
    authority = TimestampAuthority(key, chain)
    resp = authority.stamp(TimestampRequest("sha256", hashlib.sha256(b"p").digest()), NOW)
    (signer,) = _signed(resp)["signer_infos"]
    assert signer["digest_algorithm"]["algorithm"].native == "sha384"
    assert signer["signature_algorithm"]["algorithm"].native == "sha384_ecdsa"
    assert resp == asn1crypto_rebuild(resp, chain, certs=0)
    openssl_verify(tmp_path, resp, chain, NOW, data=b"p")
    rfc3161_client_verify(resp, b"p", chain)


def test_key_and_chain_must_fit(material: Material) -> None:
    key, chain = material
    with pytest.raises(ValueError, match="does not belong"):
        TimestampAuthority(ec.generate_private_key(ec.SECP256R1()), chain)
    with pytest.raises(ValueError, match="empty"):
        TimestampAuthority(key, [])
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(TypeError, match="ECDSA"):
        TimestampAuthority(rsa_key, chain)  # type: ignore[arg-type]
    k1_key, k1_chain = build_chain(ChainSpec(curve=ec.SECP256K1()))
    with pytest.raises(ValueError, match="secp256k1 is not supported"):
        TimestampAuthority(k1_key, k1_chain)


def test_signing_failure_is_a_typed_500(material: Material) -> None:
    key, chain = material
    authority = TimestampAuthority(FailingKey(key), chain)
    with pytest.raises(SigningFailed, match="HSM unavailable") as info:
        authority.stamp(TimestampRequest("sha256", b"\x00" * 32), NOW)
    assert info.value.to_json() == {"code": 500, "message": GENERATE}


def test_request_is_validated_when_built() -> None:
    with pytest.raises(MalformedRequest):
        TimestampRequest("sha1", b"\x00" * 20)
    with pytest.raises(DigestLengthMismatch):
        TimestampRequest("sha256", b"\x00" * 31)


def test_chain_is_exposed_leaf_first(material: Material) -> None:
    key, chain = material
    assert TimestampAuthority(key, chain).chain == tuple(chain)
    assert isinstance(chain[0], x509.Certificate)
