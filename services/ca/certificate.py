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
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from services.ca.errors import CABackendError
from services.ca.identity import Principal
from services.ca.keys import CAKeyMaterial
from services.ca.pop import LeafPublicKey
from services.log.ct.rfc6962 import (
    SignedCertificateTimestamp,
    remove_poison,
    sct_list_extension_value,
)

__all__ = [
    "LEAF_VALIDITY",
    "build_certificate",
    "build_final_certificate",
    "build_precertificate",
]

_logger = logging.getLogger(__name__)

LEAF_VALIDITY = datetime.timedelta(minutes=10)


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
    # Names and key identifiers, not the signature: a caller able to pass a forged
    # precertificate could call ``ca.sign`` directly, so re-verifying would protect nothing, and
    # the CT log has just verified that signature before issuing ``sct`` (~0.7 ms for P-384, a
    # quarter of an issuance). What this catches is a precertificate of another CA.
    signing = ca.signing_certificate
    try:
        aki = precert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = signing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound as exc:
        raise CABackendError(f"precertificate was not issued by this CA: {exc}") from None
    if precert.issuer != signing.subject or aki.key_identifier != ski.digest:
        raise CABackendError("precertificate was not issued by this CA: issuer or key differs")
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
    # remove_poison is what the CT log signed over; tests hold it to strip_poison's asn1crypto
    # rebuild, and the Go and JS clients verify the embedded SCT with their own.
    if final.tbs_precertificate_bytes != remove_poison(precert.tbs_certificate_bytes):
        raise CABackendError("final certificate TBS diverges from the precertificate TBS")
    return final
