"""RFC 3161 timestamping: request parsing and token signing (fulcio.md §7). Pure, no I/O.

Library choices: ``asn1crypto`` (its ``tsp`` and ``cms`` modules) builds and parses every ASN.1
structure here, because it models TimeStampReq/TSTInfo/SignedData completely and round-trips DER
exactly; ``rfc3161ng`` only wraps pyasn1 types for *clients* (request building and verification)
and offers no server-side signing, so it is used in the tests as one of three independent
verifiers. Signatures come from ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "DEFAULT_POLICY",
    "BadRequest",
    "TSAError",
    "TimestampAuthority",
    "TimestampRequest",
    "parse_der_request",
    "parse_json_request",
]

DEFAULT_POLICY = "1.3.6.1.4.1.57264.2"
MAX_JSON_REQUEST = 1024

# name -> (asn1crypto algorithm name, digest length)
_HASHES = {"sha256": 32, "sha384": 48, "sha512": 64}
_OID_TO_NAME = {
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
_WEAK = {"1.3.14.3.2.26", "sha1", "1.2.840.113549.2.5", "md5"}


class TSAError(Exception):
    """Base of the TSA's deliberate errors; ``status`` is the HTTP status to answer with."""

    status: ClassVar[int] = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, int | str]:
        """The ``{code, message}`` error body."""
        return {"code": self.status, "message": self.message}


class BadRequest(TSAError):
    """The request cannot be timestamped (400); the message says why, as timestamp-authority."""


@dataclass(frozen=True, slots=True)
class TimestampRequest:
    """What a request asks for, in either wire form."""

    hash_name: str
    digest: bytes
    nonce: int | None = None
    cert_req: bool = False
    policy: str | None = None


def _check_digest(hash_name: str, digest: bytes) -> None:
    if not digest:
        raise BadRequest("Error generating timestamp response")
    if len(digest) != _HASHES[hash_name]:
        raise BadRequest("Message digest has incorrect length for specified algorithm")


def parse_der_request(der: bytes) -> TimestampRequest:
    """Parse a DER TimeStampReq; raise ``BadRequest`` for anything timestamp-authority refuses."""
    try:
        req = tsp.TimeStampReq.load(der, strict=True)
        imprint = req["message_imprint"]
        oid = imprint["hash_algorithm"]["algorithm"].dotted
        digest = bytes(imprint["hashed_message"].native)
        policy = req["req_policy"].dotted if req["req_policy"].native is not None else None
        nonce = req["nonce"].native
        cert_req = bool(req["cert_req"].native)
        has_extensions = req["extensions"].native is not None
    except (ValueError, TypeError, KeyError):
        raise BadRequest("Error generating timestamp response") from None
    if oid in _WEAK:
        raise BadRequest("Weak hash algorithm in timestamp request")
    hash_name = _OID_TO_NAME.get(oid)
    if hash_name is None:
        raise BadRequest("Error generating timestamp response")
    if has_extensions:
        raise BadRequest("unaccepted extension: requested extensions are not supported by the TSA")
    _check_digest(hash_name, digest)
    return TimestampRequest(hash_name, digest, nonce, cert_req, policy)


def parse_json_request(body: bytes) -> TimestampRequest:
    """Parse the JSON request form sigstore-js sends."""
    if len(body) > MAX_JSON_REQUEST:
        raise BadRequest("timestamp request is too large")
    try:
        doc: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("Error generating timestamp response") from None
    if not isinstance(doc, dict):
        raise BadRequest("Error generating timestamp response")
    name = str(doc.get("hashAlgorithm", "sha256")).lower()
    if name in _WEAK:
        raise BadRequest("Weak hash algorithm in timestamp request")
    if name not in _HASHES:
        raise BadRequest("Error generating timestamp response")
    artifact = doc.get("artifactHash")
    if not isinstance(artifact, str):
        raise BadRequest("Error generating timestamp response")
    try:
        digest = base64.b64decode(artifact, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("Error generating timestamp response") from None
    nonce = doc.get("nonce")
    if nonce is not None and (not isinstance(nonce, int) or isinstance(nonce, bool)):
        raise BadRequest("Error generating timestamp response")
    policy = doc.get("tsaPolicyOID")
    if policy is not None and not isinstance(policy, str):
        raise BadRequest("Error generating timestamp response")
    if isinstance(policy, str) and len(policy.split(".")) > 128:
        raise BadRequest("OID should be comprised of at most 128 components")
    _check_digest(name, digest)
    return TimestampRequest(name, digest, nonce, bool(doc.get("certificates", False)), policy)


class TimestampAuthority:
    """Signs RFC 3161 tokens with an ECDSA key whose certificate chain ends at ``chain[-1]``."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        chain: list[x509.Certificate],
        *,
        default_policy: str = DEFAULT_POLICY,
        accepted_policies: Collection[str] = (DEFAULT_POLICY,),
    ) -> None:
        self._key = key
        self.chain = chain
        self._leaf = asn1_x509.Certificate.load(chain[0].public_bytes(serialization.Encoding.DER))
        self._default_policy = default_policy
        self._accepted = frozenset(accepted_policies) | {default_policy}
        leaf_der = chain[0].public_bytes(serialization.Encoding.DER)
        # ESS signingCertificateV2 (RFC 5816) binds the signer certificate; SHA-256 is the
        # default hashAlgorithm and is then omitted from the encoding.
        signing_certificate = tsp.SigningCertificateV2(
            {
                "certs": [
                    {
                        "cert_hash": hashlib.sha256(leaf_der).digest(),
                        "issuer_serial": {
                            "issuer": [
                                asn1_x509.GeneralName(
                                    name="directory_name", value=self._leaf.issuer
                                )
                            ],
                            "serial_number": self._leaf.serial_number,
                        },
                    }
                ]
            }
        )
        self._preload(signing_certificate)

    def _preload(self, signing_certificate: tsp.SigningCertificateV2) -> None:
        # Every constant part of a token is encoded once, with asn1crypto; ``stamp`` then only
        # frames bytes. Building each token as a fresh asn1crypto structure cost ~2 ms (it
        # re-encodes every nested value on dump), against ~35 µs for the ECDSA signature that
        # is the real work (bench/bench_tsa.py). The tests parse every token back with
        # asn1crypto and three independent verifiers.
        leaf = self._leaf
        self._tsa_name = _tlv(
            0xA0, asn1_x509.GeneralName(name="directory_name", value=leaf.subject).dump()
        )
        self._sid = cms.SignerIdentifier(
            name="issuer_and_serial_number",
            value={"issuer": leaf.issuer, "serial_number": leaf.serial_number},
        ).dump()
        self._ess_attr = cms.CMSAttribute(
            {"type": "signing_certificate_v2", "values": [signing_certificate]}
        ).dump()
        self._certificates = _tlv(0xA0, leaf.dump())
        self._policies = {p: core.ObjectIdentifier(p).dump() for p in self._accepted}
        self._imprint_algs = {
            name: algos.DigestAlgorithm({"algorithm": name, "parameters": core.Null()}).dump()
            for name in _HASHES
        }

    def stamp(self, request: TimestampRequest, now: datetime) -> bytes:
        """Return the DER TimeStampResp (status granted) for ``request`` at time ``now``."""
        policy = request.policy or self._default_policy
        policy_der = self._policies.get(policy)
        if policy_der is None:
            raise BadRequest("unaccepted policy: requested TSA policy is not supported by the TSA")
        gen_time = now.astimezone(UTC)
        # TSTInfo (RFC 3161 §2.4.2); 160 random serial bits, as timestamp-authority, so serials
        # are unique without coordination between replicas.
        tst_der = _tlv(
            0x30,
            _VERSION_1
            + policy_der
            + _tlv(0x30, self._imprint_algs[request.hash_name] + _tlv(0x04, request.digest))
            + _integer(int.from_bytes(secrets.token_bytes(20), "big"))
            + _tlv(0x18, gen_time.strftime("%Y%m%d%H%M%SZ").encode())
            + _ACCURACY_1S
            + (b"" if request.nonce is None else _integer(request.nonce))
            + self._tsa_name,
        )
        attributes = sorted(  # DER: a SET OF is ordered by the encodings of its elements
            [
                _CONTENT_TYPE_ATTR,
                _tlv(
                    0x30,
                    _OID_MESSAGE_DIGEST + _tlv(0x31, _tlv(0x04, hashlib.sha256(tst_der).digest())),
                ),
                _tlv(
                    0x30,
                    _OID_SIGNING_TIME
                    + _tlv(0x31, _tlv(0x17, gen_time.strftime("%y%m%d%H%M%SZ").encode())),
                ),
                self._ess_attr,
            ]
        )
        attrs = b"".join(attributes)
        # The signature covers the attributes encoded as a SET OF (RFC 5652 §5.4) …
        signature = self._key.sign(_tlv(0x31, attrs), ec.ECDSA(hashes.SHA256()))
        signer_info = _tlv(
            0x30,
            _VERSION_1
            + self._sid
            + _SHA256_ALG
            + _tlv(0xA0, attrs)  # … and is stored as [0] IMPLICIT.
            + _ECDSA_SHA256_ALG
            + _tlv(0x04, signature),
        )
        signed_data = _tlv(
            0x30,
            _VERSION_3
            + _tlv(0x31, _SHA256_ALG)
            + _tlv(0x30, _OID_TST_INFO + _tlv(0xA0, _tlv(0x04, tst_der)))
            + (self._certificates if request.cert_req else b"")
            + _tlv(0x31, signer_info),
        )
        token = _tlv(0x30, _OID_SIGNED_DATA + _tlv(0xA0, signed_data))
        return _tlv(0x30, _STATUS_GRANTED + token)


def _tlv(tag: int, content: bytes) -> bytes:
    """One DER tag-length-value (definite length, single-byte tag)."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _integer(value: int) -> bytes:
    """A DER INTEGER (two's complement, minimal length)."""
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def _oid(dotted: str) -> bytes:
    der: bytes = core.ObjectIdentifier(dotted).dump()
    return der


_VERSION_1 = _integer(1)
_VERSION_3 = _integer(3)
_ACCURACY_1S = _tlv(0x30, _integer(1))
_STATUS_GRANTED = _tlv(0x30, _integer(0))
_OID_TST_INFO = _oid("1.2.840.113549.1.9.16.1.4")
_OID_SIGNED_DATA = _oid("1.2.840.113549.1.7.2")
_OID_MESSAGE_DIGEST = _oid("1.2.840.113549.1.9.4")
_OID_SIGNING_TIME = _oid("1.2.840.113549.1.9.5")
_CONTENT_TYPE_ATTR = _tlv(0x30, _oid("1.2.840.113549.1.9.3") + _tlv(0x31, _OID_TST_INFO))
_SHA256_ALG: bytes = algos.DigestAlgorithm({"algorithm": "sha256"}).dump()
_ECDSA_SHA256_ALG: bytes = algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}).dump()
