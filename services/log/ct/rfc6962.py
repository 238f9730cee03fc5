"""RFC 6962 TLS encodings (fulcio.md §5.2-§5.4): leaves, SCTs, tree head signatures. Pure."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = [
    "POISON_OID",
    "SCT_LIST_OID",
    "EntryType",
    "TimestampedEntry",
    "certificate_chain",
    "digitally_signed",
    "issuer_key_hash",
    "precert_chain_entry",
    "precert_tbs",
    "sct_bytes",
    "sct_list_extension_value",
    "tree_head_input",
]

POISON_OID = "1.3.6.1.4.1.11129.2.4.3"
SCT_LIST_OID = "1.3.6.1.4.1.11129.2.4.2"
_HASH_SHA256 = 4
_SIG_ECDSA = 3


class EntryType(IntEnum):
    """RFC 6962 LogEntryType."""

    X509 = 0
    PRECERT = 1


def _u24(data: bytes) -> bytes:
    if len(data) >= 1 << 24:
        raise ValueError(f"{len(data)} bytes do not fit a 24-bit length")
    return len(data).to_bytes(3, "big") + data


def _u16(data: bytes) -> bytes:
    if len(data) >= 1 << 16:
        raise ValueError(f"{len(data)} bytes do not fit a 16-bit length")
    return len(data).to_bytes(2, "big") + data


@dataclass(frozen=True, slots=True)
class TimestampedEntry:
    """The part of a log entry that both the Merkle leaf and the SCT signature cover."""

    timestamp_ms: int
    entry_type: EntryType
    body: bytes  # x509: the certificate DER; precert: the TBS without the poison
    issuer_key_hash: bytes = b""

    def _signed_entry(self) -> bytes:
        if self.entry_type is EntryType.X509:
            return _u24(self.body)
        if len(self.issuer_key_hash) != 32:
            raise ValueError("a precert entry needs the 32-byte issuer key hash")
        return self.issuer_key_hash + _u24(self.body)

    def merkle_tree_leaf(self) -> bytes:
        """MerkleTreeLeaf: version 0, leaf type timestamped_entry, the entry, no extensions."""
        return (
            struct.pack(">BBQH", 0, 0, self.timestamp_ms, self.entry_type)
            + self._signed_entry()
            + _u16(b"")
        )

    def sct_signed_input(self) -> bytes:
        """The bytes an SCT signs: version 0, signature type certificate_timestamp, the entry.

        Byte for byte the MerkleTreeLeaf, because certificate_timestamp and timestamped_entry
        are both 0: the log signs exactly what it appends.
        """
        return self.merkle_tree_leaf()


def digitally_signed(ecdsa_der_signature: bytes) -> bytes:
    """TLS DigitallySigned for an ECDSA-SHA256 signature."""
    return bytes((_HASH_SHA256, _SIG_ECDSA)) + _u16(ecdsa_der_signature)


def sct_bytes(log_id: bytes, timestamp_ms: int, ecdsa_der_signature: bytes) -> bytes:
    """A serialised SignedCertificateTimestamp (v1, no extensions)."""
    return (
        b"\x00"
        + log_id
        + struct.pack(">Q", timestamp_ms)
        + _u16(b"")
        + digitally_signed(ecdsa_der_signature)
    )


def sct_list_extension_value(scts: list[bytes]) -> bytes:
    """The DER OCTET STRING wrapping a TLS SignedCertificateTimestampList (RFC 6962 §3.3)."""
    tls = _u16(b"".join(_u16(s) for s in scts))
    if len(tls) < 0x80:
        return b"\x04" + bytes([len(tls)]) + tls
    length = len(tls).to_bytes((len(tls).bit_length() + 7) // 8, "big")
    return b"\x04" + bytes([0x80 | len(length)]) + length + tls


def tree_head_input(timestamp_ms: int, tree_size: int, root: bytes) -> bytes:
    """TreeHeadSignature input: version 0, signature type tree_hash, timestamp, size, root."""
    return struct.pack(">BBQQ", 0, 1, timestamp_ms, tree_size) + root


def issuer_key_hash(issuer: x509.Certificate) -> bytes:
    """SHA-256 of the issuer's SubjectPublicKeyInfo DER."""
    import hashlib

    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def precert_tbs(precert_der: bytes) -> bytes:
    """The precertificate's TBSCertificate with the poison extension removed, re-encoded.

    Every other field keeps its original encoding (asn1crypto re-uses the bytes of unchanged
    values), which is what lets a verifier rebuild the same bytes from the final certificate.
    """
    cert = asn1_x509.Certificate.load(precert_der)
    tbs = cert["tbs_certificate"]
    kept = [e for e in tbs["extensions"] if e["extn_id"].dotted != POISON_OID]
    if len(kept) == len(tbs["extensions"]):
        raise ValueError("not a precertificate: no poison extension")
    new = tbs.copy()
    new["extensions"] = asn1_x509.Extensions(kept)
    der: bytes = new.dump(force=False)
    return der


def certificate_chain(chain_ders: list[bytes]) -> bytes:
    """extra_data of an x509 entry: the chain above the leaf."""
    return _u24(b"".join(_u24(c) for c in chain_ders))


def precert_chain_entry(precert_der: bytes, chain_ders: list[bytes]) -> bytes:
    """extra_data of a precert entry: the full precertificate, then the chain above it."""
    return _u24(precert_der) + certificate_chain(chain_ders)
