"""RFC 6962 TLS encodings (fulcio.md §5.2-§5.4): log entries and what an SCT signs, SCTs, SCT
lists, tree head signatures. Pure.

The one home of these encodings: the CT log appends ``TimestampedEntry.merkle_tree_leaf()``,
signs ``sct_signed_input()`` and answers with a ``SignedCertificateTimestamp``, which the CA embeds
as it is with ``sct_list_extension_value``. Widths (fulcio.md §5.2, §9.1): u24 for certificates
and TBS, u16 for extensions and signatures, u64 milliseconds for timestamps.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = [
    "HASH_SHA256",
    "POISON_EXTENSION_DER",
    "POISON_OID",
    "SCT_LIST_OID",
    "SIGNATURE_ECDSA",
    "SIGNATURE_RSA",
    "EntryType",
    "SignedCertificateTimestamp",
    "TimestampedEntry",
    "certificate_chain",
    "digitally_signed",
    "encode_sct_list",
    "issuer_key_hash",
    "precert_chain_entry",
    "precert_entry",
    "precert_tbs",
    "remove_poison",
    "sct_list_extension_value",
    "strip_poison",
    "tree_head_input",
]

POISON_OID = "1.3.6.1.4.1.11129.2.4.3"
# The whole poison Extension as DER: that OID, critical TRUE, value NULL (RFC 6962 §3.1). It is
# the only form accepted: anything else is not a precertificate a verifier can rebuild.
POISON_EXTENSION_DER = bytes.fromhex("3013060a2b06010401d6790204030101ff04020500")
POISON_OID_DER = bytes.fromhex("060a2b06010401d679020403")
SCT_LIST_OID = "1.3.6.1.4.1.11129.2.4.2"
# TLS HashAlgorithm and SignatureAlgorithm codes (RFC 5246 §7.4.1.4.1).
HASH_SHA256 = 4
SIGNATURE_RSA = 1
SIGNATURE_ECDSA = 3
_U16 = 0xFFFF
_U24 = 0xFFFFFF


class EntryType(IntEnum):
    """RFC 6962 LogEntryType."""

    X509 = 0
    PRECERT = 1


def _u24(data: bytes, what: str) -> bytes:
    if len(data) > _U24:
        raise ValueError(f"{what} is {len(data)} bytes, more than a u24 length allows")
    return len(data).to_bytes(3, "big") + data


def _u16(data: bytes, what: str) -> bytes:
    if len(data) > _U16:
        raise ValueError(f"{what} is {len(data)} bytes, more than a u16 length allows")
    return struct.pack("!H", len(data)) + data


@dataclass(frozen=True, slots=True)
class TimestampedEntry:
    """The part of a log entry that both the Merkle leaf and the SCT signature cover."""

    timestamp_ms: int
    entry_type: EntryType
    body: bytes  # x509: the certificate DER; precert: the TBS without the poison
    issuer_key_hash: bytes = b""  # precert only: SHA-256 of the issuer's SPKI
    extensions: bytes = b""  # CtExtensions; none are defined, so always empty here

    def __post_init__(self) -> None:
        if not 0 <= self.timestamp_ms < 1 << 64:
            raise ValueError(f"timestamp {self.timestamp_ms} does not fit a u64")
        if self.entry_type is EntryType.PRECERT and len(self.issuer_key_hash) != 32:
            n = len(self.issuer_key_hash)
            raise ValueError(f"a precert entry needs the 32-byte issuer key hash, not {n} bytes")

    def signed_entry(self) -> bytes:
        """x509: ``u24 len + certificate``; precert: ``issuer_key_hash(32) + u24 len + TBS``."""
        if self.entry_type is EntryType.X509:
            return _u24(self.body, "certificate")
        return self.issuer_key_hash + _u24(self.body, "TBSCertificate")

    def merkle_tree_leaf(self) -> bytes:
        """MerkleTreeLeaf: version 0, leaf type timestamped_entry, the entry."""
        return (
            struct.pack(">BBQH", 0, 0, self.timestamp_ms, self.entry_type)
            + self.signed_entry()
            + _u16(self.extensions, "CT extensions")
        )

    def sct_signed_input(self) -> bytes:
        """The bytes an SCT signs: version 0, signature type certificate_timestamp, the entry.

        Byte for byte the MerkleTreeLeaf, because certificate_timestamp and timestamped_entry
        are both 0: the log signs exactly what it appends.
        """
        return self.merkle_tree_leaf()


def digitally_signed(
    signature: bytes,
    *,
    hash_algorithm: int = HASH_SHA256,
    signature_algorithm: int = SIGNATURE_ECDSA,
) -> bytes:
    """TLS ``DigitallySigned``: ``hash(u8) | sig(u8) | u16 len | signature``; ECDSA-SHA256 unless
    told otherwise (the STH and this log's SCTs)."""
    return bytes((hash_algorithm, signature_algorithm)) + _u16(signature, "signature")


@dataclass(frozen=True, slots=True)
class SignedCertificateTimestamp:
    """One v1 SCT. ``signature`` is the raw signature (DER ECDSA or RSA PKCS#1 v1.5)."""

    log_id: bytes
    timestamp: int
    signature: bytes
    signature_algorithm: int = SIGNATURE_ECDSA
    hash_algorithm: int = HASH_SHA256
    extensions: bytes = b""
    version: int = 0

    def __post_init__(self) -> None:
        if self.version != 0:
            raise ValueError(f"SCT version {self.version} is not v1 (0)")
        if len(self.log_id) != 32:
            raise ValueError(f"log id is {len(self.log_id)} bytes, want 32")
        if not 0 <= self.timestamp < 1 << 64:
            raise ValueError(f"timestamp {self.timestamp} does not fit a u64")
        if not (0 <= self.hash_algorithm <= 255 and 0 <= self.signature_algorithm <= 255):
            raise ValueError("hash and signature algorithm must be u8")
        if len(self.extensions) > _U16 or len(self.signature) > _U16:
            raise ValueError("SCT extensions and signature must fit a u16 length")

    def digitally_signed(self) -> bytes:
        """The TLS ``DigitallySigned`` of this SCT's signature."""
        return digitally_signed(
            self.signature,
            hash_algorithm=self.hash_algorithm,
            signature_algorithm=self.signature_algorithm,
        )

    def to_tls(self) -> bytes:
        """TLS encoding of the SCT, as it sits in an SCT list."""
        return (
            bytes([self.version])
            + self.log_id
            + struct.pack("!Q", self.timestamp)
            + _u16(self.extensions, "SCT extensions")
            + self.digitally_signed()
        )

    @classmethod
    def from_tls(cls, data: bytes) -> SignedCertificateTimestamp:
        """Parse one TLS-encoded SCT; raise ``ValueError`` on any malformation or trailing data."""
        try:
            version = data[0]
            log_id = data[1:33]
            (timestamp,) = struct.unpack("!Q", data[33:41])
            (ext_len,) = struct.unpack("!H", data[41:43])
            extensions = data[43 : 43 + ext_len]
            pos = 43 + ext_len
            hash_alg, sig_alg = data[pos], data[pos + 1]
            (sig_len,) = struct.unpack("!H", data[pos + 2 : pos + 4])
            signature = data[pos + 4 : pos + 4 + sig_len]
        except (IndexError, struct.error):
            raise ValueError("truncated SCT") from None
        if len(extensions) != ext_len or len(signature) != sig_len:
            raise ValueError("truncated SCT")
        if pos + 4 + sig_len != len(data):
            raise ValueError("trailing bytes after SCT")
        return cls(log_id, timestamp, signature, sig_alg, hash_alg, extensions, version)

    def to_add_chain_response(self) -> dict[str, Any]:
        """ctfe's ``AddChainResponse`` JSON object for this SCT (the add-(pre-)chain answer)."""
        return {
            "sct_version": self.version,
            "id": base64.b64encode(self.log_id).decode(),
            "timestamp": self.timestamp,
            "extensions": base64.b64encode(self.extensions).decode(),
            "signature": base64.b64encode(self.digitally_signed()).decode(),
        }

    @classmethod
    def from_add_chain_response(cls, doc: Mapping[str, Any]) -> SignedCertificateTimestamp:
        """Parse ctfe's ``AddChainResponse`` JSON; raise ``ValueError`` if malformed."""
        try:
            version = doc["sct_version"]
            timestamp = doc["timestamp"]
            if type(version) is not int or type(timestamp) is not int:
                raise ValueError("sct_version and timestamp must be integers")
            log_id = base64.b64decode(doc["id"], validate=True)
            extensions = base64.b64decode(doc.get("extensions") or "", validate=True)
            signed = base64.b64decode(doc["signature"], validate=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed AddChainResponse: {exc}") from None
        if len(signed) < 4 or struct.unpack("!H", signed[2:4])[0] != len(signed) - 4:
            raise ValueError("malformed DigitallySigned in AddChainResponse")
        return cls(log_id, timestamp, signed[4:], signed[1], signed[0], extensions, version)


def encode_sct_list(scts: Sequence[SignedCertificateTimestamp]) -> bytes:
    """TLS ``SignedCertificateTimestampList``: ``u16 total | (u16 len + sct)*``."""
    if not scts:
        raise ValueError("an SCT list needs at least one SCT")
    body = b"".join(_u16(s.to_tls(), "SCT") for s in scts)
    return _u16(body, "SCT list")


def sct_list_extension_value(scts: Sequence[SignedCertificateTimestamp]) -> bytes:
    """The SCT-list extension's value: DER OCTET STRING wrapping the TLS list (RFC 6962 §3.3).

    The certificate's ``extnValue`` adds the second OCTET STRING; pass this to
    ``x509.UnrecognizedExtension(PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS, value)``.
    """
    tls = encode_sct_list(scts)
    n = len(tls)
    if n < 0x80:
        return b"\x04" + bytes([n]) + tls
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\x04" + bytes([0x80 | len(octets)]) + octets + tls


def tree_head_input(timestamp_ms: int, tree_size: int, root: bytes) -> bytes:
    """TreeHeadSignature input: version 0, signature type tree_hash, timestamp, size, root."""
    return struct.pack(">BBQQ", 0, 1, timestamp_ms, tree_size) + root


def issuer_key_hash(issuer: x509.Certificate) -> bytes:
    """SHA-256 of the issuer's SubjectPublicKeyInfo DER."""
    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def strip_poison(tbs: bytes) -> bytes:
    """A precertificate's TBSCertificate with the poison extension removed (RFC 6962 §3.2).

    Every other field keeps its original encoding (asn1crypto re-uses the bytes of unchanged
    values; only the enclosing lengths change), which is what lets a verifier rebuild the same
    bytes from the final certificate minus its SCT list. Raises ``ValueError`` unless ``tbs`` is
    one DER TBSCertificate with exactly one poison extension, critical with value NULL.
    """
    try:
        parsed = asn1_x509.TbsCertificate.load(tbs, strict=True)
        extensions = list(parsed["extensions"])
    except ValueError as exc:
        raise ValueError(f"not a DER TBSCertificate: {exc}") from None
    poisons = [e for e in extensions if e["extn_id"].dotted == POISON_OID]
    if len(poisons) != 1:
        raise ValueError(f"TBSCertificate has {len(poisons)} poison extensions, want exactly 1")
    if poisons[0].dump() != POISON_EXTENSION_DER:
        raise ValueError("poison extension must be critical with value NULL")
    stripped = parsed.copy()
    stripped["extensions"] = asn1_x509.Extensions(
        [e for e in extensions if e["extn_id"].dotted != POISON_OID]
    )
    der: bytes = stripped.dump(force=False)
    return der


def _der_header(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``at``."""
    if at + 2 > len(data):
        raise ValueError("truncated DER")
    tag, first = data[at], data[at + 1]
    if first < 0x80:
        start, length = at + 2, first
    else:
        octets = first & 0x7F
        if not 0 < octets <= 4 or at + 2 + octets > len(data):
            raise ValueError("bad DER length")
        start, length = at + 2 + octets, int.from_bytes(data[at + 2 : at + 2 + octets], "big")
    if start + length > len(data):
        raise ValueError("truncated DER")
    return tag, start, start + length


def _der(tag: int, contents: bytes) -> bytes:
    n = len(contents)
    if n < 0x80:
        return bytes((tag, n)) + contents
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(octets))) + octets + contents


def remove_poison(tbs: bytes) -> bytes:
    """``strip_poison`` for a TBSCertificate this process has just built (the CA's path).

    The same bytes, by editing the DER in place: drop the one poison Extension from the
    extensions (the TBSCertificate's last field, ``[3] EXPLICIT``) and re-encode the three
    enclosing lengths. ~100 times faster than the asn1crypto round trip; it checks the layout it
    edits and the poison's exact encoding, not the rest of the certificate (the
    builder made it), so untrusted input goes through ``strip_poison``. Raises ``ValueError``.
    """
    tag, start, end = _der_header(tbs, 0)
    if tag != 0x30 or end != len(tbs):
        raise ValueError("not one DER TBSCertificate")
    at, last = start, None
    while at < end:
        last = at
        at = _der_header(tbs, at)[2]
    assert last is not None
    tag, ext_start, ext_end = _der_header(tbs, last)
    if tag != 0xA3:
        raise ValueError("TBSCertificate has no extensions")
    tag, seq_start, seq_end = _der_header(tbs, ext_start)
    if tag != 0x30 or seq_end != ext_end:
        raise ValueError("malformed extensions")
    kept, poisons, at = [], 0, seq_start
    while at < seq_end:
        following = _der_header(tbs, at)[2]
        if tbs[at:following] == POISON_EXTENSION_DER:
            poisons += 1
        elif POISON_OID_DER in tbs[at:following]:
            raise ValueError("poison extension must be critical with value NULL")
        else:
            kept.append(tbs[at:following])
        at = following
    if poisons != 1:
        raise ValueError(f"TBSCertificate has {poisons} poison extensions, want exactly 1")
    extensions = _der(0xA3, _der(0x30, b"".join(kept)))
    return _der(0x30, tbs[start:last] + extensions)


def precert_tbs(precert_der: bytes) -> bytes:
    """``strip_poison`` of a whole precertificate's TBSCertificate."""
    try:
        tbs = asn1_x509.Certificate.load(precert_der, strict=True)["tbs_certificate"]
        tbs_der: bytes = tbs.dump()
    except ValueError as exc:
        raise ValueError(f"not a DER certificate: {exc}") from None
    return strip_poison(tbs_der)


def precert_entry(
    precert_der: bytes, issuer: x509.Certificate, timestamp_ms: int
) -> TimestampedEntry:
    """The log entry for a precertificate issued by ``issuer``, logged at ``timestamp_ms``;
    ``sct_signed_input()`` of it is what an SCT for the precertificate signs. Raises
    ``ValueError`` as ``strip_poison`` does."""
    return TimestampedEntry(
        timestamp_ms, EntryType.PRECERT, precert_tbs(precert_der), issuer_key_hash(issuer)
    )


def certificate_chain(chain_ders: list[bytes]) -> bytes:
    """extra_data of an x509 entry: the chain above the leaf."""
    return _u24(b"".join(_u24(c, "certificate") for c in chain_ders), "certificate chain")


def precert_chain_entry(precert_der: bytes, chain_ders: list[bytes]) -> bytes:
    """extra_data of a precert entry: the full precertificate, then the chain above it."""
    return _u24(precert_der, "precertificate") + certificate_chain(chain_ders)
