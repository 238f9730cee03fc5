"""RFC 3161 timestamping: request parsing and token signing (fulcio.md §7). Pure: no I/O.

Which library does what, and why:

- ``asn1crypto`` (``tsp``, ``cms``, ``x509``, ``algos``) parses every DER TimeStampReq and
  encodes every structure of a token that does not change between tokens (the TSA name, the
  signer identifier, the ESS signingCertificateV2 attribute, the certificates, each accepted
  policy OID). Building a *whole* token as an asn1crypto object costs ~2 ms, because every
  ``dump()`` re-encodes each nested value, against ~35 µs for the ECDSA signature that is the
  only real work. So ``stamp`` frames the few per-token values (serial, times, imprint, nonce,
  messageDigest, signature) around those pre-encoded parts with two small DER helpers. The
  tests rebuild every token from scratch with asn1crypto and require identical bytes, and three
  independent verifiers (OpenSSL, rfc3161-client's Rust DER parser, rfc3161ng's pyasn1) accept
  them.
- ``rfc3161ng`` is a *client* library (request building, RSA-only verification) with no
  server-side signing, so it serves only as one of the verifiers in the tests.
- ``cryptography`` signs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from asn1crypto import cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "DEFAULT_POLICY",
    "MAX_JSON_REQUEST",
    "BodyTooLarge",
    "DigestLengthMismatch",
    "MalformedRequest",
    "OIDTooLong",
    "RequestTooLarge",
    "SigningFailed",
    "TSAError",
    "TimestampAuthority",
    "TimestampRequest",
    "UnacceptedExtension",
    "UnacceptedPolicy",
    "UnsupportedMediaType",
    "WeakHashAlgorithm",
    "parse_der_request",
    "parse_json_request",
]

DEFAULT_POLICY = "1.3.6.1.4.1.57264.2"
MAX_JSON_REQUEST = 1024
MAX_OID_COMPONENTS = 128  # RFC 2578 §3.5, as timestamp-authority

# Accepted imprint hashes: name -> (OID, digest length). SHA-224 and anything else is refused.
_HASHES: dict[str, tuple[str, int]] = {
    "sha256": ("2.16.840.1.101.3.4.2.1", 32),
    "sha384": ("2.16.840.1.101.3.4.2.2", 48),
    "sha512": ("2.16.840.1.101.3.4.2.3", 64),
}
_SHA1_OID = "1.3.14.3.2.26"


# --- DER helpers -----------------------------------------------------------------------------


def _header(tag: int, n: int) -> bytes:
    """A DER identifier and length for ``n`` content bytes: single-byte tag, minimal length."""
    if n < 0x80:
        return bytes((tag, n))
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length


def _tlv(tag: int, content: bytes) -> bytes:
    """One DER tag-length-value."""
    return _header(tag, len(content)) + content


def _integer(value: int) -> bytes:
    """A DER INTEGER: minimal two's complement (a leading 0x00 keeps high-bit values positive)."""
    # ~value maps -2**k .. -1 onto 2**k - 1 .. 0, so one formula covers both signs.
    size = (value if value >= 0 else ~value).bit_length() // 8 + 1
    return _tlv(0x02, value.to_bytes(size, "big", signed=True))


def _oid(dotted: str) -> bytes:
    der: bytes = core.ObjectIdentifier(dotted).dump()
    return der


_NULL = b"\x05\x00"
_VERSION_1 = _integer(1)
_VERSION_3 = _integer(3)
_ACCURACY_1S = _tlv(0x30, _integer(1))  # Accuracy { seconds 1 }
_STATUS_GRANTED = _tlv(0x30, _integer(0))  # PKIStatusInfo { granted }, nothing else
_OID_TST_INFO = _oid("1.2.840.113549.1.9.16.1.4")
_OID_SIGNED_DATA = _oid("1.2.840.113549.1.7.2")
_OID_MESSAGE_DIGEST = _oid("1.2.840.113549.1.9.4")
_OID_SIGNING_TIME = _oid("1.2.840.113549.1.9.5")
_CONTENT_TYPE_ATTR = _tlv(0x30, _oid("1.2.840.113549.1.9.3") + _tlv(0x31, _OID_TST_INFO))


# --- errors ------------------------------------------------------------------------------------


class TSAError(Exception):
    """Base of every refusal; ``status`` is the HTTP status, ``message`` the text sent back.

    Messages are timestamp-authority's own (fulcio.md §7.1) so that clients and operators see
    the same text from either server. ``detail`` is for the debug log only and never sent.
    """

    status: ClassVar[int] = 400
    default_message: ClassVar[str] = "Error generating timestamp response"

    def __init__(self, detail: str = "", *, message: str | None = None) -> None:
        self.message = message or self.default_message
        self.detail = detail
        super().__init__(f"{self.message}: {detail}" if detail else self.message)

    def to_json(self) -> dict[str, int | str]:
        """The ``{"code", "message"}`` error body."""
        return {"code": self.status, "message": self.message}


class MalformedRequest(TSAError):
    """Not a parsable request, trailing bytes, an empty digest or an unknown hash algorithm."""


class WeakHashAlgorithm(TSAError):
    """SHA-1 (or MD5) imprint."""

    default_message = "Weak hash algorithm in timestamp request"


class DigestLengthMismatch(TSAError):
    """The digest is not as long as the named hash algorithm's output."""

    default_message = "Message digest has incorrect length for specified algorithm"


class UnacceptedPolicy(TSAError):
    """A requested policy that is not in the accepted list."""

    default_message = "unaccepted policy: requested TSA policy is not supported by the TSA"


class UnacceptedExtension(TSAError):
    """The request carries extensions; this TSA copies none into tokens."""

    default_message = "unaccepted extension: requested extensions are not supported by the TSA"


class OIDTooLong(TSAError):
    """A JSON ``tsaPolicyOID`` with more than 128 components."""

    default_message = "OID should be comprised of at most 128 components"


class RequestTooLarge(TSAError):
    """A JSON request over 1024 bytes."""

    default_message = "timestamp request is too large"


class BodyTooLarge(TSAError):
    """Any body over the server's limit (1 MiB by default)."""

    status = 413
    default_message = "request body too large"


class UnsupportedMediaType(TSAError):
    """Neither ``application/timestamp-query`` nor ``application/json``."""

    status = 415
    default_message = (
        "unsupported media type, only [application/json application/timestamp-query] are allowed"
    )


class SigningFailed(TSAError):
    """The signer failed (an HSM error, say); the request itself was fine."""

    status = 500


# --- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimestampRequest:
    """What a request asks for, in either wire form; validated when built.

    ``policy`` is a dotted OID or None for the TSA's default; whether it is *accepted* is the
    authority's decision (``TimestampAuthority.stamp``), not the request's.
    """

    hash_name: str
    digest: bytes
    nonce: int | None = None
    cert_req: bool = False
    policy: str | None = None

    def __post_init__(self) -> None:
        if self.hash_name not in _HASHES:
            raise MalformedRequest(f"hash algorithm {self.hash_name!r} is not supported")
        if not self.digest:
            raise MalformedRequest("empty digest")
        want = _HASHES[self.hash_name][1]
        if len(self.digest) != want:
            raise DigestLengthMismatch(f"{len(self.digest)} bytes, want {want}")


class _Reader:
    """A strict DER reader over one buffer: definite, minimal lengths, low tag numbers.

    TimeStampReq is four levels deep at most, so reading it by hand costs ~6 µs where
    asn1crypto's generic, lazy parser costs ~75 µs, more than signing the token. The tests
    check this reader against asn1crypto on generated and mutated requests.
    """

    __slots__ = ("buf",)

    def __init__(self, buf: bytes) -> None:
        self.buf = buf

    def element(self, pos: int, end: int) -> tuple[int, int, int]:
        """(tag, content start, content end) of the element at ``pos``, inside ``end``."""
        buf = self.buf
        if pos + 2 > end:
            raise MalformedRequest(f"truncated at byte {pos}")
        tag, first = buf[pos], buf[pos + 1]
        if tag & 0x1F == 0x1F:
            raise MalformedRequest(f"high tag number at byte {pos}")
        pos += 2
        if first < 0x80:
            length = first
        else:
            n = first & 0x7F
            if n == 0 or n > 4:  # indefinite (BER) or absurdly long
                raise MalformedRequest(f"length form 0x{first:02x} at byte {pos - 1}")
            if pos + n > end:
                raise MalformedRequest(f"truncated length at byte {pos}")
            length = int.from_bytes(buf[pos : pos + n], "big")
            if buf[pos] == 0 or length < 0x80:
                raise MalformedRequest(f"non-minimal length at byte {pos}")
            pos += n
        if pos + length > end:
            raise MalformedRequest(f"element at byte {pos} overruns its container")
        return tag, pos, pos + length

    def expect(self, tag: int, pos: int, end: int) -> tuple[int, int]:
        """(content start, content end) of the element at ``pos``, which must be ``tag``."""
        got, start, stop = self.element(pos, end)
        if got != tag:
            raise MalformedRequest(f"tag 0x{got:02x} at byte {pos}, want 0x{tag:02x}")
        return start, stop

    def integer(self, start: int, stop: int) -> int:
        """The INTEGER with contents ``buf[start:stop]``, which must be minimal."""
        content = self.buf[start:stop]
        if not content:
            raise MalformedRequest(f"empty INTEGER at byte {start}")
        if len(content) > 1 and (
            (content[0] == 0x00 and content[1] < 0x80)
            or (content[0] == 0xFF and content[1] >= 0x80)
        ):
            raise MalformedRequest(f"non-minimal INTEGER at byte {start}")
        return int.from_bytes(content, "big", signed=True)


def _oid_contents(dotted: str) -> bytes:
    return _oid(dotted)[2:]


_IMPRINT_OIDS = {_oid_contents(oid): name for name, (oid, _) in _HASHES.items()}
_SHA1_CONTENTS = _oid_contents(_SHA1_OID)


def parse_der_request(der: bytes) -> TimestampRequest:
    """Parse a DER ``TimeStampReq`` (RFC 3161 §2.4.1); raise a ``TSAError`` subclass if refused.

    ::

        TimeStampReq ::= SEQUENCE {
            version INTEGER, messageImprint SEQUENCE { AlgorithmIdentifier, OCTET STRING },
            reqPolicy OBJECT IDENTIFIER OPTIONAL, nonce INTEGER OPTIONAL,
            certReq BOOLEAN DEFAULT FALSE, extensions [0] IMPLICIT Extensions OPTIONAL }

    Strict DER, no trailing bytes. The version is not checked, as upstream. Hash parameters
    must be absent or NULL (upstream ignores them; RFC 5754 allows nothing else).
    """
    r = _Reader(der)
    start, end = r.expect(0x30, 0, len(der))
    if end != len(der):
        raise MalformedRequest(f"{len(der) - end} trailing bytes")
    version_start, pos = r.expect(0x02, start, end)
    r.integer(version_start, pos)  # well-formed; its value is not checked, as upstream
    imprint_start, pos = r.expect(0x30, pos, end)
    alg_start, alg_end = r.expect(0x30, imprint_start, pos)
    oid_start, oid_end = r.expect(0x06, alg_start, alg_end)
    # SHA-2 parameters are absent or NULL (RFC 5754 §2); every client sends one of the two.
    if der[oid_end:alg_end] not in (b"", _NULL):
        raise MalformedRequest("hash AlgorithmIdentifier parameters are neither absent nor NULL")
    digest_start, digest_end = r.expect(0x04, alg_end, pos)
    if digest_end != pos:
        raise MalformedRequest("messageImprint has extra fields")
    policy: str | None = None
    nonce: int | None = None
    cert_req = has_extensions = False
    # The optional fields: reqPolicy, nonce, certReq, extensions; each at most once, in order.
    order = (0x06, 0x02, 0x01, 0xA0)
    allowed = 0
    while pos < end:
        tag, a, b = r.element(pos, end)
        if tag not in order[allowed:]:
            raise MalformedRequest(f"unexpected field (tag 0x{tag:02x}) at byte {pos}")
        allowed = order.index(tag) + 1
        if tag == 0x06:
            try:
                policy = str(core.ObjectIdentifier.load(der[pos:b]).dotted)
            except ValueError as exc:
                raise MalformedRequest(f"reqPolicy: {exc}") from None
            if not policy:
                raise MalformedRequest("empty reqPolicy")
        elif tag == 0x02:
            nonce = r.integer(a, b)
        elif tag == 0x01:
            if b - a != 1 or der[a] not in (0x00, 0xFF):
                raise MalformedRequest(f"certReq at byte {pos} is not a DER BOOLEAN")
            cert_req = der[a] == 0xFF
        else:
            has_extensions = b > a
        pos = b
    oid = der[oid_start:oid_end]
    if oid == _SHA1_CONTENTS:
        raise WeakHashAlgorithm(_SHA1_OID)
    hash_name = _IMPRINT_OIDS.get(oid)
    if hash_name is None:
        raise MalformedRequest(f"hash algorithm {oid.hex()} is not supported")
    if has_extensions:
        raise UnacceptedExtension()
    return TimestampRequest(hash_name, der[digest_start:digest_end], nonce, cert_req, policy)


def _parse_oid(dotted: str) -> str:
    """Check a JSON ``tsaPolicyOID``: at most 128 numeric components, encodable as DER."""
    parts = dotted.split(".")
    if len(parts) > MAX_OID_COMPONENTS:
        raise OIDTooLong(f"{len(parts)} components")
    if len(parts) < 2 or not all(p.isascii() and p.isdigit() for p in parts):
        raise MalformedRequest(f"tsaPolicyOID {dotted[:64]!r} is not a dotted OID")
    try:
        return str(core.ObjectIdentifier(dotted).dotted)
    except ValueError as exc:
        raise MalformedRequest(f"tsaPolicyOID: {exc}") from None


def parse_json_request(body: bytes) -> TimestampRequest:
    """Parse the JSON request sigstore-js sends (at most 1024 bytes)::

    {"artifactHash": "<std base64 digest>", "hashAlgorithm": "sha256|sha384|sha512",
     "nonce": <integer>, "certificates": <bool>, "tsaPolicyOID": "1.2.3"}

    Unknown fields are ignored, as Go's ``encoding/json`` does; a missing ``hashAlgorithm``
    is refused like an unknown one.
    """
    if len(body) > MAX_JSON_REQUEST:
        raise RequestTooLarge(f"{len(body)} bytes, at most {MAX_JSON_REQUEST}")
    try:
        doc: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedRequest("not a JSON object")
    name = doc.get("hashAlgorithm")
    if not isinstance(name, str):
        raise MalformedRequest("hashAlgorithm missing or not a string")
    name = name.lower()
    if name == "sha1":
        raise WeakHashAlgorithm(name)
    if name not in _HASHES:
        raise MalformedRequest(f"hash algorithm {name[:32]!r} is not supported")
    artifact = doc.get("artifactHash")
    if not isinstance(artifact, str):
        raise MalformedRequest("artifactHash missing or not a string")
    try:
        digest = base64.b64decode(artifact, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedRequest("artifactHash is not standard base64") from None
    nonce = doc.get("nonce")
    # bool is an int subclass in Python; JSON true is not a nonce.
    if nonce is not None and (not isinstance(nonce, int) or isinstance(nonce, bool)):
        raise MalformedRequest("nonce is not an integer")
    cert_req = doc.get("certificates")
    if cert_req is None:  # absent or JSON null: Go leaves the bool false
        cert_req = False
    if not isinstance(cert_req, bool):
        raise MalformedRequest("certificates is not a boolean")
    policy = doc.get("tsaPolicyOID")
    if policy is not None and not isinstance(policy, str):
        raise MalformedRequest("tsaPolicyOID is not a string")
    policy = _parse_oid(policy) if policy else None
    return TimestampRequest(name, digest, nonce, cert_req, policy)


# --- tokens ------------------------------------------------------------------------------------

# Signer hash by curve: the ECDSA signature and messageDigest use the curve's natural hash.
_SIGNER_HASH: dict[str, tuple[hashes.HashAlgorithm, str]] = {
    "secp256r1": (hashes.SHA256(), "sha256"),
    "secp384r1": (hashes.SHA384(), "sha384"),
    "secp521r1": (hashes.SHA512(), "sha512"),
}
_ECDSA_OID = {
    "sha256": "1.2.840.10045.4.3.2",
    "sha384": "1.2.840.10045.4.3.3",
    "sha512": "1.2.840.10045.4.3.4",
}


class TimestampAuthority:
    """Signs RFC 3161 tokens with an ECDSA key whose certificate is ``chain[0]``.

    sigstore-js accepts only ECDSA TSA signatures, so other key types are refused. The chain is
    leaf first; ``keys.validate_chain`` checks the rest of it, this class only that the key
    belongs to the leaf.
    """

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        chain: Sequence[x509.Certificate],
        *,
        default_policy: str = DEFAULT_POLICY,
        accepted_policies: Collection[str] = (DEFAULT_POLICY,),
        include_chain: bool = False,
    ) -> None:
        """``accepted_policies`` are the OIDs a request may ask for (the default always is);
        ``include_chain`` puts the whole chain, not just the leaf, into tokens with certReq.
        """
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("the TSA key must be ECDSA (sigstore-js verifies nothing else)")
        if not chain:
            raise ValueError("the certificate chain is empty")
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(serialization.Encoding.DER, spki) != chain[
            0
        ].public_key().public_bytes(serialization.Encoding.DER, spki):
            raise ValueError("the TSA key does not belong to the leaf certificate")
        signer = _SIGNER_HASH.get(key.curve.name)
        if signer is None:
            raise ValueError(f"curve {key.curve.name} is not supported; use P-256, P-384 or P-521")
        self._key = key
        self._chain = tuple(chain)
        self._ecdsa = ec.ECDSA(signer[0])
        self._signer_hash = signer[1]
        try:
            self._default_policy = _parse_oid(default_policy)
            policies = {self._default_policy, *map(_parse_oid, accepted_policies)}
        except TSAError as exc:
            raise ValueError(f"policy OIDs must be dotted OIDs: {exc}") from None
        self._policies = {p: _oid(p) for p in policies}
        self._encode_constants(include_chain)
        self._time_cache: tuple[int, bytes, bytes] = (-1, b"", b"")

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """The certificate chain, TSA leaf first, root last."""
        return self._chain

    @property
    def accepted_policies(self) -> frozenset[str]:
        """Every policy OID a request may name."""
        return frozenset(self._policies)

    def _encode_constants(self, include_chain: bool) -> None:
        # Everything identical across tokens is encoded once, with asn1crypto.
        ders = [c.public_bytes(serialization.Encoding.DER) for c in self._chain]
        leaf = asn1_x509.Certificate.load(ders[0])
        self._tsa_name = _tlv(  # tsa [0] EXPLICIT GeneralName (directoryName [4])
            0xA0, asn1_x509.GeneralName(name="directory_name", value=leaf.subject).dump()
        )
        self._sid = cms.SignerIdentifier(
            name="issuer_and_serial_number",
            value={"issuer": leaf.issuer, "serial_number": leaf.serial_number},
        ).dump()
        # ESS signingCertificateV2 (RFC 5035 §5.4.1, RFC 5816) binds the signer certificate.
        # We hash it with SHA-256, the DEFAULT, so hashAlgorithm is omitted. timestamp-authority
        # instead uses the *request's* imprint hash and names it when it is not SHA-256; both
        # are valid because ESSCertIDv2 states its own algorithm. Of the verifiers, only OpenSSL
        # recomputes certHash (with the stated algorithm); rfc3161-client (sigstore-python) and
        # timestamp-authority's verifier compare only issuer and serial. A fixed choice keeps
        # the attribute constant and readable by verifiers that know only the default.
        self._ess_attr = cms.CMSAttribute(
            {
                "type": "signing_certificate_v2",
                "values": [
                    tsp.SigningCertificateV2(
                        {
                            "certs": [
                                {
                                    "cert_hash": hashlib.sha256(ders[0]).digest(),
                                    "issuer_serial": {
                                        "issuer": [
                                            asn1_x509.GeneralName(
                                                name="directory_name", value=leaf.issuer
                                            )
                                        ],
                                        "serial_number": leaf.serial_number,
                                    },
                                }
                            ]
                        }
                    )
                ],
            }
        ).dump()
        # certificates [0] IMPLICIT SET OF: DER orders the elements by their encodings.
        self._certificates = _tlv(0xA0, b"".join(sorted(ders if include_chain else ders[:1])))
        # Digest lengths are fixed per algorithm, so everything in front of a digest is too.
        # messageImprint: SEQUENCE { the algorithm with explicit NULL params, OCTET STRING }.
        self._imprint_prefix = {}
        for name, (oid, size) in _HASHES.items():
            alg = _tlv(0x30, _oid(oid) + _NULL)
            self._imprint_prefix[name] = _header(0x30, len(alg) + 2 + size) + alg + bytes((4, size))
        signer_size = _HASHES[self._signer_hash][1]
        inner = _header(0x31, signer_size + 2) + bytes((4, signer_size))
        self._message_digest_prefix = (
            _header(0x30, len(_OID_MESSAGE_DIGEST) + len(inner) + signer_size)
            + _OID_MESSAGE_DIGEST
            + inner
        )
        # CMS digest algorithms without parameters (RFC 5754 §2: SHOULD be absent).
        self._digest_alg = _tlv(0x30, _oid(_HASHES[self._signer_hash][0]))
        self._digest_algs = _tlv(0x31, self._digest_alg)
        self._signature_alg = _tlv(0x30, _oid(_ECDSA_OID[self._signer_hash]))

    def _times(self, now: datetime) -> tuple[bytes, bytes]:
        """(genTime, signingTime attribute) for ``now``, truncated to whole seconds.

        Cached per second: at thousands of tokens per second, most share their second.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        second = int(now.timestamp() // 1)
        cached = self._time_cache
        if cached[0] == second:
            return cached[1], cached[2]
        t = datetime.fromtimestamp(second, UTC)
        stamp = f"{t.month:02}{t.day:02}{t.hour:02}{t.minute:02}{t.second:02}Z".encode()
        gen_time = _tlv(0x18, f"{t.year:04}".encode() + stamp)
        # RFC 5652 §11.3: signingTime is UTCTime from 1950 through 2049, GeneralizedTime after.
        signing_time = (
            _tlv(0x17, f"{t.year % 100:02}".encode() + stamp) if 1950 <= t.year < 2050 else gen_time
        )
        attr = _tlv(0x30, _OID_SIGNING_TIME + _tlv(0x31, signing_time))
        self._time_cache = (second, gen_time, attr)
        return gen_time, attr

    def stamp(self, request: TimestampRequest, now: datetime) -> bytes:
        """Return the DER ``TimeStampResp`` (status granted) for ``request`` at time ``now``.

        ``now`` must be timezone-aware; genTime and signingTime drop its fractional seconds.
        Raises ``UnacceptedPolicy`` for a policy outside the accepted list and
        ``SigningFailed`` if the key cannot sign.
        """
        policy_der = self._policies.get(request.policy or self._default_policy)
        if policy_der is None:
            raise UnacceptedPolicy(f"{request.policy}")
        gen_time, signing_time_attr = self._times(now)
        # TSTInfo (RFC 3161 §2.4.2). The serial is 160 random bits, as timestamp-authority:
        # unique without coordination between workers or replicas.
        serial = int.from_bytes(os.urandom(20), "big") or 1
        tst_info = _tlv(
            0x30,
            _VERSION_1
            + policy_der
            + self._imprint_prefix[request.hash_name]
            + request.digest
            + _integer(serial)
            + gen_time
            + _ACCURACY_1S
            + (b"" if request.nonce is None else _integer(request.nonce))
            + self._tsa_name,
        )
        message_digest = hashlib.new(self._signer_hash, tst_info).digest()
        attrs = b"".join(  # a SET OF in DER: elements ordered by their encodings
            sorted(
                (
                    _CONTENT_TYPE_ATTR,
                    self._message_digest_prefix + message_digest,
                    signing_time_attr,
                    self._ess_attr,
                )
            )
        )
        attrs_length = _header(0, len(attrs))[1:]
        try:
            # The signature covers the attributes as a SET OF (RFC 5652 §5.4) ...
            signature = self._key.sign(b"\x31" + attrs_length + attrs, self._ecdsa)
        except Exception as exc:  # a key in an HSM or KMS can fail for reasons of its own
            raise SigningFailed(f"{type(exc).__name__}: {exc}") from exc
        signer_info = _tlv(
            0x30,
            _VERSION_1
            + self._sid
            + self._digest_alg
            + b"\xa0"  # ... and they are stored as [0] IMPLICIT.
            + attrs_length
            + attrs
            + self._signature_alg
            + _tlv(0x04, signature),
        )
        signed_data = _tlv(
            0x30,
            _VERSION_3
            + self._digest_algs
            + _tlv(0x30, _OID_TST_INFO + _tlv(0xA0, _tlv(0x04, tst_info)))
            + (self._certificates if request.cert_req else b"")
            + _tlv(0x31, signer_info),
        )
        token = _tlv(0x30, _OID_SIGNED_DATA + _tlv(0xA0, signed_data))
        return _tlv(0x30, _STATUS_GRANTED + token)
