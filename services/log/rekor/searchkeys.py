"""Search-index keys: what an entry is filed under, and what a search query looks up.

An entry is filed under several short strings, stored next to its index and looked up by
``POST /api/v1/index/retrieve``. Both sides of that lookup are built here, from the same
functions, so a query can only ever produce keys an entry could have been filed under.

Filed for an entry, and the query function that finds it:

* ``<alg>:<hex>`` - hashedrekord ``data.hash``; dsse ``payloadHash`` and ``envelopeHash``;
  intoto ``payloadHash``; every in-toto subject digest (and SLSA 0.2 material digest).
  Query: ``index_keys_for_hash``.
* ``pubkey:sha256:<hex>`` - SHA-256 of the DER SubjectPublicKeyInfo of every verifying key,
  including the key inside a certificate. Query: ``index_keys_for_public_key`` with a key.
* ``cert:sha256:<hex>`` - SHA-256 of the DER leaf certificate. Query:
  ``index_keys_for_public_key`` with a certificate (or chain).
* ``email:<address>`` - email SANs of the leaf certificate. Query: ``index_keys_for_email``.
* ``subject:<san>`` - every SAN (DNS, email, IP, URI, sigstore otherName). Query:
  ``index_keys_for_subject``.

Everything is lowercased, as Rekor's index stores keys, so hex digests and identities match
case-insensitively. A key longer than ``MAX_KEY_LENGTH`` (the SQL column) is replaced by
``<namespace>-sha256:<hex of the lowercased value>`` on both sides, so long URIs stay findable.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Mapping

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from services.log.rekor._go import GoDecodeError, b64decode_std
from services.log.rekor.entry import go_json_loads, json_kind
from services.log.rekor.errors import (
    ENUM_FAIL_CODE,
    INVALID_TYPE_CODE,
    PATTERN_FAIL_CODE,
    TOO_LONG_FAIL_CODE,
    TOO_SHORT_FAIL_CODE,
    MalformedSearchQuery,
    SchemaViolation,
    UnsupportedPKIFormat,
)
from services.log.rekor.keys import MaterialError, VerificationMaterial, parse_material

__all__ = [
    "IN_TOTO_PAYLOAD_TYPE",
    "MAX_KEY_LENGTH",
    "certificate_key",
    "digest_key",
    "email_key",
    "index_keys_for_email",
    "index_keys_for_hash",
    "index_keys_for_public_key",
    "index_keys_for_subject",
    "is_material_key",
    "keys_for_query",
    "material_keys",
    "public_key_key",
    "statement_digest_keys",
    "subject_key",
]

_logger = logging.getLogger(__name__)

MAX_KEY_LENGTH = 512
"""Longest key stored verbatim (``search_keys.key`` is ``VARCHAR(512)``)."""

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"

_PUBKEY = "pubkey"
_CERT = "cert"
_EMAIL = "email"
_SUBJECT = "subject"
_DIGEST = "digest"
# In-toto digest sets may use any algorithm name; these would land in another namespace.
_RESERVED_ALGORITHMS = frozenset(
    {_PUBKEY, _CERT, _EMAIL, _SUBJECT, *(f"{n}-sha256" for n in (_EMAIL, _SUBJECT, _DIGEST))}
)
_HASH_PATTERN = (
    r"^(sha512:)?[0-9a-fA-F]{128}$|^(sha384:)?[0-9a-fA-F]{96}$|"
    r"^(sha256:)?[0-9a-fA-F]{64}$|^(sha1:)?[0-9a-fA-F]{40}$"
)
_HASH_RE = re.compile(_HASH_PATTERN)
_HEX_LENGTHS = {40: "sha1", 64: "sha256", 96: "sha384", 128: "sha512"}
# go-openapi's strfmt email check is RFC 5322 "addr-spec"-ish; this accepts what it accepts for
# realistic identities (local@domain, no spaces) and rejects obvious non-addresses.
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")


def _storable(key: str) -> bool:
    """Whether every database stores ``key`` as text: PostgreSQL refuses U+0000, and a lone
    surrogate has no UTF-8 encoding. A client controls these strings (in-toto subjects, SANs,
    search queries), and one unstorable key must not fail the batch other clients share."""
    if "\x00" in key:
        return False
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bounded(namespace: str, value: str) -> str:
    """``<namespace>:<value>``, or a digest of it when it is too long or not storable: the
    same value maps to the same key when it is stored and when it is searched for, so such
    entries stay findable while the index holds only plain text."""
    value = value.lower()
    key = f"{namespace}:{value}"
    if len(key) <= MAX_KEY_LENGTH and _storable(key):
        return key
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{namespace}-sha256:{digest}"


def digest_key(algorithm: str, value: str) -> str:
    """``<alg>:<value>`` lowercased, e.g. ``sha256:ab12...``."""
    key = f"{algorithm}:{value}".lower()
    if len(key) <= MAX_KEY_LENGTH and _storable(key):
        return key
    return _bounded(_DIGEST, f"{algorithm}:{value}")


def is_material_key(key: str) -> bool:
    """Whether ``key`` names verification material (a key, certificate or identity) rather
    than a digest: the keys a stored leaf must justify on its own, since it holds the material
    but, for DSSE kinds, not the payload whose subject digests are filed too."""
    namespace = key.partition(":")[0]
    return namespace in _RESERVED_ALGORITHMS and namespace != f"{_DIGEST}-sha256"


def public_key_key(spki_sha256_hex: str) -> str:
    """The key for a public key, from the hex SHA-256 of its DER SubjectPublicKeyInfo."""
    return f"{_PUBKEY}:sha256:{spki_sha256_hex.lower()}"


def certificate_key(cert_sha256_hex: str) -> str:
    """The key for a certificate, from the hex SHA-256 of its DER encoding."""
    return f"{_CERT}:sha256:{cert_sha256_hex.lower()}"


def email_key(email: str) -> str:
    """The key for an email identity (lowercased)."""
    return _bounded(_EMAIL, email)


def subject_key(subject: str) -> str:
    """The key for any SAN value (lowercased)."""
    return _bounded(_SUBJECT, subject)


def material_keys(material: VerificationMaterial) -> set[str]:
    """Keys for one piece of verification material: key, leaf certificate and its identities."""
    keys = {public_key_key(material.spki_sha256)}
    cert_hash = material.leaf_certificate_sha256
    if cert_hash is not None:
        keys.add(certificate_key(cert_hash))
    identities = material.identities()
    keys.update(email_key(e) for e in identities.emails)
    keys.update(subject_key(s) for s in identities.all())
    return keys


def _digest_set(value: object) -> Iterator[str]:
    if not isinstance(value, dict):
        return
    for algorithm, digest in value.items():
        if not isinstance(algorithm, str) or not isinstance(digest, str):
            continue
        if not algorithm or not digest or algorithm.lower() in _RESERVED_ALGORITHMS:
            continue
        yield digest_key(algorithm, digest)


def _descriptors(value: object) -> Iterator[str]:
    if not isinstance(value, list):
        return
    for item in value:
        if isinstance(item, dict):
            yield from _digest_set(item.get("digest"))


def statement_digest_keys(payload_type: str, payload: bytes) -> set[str]:
    """Digest keys of an in-toto Statement (v0.1 or v1) carried in a DSSE payload.

    Every ``subject[].digest`` entry, plus SLSA v0.2 ``predicate.materials[].digest`` as Rekor
    indexes them. Anything that is not an in-toto payload, or not a JSON object, yields nothing:
    a statement that does not parse must not make an otherwise valid upload fail.
    """
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        return set()
    try:
        statement = go_json_loads(payload)
    except ValueError:
        _logger.debug("in-toto payload is not JSON; no subject keys")
        return set()
    if not isinstance(statement, dict):
        return set()
    keys = set(_descriptors(statement.get("subject")))
    predicate = statement.get("predicate")
    if isinstance(predicate, dict):
        keys.update(_descriptors(predicate.get("materials")))
    return keys


# --- query side --------------------------------------------------------------------------------


def index_keys_for_hash(value: str) -> frozenset[str]:
    """Keys for a ``hash`` search: ``[sha1:|sha256:|sha384:|sha512:]<hex>``.

    Bare hex is given the algorithm its length implies (40/64/96/128). Anything else is Rekor's
    swagger pattern failure: 422 with code 605.
    """
    if not _HASH_RE.fullmatch(value):
        raise SchemaViolation(
            f"hash in body should match '{_HASH_PATTERN}'", code=PATTERN_FAIL_CODE
        )
    algorithm, sep, hex_value = value.rpartition(":")
    if not sep:
        algorithm = _HEX_LENGTHS[len(hex_value)]
    return frozenset({digest_key(algorithm, hex_value)})


def index_keys_for_public_key(content: bytes, pki_format: str = "x509") -> frozenset[str]:
    """Keys for a ``publicKey`` search (content already base64-decoded by the caller).

    Accepts what ``x509`` material Rekor accepts (a PEM key, certificate or chain) and also bare
    DER. A key yields its ``pubkey:`` key; a certificate or chain yields the leaf's ``cert:``
    key. Other formats raise ``UnsupportedPKIFormat``; unparseable content raises
    ``MalformedSearchQuery`` (both 400, as Rekor answers).
    """
    if pki_format != "x509":
        raise UnsupportedPKIFormat()
    try:
        material = parse_material(content)
    except MaterialError:
        return _der_keys(content)
    cert_hash = material.leaf_certificate_sha256
    if cert_hash is not None:
        return frozenset({certificate_key(cert_hash)})
    return frozenset({public_key_key(material.spki_sha256)})


def _der_keys(der: bytes) -> frozenset[str]:
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass
    else:
        spki = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return frozenset({public_key_key(hashlib.sha256(spki).hexdigest())})
    try:
        x509.load_der_x509_certificate(der)
    except ValueError:
        raise MalformedSearchQuery("public key provided could not be parsed") from None
    return frozenset({certificate_key(hashlib.sha256(der).hexdigest())})


def index_keys_for_email(email: str) -> frozenset[str]:
    """Keys for an ``email`` search (case-insensitive)."""
    return frozenset({email_key(email)})


def index_keys_for_subject(subject: str) -> frozenset[str]:
    """Keys for a ``subject`` search: any SAN value, case-insensitive."""
    return frozenset({subject_key(subject)})


_PKI_FORMATS = ("pgp", "x509", "minisign", "ssh", "tuf")
_MAX_SUBJECT_LENGTH = 512


def _query_string(query: Mapping[str, object], name: str) -> str | None:
    value = query.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedSearchQuery(
            f'parsing query body from "" failed, because json: cannot unmarshal '
            f"{json_kind(value)} into Go struct field SearchIndex.{name} of type string"
        )
    return value


def _public_key_field(value: object) -> set[str]:
    if not isinstance(value, dict):
        raise MalformedSearchQuery(
            'parsing query body from "" failed, because json: cannot unmarshal '
            f"{json_kind(value)} into Go struct field SearchIndex.publicKey"
        )
    pki_format = value.get("format")
    if pki_format is None:
        raise SchemaViolation("publicKey.format in body is required")
    if pki_format not in _PKI_FORMATS:
        raise SchemaViolation(
            f"publicKey.format in body should be one of [{' '.join(_PKI_FORMATS)}]",
            code=ENUM_FAIL_CODE,
        )
    content = value.get("content")
    if not isinstance(content, str) or not content:
        raise MalformedSearchQuery("public key provided could not be parsed")
    try:
        raw = b64decode_std(content)
    except GoDecodeError as exc:
        raise MalformedSearchQuery(f'parsing query body from "" failed, because {exc}') from None
    return set(index_keys_for_public_key(raw, str(pki_format)))


def keys_for_query(query: Mapping[str, object]) -> list[set[str]]:
    """Key sets for a ``SearchIndex`` body, one per field present, in Rekor's order.

    Fields: ``hash``, ``publicKey`` (``{"format", "content": <base64>}``), ``email``,
    ``subject``. The caller intersects (``operator: and``) or unions (``or``) the per-field
    hits. An empty list means no field was given. Raises ``SchemaViolation`` (422) for swagger
    constraint failures, ``UnsupportedPKIFormat`` / ``MalformedSearchQuery`` (400) otherwise.
    """
    fields: list[set[str]] = []
    hash_value = _query_string(query, "hash")
    if hash_value is not None:
        fields.append(set(index_keys_for_hash(hash_value)))
    if query.get("publicKey") is not None:
        fields.append(_public_key_field(query["publicKey"]))
    email = _query_string(query, "email")
    if email is not None:
        if not _EMAIL_RE.fullmatch(email):
            raise SchemaViolation(
                f'email in body must be of type email: "{email}"', code=INVALID_TYPE_CODE
            )
        fields.append(set(index_keys_for_email(email)))
    subject = _query_string(query, "subject")
    if subject is not None:
        if not 1 <= len(subject) <= _MAX_SUBJECT_LENGTH:
            raise SchemaViolation(
                f"subject in body should be at most {_MAX_SUBJECT_LENGTH} chars long"
                if subject
                else "subject in body should be at least 1 chars long",
                code=TOO_LONG_FAIL_CODE if subject else TOO_SHORT_FAIL_CODE,
            )
        fields.append(set(index_keys_for_subject(subject)))
    return fields
