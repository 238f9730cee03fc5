"""DSSE envelope verification as Rekor's ``dsse`` and ``intoto`` types perform it.

Both types hand a list of candidate keys to ``verifyEnvelope``: each key becomes a one-key
go-securesystemslib ``EnvelopeVerifier`` (threshold 1), which must accept at least one envelope
signature, and every signature must end up accepted by some key. Key IDs in the envelope are
ignored (Rekor's verifier adapters have no key ID). Signatures are over the PAE,
``"DSSEv1" SP len(type) SP type SP len(body) SP body``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.log.rekor._go import GoDecodeError, b64decode_std
from services.log.rekor.errors import (
    CertificateChainInvalid,
    KeyUnparseable,
    MalformedEntry,
    SignatureInvalid,
)
from services.log.rekor.keys import (
    ChainTooLong,
    MaterialError,
    MessageVerifier,
    SignatureError,
    UnsupportedKeyType,
    VerificationMaterial,
    message_verifier,
    parse_material,
)

__all__ = [
    "MAX_ENVELOPE_SIGNATURES",
    "MAX_VERIFIERS",
    "Envelope",
    "EnvelopeSignature",
    "dsse_b64decode",
    "pae",
    "verify_envelope",
]

MAX_ENVELOPE_SIGNATURES = 16
"""Signatures per envelope. Rekor v1 has no limit; v2 allows 10. Verification is keys x sigs."""

MAX_VERIFIERS = 16
"""Candidate keys per entry, for the same reason."""

_URL_TO_STD = bytes.maketrans(b"-_", b"+/")


@dataclass(frozen=True, slots=True)
class EnvelopeSignature:
    """One envelope signature: ``sig`` is the base64 *string* (as bytes), exactly as received."""

    keyid: str
    sig: bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    """A DSSE envelope with ``payload`` still base64-encoded (as bytes), exactly as received."""

    payload_type: str
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...]


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of ``payload_type`` and the decoded ``body``."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(body), body)


def dsse_b64decode(data: bytes) -> bytes:
    """go-securesystemslib's ``b64Decode``: standard base64, else URL-safe (both padded)."""
    try:
        return b64decode_std(data)
    except GoDecodeError:
        pass
    if b"+" not in data and b"/" not in data:
        try:
            return b64decode_std(data.translate(_URL_TO_STD))
        except GoDecodeError:
            pass
    raise GoDecodeError("unable to base64 decode payload (is payload in the right format?)")


def accepted_signature(verify_key: MessageVerifier, envelope: Envelope, message: bytes) -> bytes:
    # One go-securesystemslib EnvelopeVerifier with a single provider: every signature is
    # base64-decoded (a bad one fails the envelope), the provider accepts the *first* signature
    # it verifies and is then used up, and threshold 1 means it must accept one.
    decoded: list[tuple[bytes, bytes]] = []
    for signature in envelope.signatures:
        try:
            decoded.append((signature.sig, dsse_b64decode(signature.sig)))
        except GoDecodeError as exc:
            raise MalformedEntry(f"could not verify envelope: {exc}") from None
    for original, raw in decoded:
        try:
            verify_key(raw, message)
        except SignatureError:
            continue
        return original
    raise SignatureInvalid(
        "could not verify envelope: "
        "Accepted signatures do not match threshold, Found: 0, Expected 1"
    )


def pae_message(envelope: Envelope) -> bytes:
    if not envelope.signatures:
        raise MalformedEntry("could not verify envelope: no signature found")
    try:
        return pae(envelope.payload_type, dsse_b64decode(envelope.payload))
    except GoDecodeError as exc:
        raise MalformedEntry(f"could not verify envelope: {exc}") from None


def verify_envelope(
    keys: Sequence[bytes], envelope: Envelope, *, stop_when_all_verified: bool
) -> tuple[dict[bytes, VerificationMaterial], list[VerificationMaterial]]:
    """Verify ``envelope`` against candidate PEM ``keys`` as Rekor's ``verifyEnvelope`` does.

    Returns ``(material_by_signature, materials)``: the key that verified each signature
    (keyed by the signature string as received) and every key parsed, in input order. The
    ``dsse`` type stops trying keys once every signature is verified
    (``stop_when_all_verified``); ``intoto`` tries them all. Raises ``KeyUnparseable``,
    ``MalformedEntry`` or ``SignatureInvalid`` with Rekor's messages.
    """
    message: bytes | None = None
    unverified = {s.sig for s in envelope.signatures}
    by_signature: dict[bytes, VerificationMaterial] = {}
    materials: list[VerificationMaterial] = []
    for key in keys:
        if stop_when_all_verified and not unverified:
            break
        try:
            material = parse_material(key)
        except ChainTooLong as exc:
            raise CertificateChainInvalid(f"could not parse public key as x509: {exc}") from None
        except MaterialError as exc:
            raise KeyUnparseable(f"could not parse public key as x509: {exc}") from None
        try:
            verify_key = message_verifier(material)
        except UnsupportedKeyType as exc:
            raise KeyUnparseable(f"could not load verifier: {exc}") from None
        materials.append(material)
        if message is None:
            # Decoded per verifier in Go, after the key parsed: key errors are reported first.
            message = pae_message(envelope)
        accepted = accepted_signature(verify_key, envelope, message)
        unverified.discard(accepted)
        by_signature[accepted] = material
    if unverified:
        raise SignatureInvalid("all signatures must have a key that verifies it")
    return by_signature, materials
