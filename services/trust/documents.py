"""``trusted_root.json``, ``signing_config.v0.2.json`` and ``client_trust_config.json``.

Shapes follow clients.md §1.2 exactly, because sigstore-python parses them with strict models
(unknown fields, numeric u64s or a missing ``operator``/``subject``/``validFor`` are fatal) and
sigstore-js and sigstore-go match log IDs byte for byte:

- every log's ``logId.keyId`` is SHA-256 of its DER SPKI, which is also what the server puts in
  ``logID``, the checkpoint key hint and the SCT ``LogID``;
- the TSA chain runs leaf → root and has at least two certificates (a single certificate is
  silently ignored by sigstore-python and fails in sigstore-js);
- URLs are built the way each client builds them: the CA and Rekor at the host root, the TSA as its
  full endpoint (sigstore-python uses ``tsaUrls[].url`` as-is).

The documents are deterministic for the same inputs, so republishing unchanged material changes
no byte and bumps no TUF version. A ``previous`` trusted root is merged in: a key it already lists
keeps its published ``validFor.start``, and a key that has gone (rotation) stays trusted for what
it signed, with ``validFor.end`` set when it was first seen missing.
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from services.errors import OperatorError
from services.trust.material import LogKey, RetiredLog, TrustMaterial, key_details, spki_der

__all__ = [
    "CLIENT_TRUST_CONFIG_MEDIA_TYPE",
    "SIGNING_CONFIG_MEDIA_TYPE",
    "TRUSTED_ROOT_MEDIA_TYPE",
    "Endpoints",
    "MissingLogKey",
    "PublicURLError",
    "client_trust_config",
    "dumps",
    "signing_config",
    "trusted_root",
]

TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
SIGNING_CONFIG_MEDIA_TYPE = "application/vnd.dev.sigstore.signingconfig.v0.2+json"
CLIENT_TRUST_CONFIG_MEDIA_TYPE = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"

Document = dict[str, Any]


class PublicURLError(OperatorError, ValueError):
    """The public URL cannot be one: clients could not reach the services under it."""


class MissingLogKey(OperatorError, ValueError):
    """The published documents are to list a log whose key this data directory lacks."""


class Endpoints:
    """Where each service of one sigstead answers, derived from its public URL."""

    __slots__ = ("base", "ct", "host", "operator", "rekor_v2", "rekor_v2_host", "tsa", "tuf")

    def __init__(
        self, public_url: str, operator: str | None = None, rekor_v2_url: str | None = None
    ) -> None:
        self.base, self.host = base_url(public_url, "--public-url")
        self.operator = operator or self.host
        self.ct = f"{self.base}/ct"
        self.tsa = f"{self.base}/api/v1/timestamp"
        self.tuf = f"{self.base}/tuf"
        # The Rekor v2 log's own URL: its host is the log's origin, so a log retired for a new
        # one keeps its host (and stays readable there) while the new one has another.
        self.rekor_v2, self.rekor_v2_host = (
            (self.base, self.host)
            if rekor_v2_url is None
            else base_url(rekor_v2_url, "--rekor-v2-url")
        )


def base_url(url: str, flag: str) -> tuple[str, str]:
    """``scheme://host[:port]`` and the host of a service URL; raise ``PublicURLError``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a port that is not a number
    except ValueError as exc:
        raise PublicURLError(f"{flag} {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PublicURLError(f"{flag} {url!r}: want http(s)://HOST[:PORT]")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        # sigstore-python joins "/api/v2/signingCert" onto the CA URL, dropping any path.
        raise PublicURLError(f"{flag} {url!r}: no path, clients expect the services at the root")
    return f"{parts.scheme}://{parts.netloc}", parts.hostname


def _time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _tlog(url: str, key: LogKey, operator: str) -> Document:
    return {
        "baseUrl": url,
        "hashAlgorithm": "SHA2_256",
        "publicKey": {
            "rawBytes": _b64(spki_der(key.public_key)),
            "keyDetails": key_details(key.public_key),
            "validFor": {"start": _time(key.created)},
        },
        "logId": {"keyId": _b64(key.log_id)},
        "operator": operator,
    }


def _tlog_v2(endpoints: Endpoints, key: LogKey) -> Document:
    """A Rekor v2 log: its checkpoint key ID marks it as v2 for sigstead's own readers (snippets,
    exports), since a trusted root does not say a log's API version. The key ID is C2SP's, under
    the key name the log signs with (the host): for ECDSA the SHA-256 of the SPKI as in v1, for
    Ed25519 a hash of name and key, and clients find the log by it (``logId``) too."""
    return _v2_doc(endpoints.rekor_v2, endpoints.rekor_v2_host, key, endpoints.operator)


def _v2_doc(url: str, host: str, key: LogKey, operator: str) -> Document:
    doc = _tlog(url, key, operator)
    key_id = {"keyId": _b64(key.note_key_id(host))}
    doc["logId"] = key_id
    doc["checkpointKeyId"] = dict(key_id)
    return doc


def _retired_v2(log: RetiredLog, operator: str) -> Document:
    """A frozen v2 log a newer one replaced: its own URL and key, valid until it was retired
    (what it logged before then still verifies; nothing after can exist)."""
    doc = _v2_doc(log.url, log.host, log.key, operator)
    doc["publicKey"]["validFor"]["end"] = _time(log.retired)
    return doc


def is_rekor_v2(tlog: Mapping[str, Any]) -> bool:
    """Whether a trusted-root ``tlogs`` entry is a Rekor v2 log (it has a checkpoint key ID)."""
    return "checkpointKeyId" in tlog


def _name_attr(name: x509.Name, oid: x509.ObjectIdentifier, default: str) -> str:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else default


def _authority(chain: Sequence[x509.Certificate], uri: str, operator: str) -> Document:
    first = chain[0]
    return {
        "subject": {
            "organization": _name_attr(first.subject, NameOID.ORGANIZATION_NAME, operator),
            "commonName": _name_attr(first.subject, NameOID.COMMON_NAME, operator),
        },
        "uri": uri,
        "certChain": {"certificates": [{"rawBytes": _b64(_der(c))} for c in chain]},
        "validFor": {"start": _time(first.not_valid_before_utc)},
        "operator": operator,
    }


def _merge(
    current: list[Document],
    previous: Sequence[Mapping[str, Any]],
    identity: Callable[[Mapping[str, Any]], str],
    validity: Callable[[Document], dict[str, Any]],
    now: datetime.datetime,
) -> list[Document]:
    """Current entries first (keeping a published start), then retired ones with an end."""
    # Copies: the retired entries are amended and returned, the caller's previous root is not.
    published = {identity(p): copy.deepcopy(dict(p)) for p in previous}
    merged: list[Document] = []
    for doc in current:
        old = published.pop(identity(doc), None)
        if old is not None:
            validity(doc)["start"] = validity(old)["start"]
        merged.append(doc)
    for retired in published.values():
        validity(retired).setdefault("end", _time(now))
        merged.append(retired)
    return merged


def _tlog_id(doc: Mapping[str, Any]) -> str:
    return str(doc["logId"]["keyId"])


def _tlog_validity(doc: dict[str, Any]) -> dict[str, Any]:
    validity: dict[str, Any] = doc["publicKey"]["validFor"]
    return validity


def _ca_id(doc: Mapping[str, Any]) -> str:
    return str(doc["certChain"]["certificates"][0]["rawBytes"])


def _ca_validity(doc: dict[str, Any]) -> dict[str, Any]:
    validity: dict[str, Any] = doc["validFor"]
    return validity


def trusted_root(
    material: TrustMaterial,
    endpoints: Endpoints,
    now: datetime.datetime,
    previous: Mapping[str, Any] | None = None,
) -> Document:
    """The trusted root for ``material`` served at ``endpoints``, merged with ``previous``.

    A service without material (no CA, no TSA) has no current entry; what ``previous`` listed
    for it stays, retired, so that what it signed still verifies.
    """
    if material.tsa_chain is not None and len(material.tsa_chain) < 2:
        raise ValueError("the TSA chain needs a leaf and a root: clients ignore a lone leaf")
    op = endpoints.operator
    prev = previous or {}
    ca, ct, tsa = material.ca_chain, material.ct, material.tsa_chain
    sections = (
        (
            "certificateAuthorities",
            [] if ca is None else [_authority(ca, endpoints.base, op)],
            _ca_id,
            _ca_validity,
        ),
        ("ctlogs", [] if ct is None else [_tlog(endpoints.ct, ct, op)], _tlog_id, _tlog_validity),
        (
            "timestampAuthorities",
            [] if tsa is None else [_authority(tsa, endpoints.tsa, op)],
            _ca_id,
            _ca_validity,
        ),
    )
    root: Document = {"mediaType": TRUSTED_ROOT_MEDIA_TYPE}
    # Rekor v1 entries first (current, then retired), then v2: single-key consumers of v1
    # (cosign's SIGSTORE_REKOR_PUBLIC_KEY, Kyverno's rekor.pubkey) read the first one.
    previous_tlogs = prev.get("tlogs", [])
    v2 = [] if material.rekor_v2 is None else [_tlog_v2(endpoints, material.rekor_v2)]
    v2 += [_retired_v2(log, op) for log in reversed(material.rekor_v2_retired)]
    root["tlogs"] = _merge(
        [_tlog(endpoints.base, material.rekor, op)],
        [t for t in previous_tlogs if not is_rekor_v2(t)],
        _tlog_id,
        _tlog_validity,
        now,
    ) + _merge(v2, [t for t in previous_tlogs if is_rekor_v2(t)], _tlog_id, _tlog_validity, now)
    for name, current, identity, validity in sections:
        root[name] = _merge(current, prev.get(name, []), identity, validity, now)
    order = ("mediaType", "tlogs", "certificateAuthorities", "ctlogs", "timestampAuthorities")
    return {key: root[key] for key in order}


def _service(url: str, start: datetime.datetime, operator: str, version: int = 1) -> Document:
    return {
        "url": url,
        "majorApiVersion": version,
        "validFor": {"start": _time(start)},
        "operator": operator,
    }


def signing_config(
    material: TrustMaterial,
    endpoints: Endpoints,
    oidc_urls: Sequence[str] = (),
    rekor_version: int = 1,
) -> Document:
    """Where clients sign: this sigstead's CA, Rekor v1 and TSA (and any interactive IdPs).

    Only the services ``material`` has keys for are listed: a CA URL that answers 404 would fail
    signing later, with an error that names neither the CA nor the cause. (sigstore-python
    refuses a signing config without a CA outright; it only signs keylessly.)

    Each service's ``validFor.start`` is when its key came into use: sigstore-python drops a
    service whose start lies in the future, so it must never be later than the server's clock.

    ``rekor_version`` 2 lists the Rekor v2 log first and v1 after it: clients that speak v2
    (cosign v3, sigstore-python 4, sigstore-js 4) sign there, older ones fall back to v1. With
    1 only v1 is listed, so no client signs to v2 (whose bundles need a TSA timestamp).
    """
    op = endpoints.operator
    ca, tsa = material.ca_chain, material.tsa_chain
    if oidc_urls and ca is None:
        raise ValueError("OIDC URLs are where clients sign in for the CA; there is no CA")
    ca_urls, oidc = [], []
    if ca is not None:
        ca_start = ca[0].not_valid_before_utc
        ca_urls = [_service(endpoints.base, ca_start, op)]
        # Only used for interactive sign-in; with a token (CI, workload identity) it may be empty.
        oidc = [_service(url, ca_start, op) for url in oidc_urls]
    tsa_urls = [] if tsa is None else [_service(endpoints.tsa, tsa[0].not_valid_before_utc, op)]
    rekor_urls = [_service(endpoints.base, material.rekor.created, op)]
    if rekor_version == 2:
        if material.rekor_v2 is None:
            raise MissingLogKey(
                "--rekor-version 2: there is no Rekor v2 log key (keys/rekor-v2.pub or "
                "keys/rekor-v2.pem) in this data directory; a trust service on its own files "
                "needs the log's public key mounted there"
            )
        rekor_urls.insert(0, _service(endpoints.rekor_v2, material.rekor_v2.created, op, version=2))
    return {
        "mediaType": SIGNING_CONFIG_MEDIA_TYPE,
        "caUrls": ca_urls,
        "oidcUrls": oidc,
        "rekorTlogUrls": rekor_urls,
        "tsaUrls": tsa_urls,
        "rekorTlogConfig": {"selector": "ANY"},
        "tsaConfig": {"selector": "ANY"},
    }


def client_trust_config(root: Document, config: Document) -> Document:
    """What ``sigstore --trust-config FILE`` reads: both documents in one, fully offline."""
    return {
        "mediaType": CLIENT_TRUST_CONFIG_MEDIA_TYPE,
        "trustedRoot": root,
        "signingConfig": config,
    }


def dumps(document: Mapping[str, Any]) -> bytes:
    """Stable bytes for a document (the TUF target hash depends on them)."""
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
