"""RFC 6962 signed certificate timestamps: TLS encodings, the signed input, the SCT-list extension.

Widths (fulcio.md §5.2, §9.1): u24 for certificates and TBS, u16 for extensions and signatures,
u64 milliseconds for timestamps. The CT log signs ``certificate_timestamp_input(...)``; the CA
embeds ``sct_list_extension_value([sct])`` in the final certificate.
"""

from __future__ import annotations

import base64
import enum
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "HASH_SHA256",
    "SIGNATURE_ECDSA",
    "SIGNATURE_RSA",
    "LogEntryType",
    "SignedCertificateTimestamp",
    "certificate_timestamp_input",
    "encode_sct_list",
    "precert_signed_entry_from_parts",
    "sct_list_extension_value",
    "x509_signed_entry",
]

HASH_SHA256 = 4
SIGNATURE_RSA = 1
SIGNATURE_ECDSA = 3
_U16 = 0xFFFF
_U24 = 0xFFFFFF


class LogEntryType(enum.IntEnum):
    """RFC 6962 ``LogEntryType``."""

    X509_ENTRY = 0
    PRECERT_ENTRY = 1


def _u24(data: bytes, what: str) -> bytes:
    if len(data) > _U24:
        raise ValueError(f"{what} is {len(data)} bytes, more than a u24 length allows")
    return len(data).to_bytes(3, "big") + data


def _u16(data: bytes, what: str) -> bytes:
    if len(data) > _U16:
        raise ValueError(f"{what} is {len(data)} bytes, more than a u16 length allows")
    return struct.pack("!H", len(data)) + data


def x509_signed_entry(cert_der: bytes) -> bytes:
    """The ``signed_entry`` of an x509 entry: ``u24 len + certificate DER``."""
    return _u24(cert_der, "certificate")


def precert_signed_entry_from_parts(issuer_key_hash: bytes, tbs_without_poison: bytes) -> bytes:
    """The ``signed_entry`` of a precert entry: ``issuer_key_hash(32) + u24 len + TBS``.

    ``tbs_without_poison`` must already have the poison removed; see
    ``services.ca.certificate.precert_signed_entry`` for the version that removes it.
    """
    if len(issuer_key_hash) != 32:
        raise ValueError(f"issuer key hash is {len(issuer_key_hash)} bytes, want 32")
    return issuer_key_hash + _u24(tbs_without_poison, "TBSCertificate")


def certificate_timestamp_input(
    *,
    timestamp: int,
    entry_type: LogEntryType,
    signed_entry: bytes,
    extensions: bytes = b"",
) -> bytes:
    """What the log signs for an SCT (RFC 6962 §3.2 ``digitally-signed struct``), version v1.

    ``signed_entry`` comes from ``x509_signed_entry`` or ``precert_signed_entry``.
    """
    if not 0 <= timestamp < 1 << 64:
        raise ValueError(f"timestamp {timestamp} does not fit a u64")
    return (
        struct.pack("!BBQH", 0, 0, timestamp, entry_type)
        + signed_entry
        + _u16(extensions, "SCT extensions")
    )


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
        """The TLS ``DigitallySigned``: ``hash(u8) | sig(u8) | u16 len | signature``."""
        return bytes([self.hash_algorithm, self.signature_algorithm]) + _u16(
            self.signature, "signature"
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
        """ctfe's ``AddChainResponse`` JSON object for this SCT (detached-SCT responses use it)."""
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


def _der_octet_string(data: bytes) -> bytes:
    n = len(data)
    if n < 0x80:
        return b"\x04" + bytes([n]) + data
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\x04" + bytes([0x80 | len(octets)]) + octets + data


def sct_list_extension_value(scts: Sequence[SignedCertificateTimestamp]) -> bytes:
    """The SCT-list extension's value: DER OCTET STRING wrapping the TLS list (RFC 6962 §3.3).

    The certificate's ``extnValue`` adds the second OCTET STRING; pass this to
    ``x509.UnrecognizedExtension(PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS, value)``.
    """
    return _der_octet_string(encode_sct_list(scts))
