"""Entry point of the Rekor v1 entry layer: a proposed entry in, a canonical entry out.

``canonicalize_proposed_entry`` does what Rekor does between reading the body of
``POST /api/v1/log/entries`` (or one element of ``entries`` in ``/log/entries/retrieve``) and
queueing the leaf: parse, bind the ``ProposedEntry`` (kind discriminator, ``apiVersion``,
``spec``), dispatch on kind and version, validate, verify every signature, apply the algorithm
policy, and produce the canonical leaf and its search keys. It is synchronous, CPU-bound and
pure; callers run it in a thread pool.

Accepted: ``hashedrekord`` 0.0.1, ``dsse`` 0.0.1, ``intoto`` 0.0.2. Other Rekor kinds and
versions are refused the way a Rekor with those types disabled refuses them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from services.log.rekor import dsse, hashedrekord, intoto, intoto_v001
from services.log.rekor.entry import CanonicalEntry, JSONValue, go_json_loads, json_kind
from services.log.rekor.errors import (
    PATTERN_FAIL_CODE,
    MalformedJSON,
    SchemaViolation,
    UnknownKind,
    UnsupportedKind,
    UnsupportedVersion,
)
from services.log.rekor.policy import DEFAULT_ALGORITHM_POLICY, AlgorithmPolicy

__all__ = [
    "REKOR_KINDS",
    "SUPPORTED_VERSIONS",
    "CanonicalEntry",
    "canonicalize_proposed_entry",
    "canonicalize_proposed_value",
]

REKOR_KINDS = frozenset(
    {"alpine", "cose", "dsse", "hashedrekord", "helm", "intoto", "jar", "rekord", "rfc3161",
     "rpm", "tuf"}
)  # fmt: skip
"""Every kind Rekor's ``ProposedEntry`` discriminator knows; any other kind is a 422."""

SUPPORTED_VERSIONS: dict[str, frozenset[str]] = {
    hashedrekord.KIND: frozenset({hashedrekord.API_VERSION}),
    dsse.KIND: frozenset({dsse.API_VERSION}),
    intoto.KIND: frozenset({intoto.API_VERSION, intoto_v001.API_VERSION}),
}
"""Kind -> insertable versions on this log."""

# Versions Rekor implements but this log does not insert: Rekor's message for such a version.

_SEMVER_PATTERN = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_SEMVER = re.compile(_SEMVER_PATTERN, re.ASCII)


def canonicalize_proposed_entry(
    body: bytes, *, policy: AlgorithmPolicy = DEFAULT_ALGORITHM_POLICY
) -> CanonicalEntry:
    """Turn the raw body of a create request into a verified ``CanonicalEntry``.

    Raises a ``RekorError`` subclass whose ``status`` and ``to_json()`` are what Rekor
    answers: ``MalformedJSON`` (400) for a body that is not JSON, ``SchemaViolation`` (422,
    6xx code) for a missing kind/apiVersion/spec or a non-semver apiVersion, ``UnknownKind``
    (422), and an ``EntryRejected`` subclass (400, ``error processing entry: ...``) for
    everything about the entry itself.
    """
    if not body.strip():
        raise SchemaViolation("proposedEntry in body is required")
    try:
        document = go_json_loads(body)
    except ValueError as exc:
        raise MalformedJSON(str(exc)) from None
    return canonicalize_proposed_value(document, policy=policy)


def canonicalize_proposed_value(
    document: JSONValue, *, policy: AlgorithmPolicy = DEFAULT_ALGORITHM_POLICY
) -> CanonicalEntry:
    """Like ``canonicalize_proposed_entry`` for an already-parsed JSON value.

    For ``POST /api/v1/log/entries/retrieve``, whose ``entries`` array holds proposed entries
    inside a larger document. The value must come from ``json.loads`` (dicts, lists, str,
    int/float, bool, None).
    """
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise MalformedJSON(
            f"json: cannot unmarshal {json_kind(document)} into Go value of type "
            "models.ProposedEntry"
        )
    kind = document.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise MalformedJSON(
            f"json: cannot unmarshal {json_kind(kind)} into Go struct field .kind of type string"
        )
    if not kind:
        raise SchemaViolation("kind in body is required")
    if kind not in REKOR_KINDS:
        raise UnknownKind(kind)

    api_version = document.get("apiVersion")
    if api_version is not None and not isinstance(api_version, str):
        raise MalformedJSON(
            f"json: cannot unmarshal {json_kind(api_version)} into Go struct field "
            ".apiVersion of type string"
        )
    if api_version is None:
        raise SchemaViolation("apiVersion in body is required")
    if not _SEMVER.fullmatch(api_version):
        raise SchemaViolation(
            f"apiVersion in body should match '{_SEMVER_PATTERN}'", code=PATTERN_FAIL_CODE
        )
    spec = document.get("spec")
    if spec is None:
        raise SchemaViolation("spec in body is required")

    versions = SUPPORTED_VERSIONS.get(kind)
    if versions is None:
        raise UnsupportedKind(kind)
    if api_version not in versions:
        raise UnsupportedVersion(
            f"{kind} implementation for version '{api_version}' not found: "
            f"unable to locate entry for version {api_version}"
        )

    handlers: dict[str, Callable[[JSONValue], CanonicalEntry]] = {
        hashedrekord.KIND: lambda s: hashedrekord.canonicalize(s, policy),
        dsse.KIND: dsse.canonicalize,
        intoto.KIND: intoto.canonicalize,
    }
    if kind == intoto.KIND and api_version == intoto_v001.API_VERSION:
        return intoto_v001.canonicalize(spec)
    return handlers[kind](spec)
