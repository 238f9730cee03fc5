"""Leaf certificates in Fulcio's profile: precertificate, final certificate with embedded SCT.

Profile (fulcio.md §4.1): v3, empty subject, issuer = the signing certificate's subject, validity
``now`` to ``now + 10 min`` at second precision, random serial < 2^159, extensions in Go's order
(KU critical, EKU, SKID, AKI, SAN critical, Fulcio 1.1... in order), then the critical CT poison on
the precertificate only.

The final certificate is rebuilt from the *parsed* precertificate, as Fulcio does: same serial,
validity, subject, SPKI, signature algorithm and extensions in the same order, poison removed, SCT
list appended last. Its TBS minus the SCT list must be byte-identical to the precertificate's TBS
minus the poison, or every embedded SCT is unverifiable (fulcio.md §9.1);
``build_final_certificate`` checks that invariant before returning.
"""

from __future__ import annotations

import datetime
import logging

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from services.ca.errors import CABackendError
from services.ca.identity import Principal
from services.ca.keys import CAKeyMaterial
from services.ca.pop import LeafPublicKey
from services.log.ct.rfc6962 import (
    EntryType,
    SignedCertificateTimestamp,
    TimestampedEntry,
    sct_list_extension_value,
)

__all__ = [
    "LEAF_VALIDITY",
    "POISON_EXTENSION_DER",
    "build_certificate",
    "build_final_certificate",
    "build_precertificate",
    "precert_entry",
    "strip_poison",
]

_logger = logging.getLogger(__name__)

LEAF_VALIDITY = datetime.timedelta(minutes=10)

# The whole poison Extension as DER: OID 1.3.6.1.4.1.11129.2.4.3, critical TRUE, value NULL.
POISON_EXTENSION_DER = bytes.fromhex("3013060a2b06010401d6790204030101ff04020500")
_POISON_OID_DER = bytes.fromhex("060a2b06010401d679020403")


def _leaf_builder(
    *,
    ca: CAKeyMaterial,
    public_key: LeafPublicKey,
    principal: Principal,
    now: datetime.datetime,
    serial: int | None,
) -> x509.CertificateBuilder:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    start = now.astimezone(datetime.UTC).replace(microsecond=0)
    end = start + LEAF_VALIDITY
    signer = ca.signing_certificate
    if not signer.not_valid_before_utc <= start or end > signer.not_valid_after_utc:
        raise CABackendError(
            f"CA certificate valid {signer.not_valid_before_utc} to "
            f"{signer.not_valid_after_utc} cannot cover a leaf from {start} to {end}"
        )
    if serial is None:
        serial = x509.random_serial_number()
    if not 0 < serial < 1 << 159:
        raise ValueError("serial must be positive and below 2^159 (fits 20 octets)")
    issuer_ski = signer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(signer.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        # Critical because the subject is empty (RFC 5280 §4.2.1.6).
        .add_extension(x509.SubjectAlternativeName([principal.san]), critical=True)
    )
    for ext in principal.extensions.render():
        builder = builder.add_extension(ext, critical=False)
    return builder


def _sign(builder: x509.CertificateBuilder, ca: CAKeyMaterial) -> x509.Certificate:
    try:
        return ca.sign(builder)
    except (ValueError, TypeError) as exc:
        raise CABackendError(f"signing failed: {exc}") from exc


def build_precertificate(
    *,
    ca: CAKeyMaterial,
    public_key: LeafPublicKey,
    principal: Principal,
    now: datetime.datetime,
    serial: int | None = None,
) -> x509.Certificate:
    """The RFC 6962 precertificate: the leaf plus a critical poison extension, signed by the CA."""
    builder = _leaf_builder(
        ca=ca, public_key=public_key, principal=principal, now=now, serial=serial
    )
    return _sign(builder.add_extension(x509.PrecertPoison(), critical=True), ca)


def build_certificate(
    *,
    ca: CAKeyMaterial,
    public_key: LeafPublicKey,
    principal: Principal,
    now: datetime.datetime,
    serial: int | None = None,
) -> x509.Certificate:
    """A leaf without poison or SCT list, for the detached-SCT flow (or no CT log at all)."""
    return _sign(
        _leaf_builder(ca=ca, public_key=public_key, principal=principal, now=now, serial=serial),
        ca,
    )


def build_final_certificate(
    precert: x509.Certificate,
    *,
    ca: CAKeyMaterial,
    sct: SignedCertificateTimestamp,
) -> x509.Certificate:
    """The final certificate: ``precert`` minus the poison, plus exactly one embedded SCT (last).

    Raises ``CABackendError`` if ``precert`` was not issued by ``ca`` or if the result's TBS (minus
    the SCT list) differs from the precertificate's TBS (minus the poison) by a single byte.
    """
    try:
        precert.verify_directly_issued_by(ca.signing_certificate)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CABackendError(f"precertificate was not issued by this CA: {exc}") from None
    builder = (
        x509.CertificateBuilder()
        .subject_name(precert.subject)
        .issuer_name(ca.signing_certificate.subject)
        .public_key(precert.public_key())
        .serial_number(precert.serial_number)
        .not_valid_before(precert.not_valid_before_utc)
        .not_valid_after(precert.not_valid_after_utc)
    )
    poisoned = False
    for ext in precert.extensions:
        if ext.oid == ExtensionOID.PRECERT_POISON:
            poisoned = True
            continue
        builder = builder.add_extension(ext.value, critical=ext.critical)
    if not poisoned:
        raise CABackendError("precertificate has no poison extension")
    builder = builder.add_extension(
        x509.UnrecognizedExtension(
            ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS, sct_list_extension_value([sct])
        ),
        critical=False,
    )
    final = _sign(builder, ca)
    # The SCT was signed over the precert's TBS minus poison; verifiers rebuild that from this
    # certificate minus the SCT list. If the two differ, the certificate is useless: refuse it.
    if final.tbs_precertificate_bytes != strip_poison(precert.tbs_certificate_bytes):
        raise CABackendError("final certificate TBS diverges from the precertificate TBS")
    return final


# --- DER surgery on TBSCertificate -----------------------------------------------------------


def _read_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of element) of the DER element at ``pos``; strict lengths."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not expected in a TBSCertificate")
    first = data[pos + 1]
    if first < 0x80:
        length, start = first, pos + 2
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + 2 + n > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos + 2 : pos + 2 + n], "big")
        if length < 0x80 or data[pos + 2] == 0:
            raise ValueError("non-minimal DER length")
        start = pos + 2 + n
    end = start + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, start, end


def _der_header(tag: int, length: int) -> bytes:
    if length < 0x80:
        return bytes([tag, length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets


def strip_poison(tbs: bytes) -> bytes:
    """The precertificate's TBS with the CT poison extension removed, re-encoded (RFC 6962 §3.2).

    Every other byte stays as it was; only the three enclosing lengths change. Raises
    ``ValueError`` if ``tbs`` is not a DER TBSCertificate, has no poison, or has one that is not
    exactly critical with value NULL.
    """
    tag, start, end = _read_tlv(tbs, 0)
    if tag != 0x30 or end != len(tbs):
        raise ValueError("not a single DER SEQUENCE")
    children: list[tuple[int, int, int]] = []
    pos = start
    while pos < end:
        child = _read_tlv(tbs, pos)
        children.append((pos, child[0], child[2]))
        pos = child[2]
    explicit = [c for c in children if c[1] == 0xA3]
    if len(explicit) != 1 or explicit[0] != children[-1]:
        raise ValueError("TBSCertificate has no extensions")
    ext_pos = explicit[0][0]
    _, wrap_start, wrap_end = _read_tlv(tbs, ext_pos)
    seq_tag, seq_start, seq_end = _read_tlv(tbs, wrap_start)
    if seq_tag != 0x30 or seq_end != wrap_end:
        raise ValueError("malformed extensions")
    kept: list[bytes] = []
    found = 0
    pos = seq_start
    while pos < seq_end:
        ext_tag, ext_start, ext_end = _read_tlv(tbs, pos)
        if ext_tag != 0x30:
            raise ValueError("malformed extension")
        element = tbs[pos:ext_end]
        if tbs[ext_start : ext_start + len(_POISON_OID_DER)] == _POISON_OID_DER:
            if element != POISON_EXTENSION_DER:
                raise ValueError("poison extension must be critical with value NULL")
            found += 1
        else:
            kept.append(element)
        pos = ext_end
    if found != 1:
        raise ValueError(f"TBSCertificate has {found} poison extensions, want exactly 1")
    body = b"".join(kept)
    seq = _der_header(0x30, len(body)) + body
    extensions = _der_header(0xA3, len(seq)) + seq
    inner = tbs[start:ext_pos] + extensions
    return _der_header(0x30, len(inner)) + inner


def precert_entry(
    precert_tbs: bytes, issuer_key_hash: bytes, timestamp_ms: int
) -> TimestampedEntry:
    """The CT log's entry for a precertificate's TBS (poison still in it) at ``timestamp_ms``.

    ``issuer_key_hash`` is SHA-256 of the issuing CA certificate's SPKI
    (``CAKeyMaterial.issuer_key_hash``); ``sct_signed_input()`` of the result is what an SCT for
    this precertificate signs.
    """
    return TimestampedEntry(
        timestamp_ms, EntryType.PRECERT, strip_poison(precert_tbs), issuer_key_hash
    )
