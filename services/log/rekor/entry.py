"""The value every entry kind produces, the canonical leaf encoding, and spec-field helpers."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from services import jcs
from services.limits import check_json_shape
from services.log.rekor._go import GoDecodeError, b64decode_std
from services.log.rekor.errors import MalformedEntry

__all__ = [
    "CanonicalEntry",
    "JSONValue",
    "SpecReader",
    "canonical_leaf",
    "decode_b64_field",
    "go_json_loads",
    "go_type",
    "json_kind",
]

JSONValue = object
"""Anything ``json.loads`` returns; narrowed with isinstance where it is used."""


@dataclass(frozen=True, slots=True)
class CanonicalEntry:
    """A verified proposed entry, reduced to what goes into the log.

    ``leaf`` is the exact byte string stored in the Merkle tree and returned (base64) as
    ``body``: RFC 8785 JSON of ``{"apiVersion", "kind", "spec"}`` with the type-reduced spec.
    ``search_keys`` are the index keys (see ``searchkeys``). ``attestation`` is the decoded
    in-toto payload of an ``intoto`` entry, for deployments that store attestations (Rekor's
    ``--enable_attestation_storage``), and ``attestation_key`` the ``sha256:<hex>`` Rekor files
    it under; both are None for other kinds.
    """

    kind: str
    api_version: str
    leaf: bytes
    search_keys: frozenset[str]
    attestation: bytes | None = field(default=None, repr=False)
    attestation_key: str | None = None


def canonical_leaf(kind: str, api_version: str, spec: Mapping[str, JSONValue]) -> bytes:
    """Encode ``{"apiVersion", "kind", "spec"}`` with RFC 8785 (JCS), as Rekor's leaf."""
    document: dict[str, object] = {"apiVersion": api_version, "kind": kind, "spec": dict(spec)}
    return jcs.dumps(document)


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _reject_constant(name: str) -> JSONValue:
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")


def _fix(text: str) -> str:
    return _LONE_SURROGATE.sub("\ufffd", text)


def _replace_lone_surrogates(root: JSONValue) -> JSONValue:
    if isinstance(root, str):
        return _fix(root)
    stack: list[JSONValue] = [root]
    while stack:  # iterative: a deeply nested document must not exhaust the Python stack
        node = stack.pop()
        if isinstance(node, dict):
            items = list(node.items())
            node.clear()
            for key, value in items:
                if isinstance(value, str):
                    value = _fix(value)
                elif isinstance(value, dict | list):
                    stack.append(value)
                node[_fix(key)] = value
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, str):
                    node[i] = _fix(value)
                elif isinstance(value, dict | list):
                    stack.append(value)
    return root


# ``json.loads`` with any option builds a new decoder (and its C scanner) on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def go_json_loads(data: str | bytes) -> JSONValue:
    """Parse JSON with Go ``encoding/json``'s leniencies and strictness.

    Invalid UTF-8 and lone UTF-16 surrogate escapes become U+FFFD (Go replaces them, and the
    canonical JSON encoder cannot encode surrogates); ``NaN``/``Infinity`` are rejected.
    Raises ``ValueError`` (including for nesting too deep to parse).
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    check_json_shape(text)
    try:
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        doc: JSONValue = _DECODER.decode(text)
    except RecursionError:
        raise ValueError("exceeded max depth") from None
    if _SURROGATE_ESCAPE.search(text):
        doc = _replace_lone_surrogates(doc)
    return doc


def json_kind(value: JSONValue) -> str:
    """The JSON type name Go's ``UnmarshalTypeError`` reports (``number``, ``array``, ...)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def go_type(value: JSONValue) -> str:
    """The Go dynamic type ``%T`` prints for a value ``encoding/json`` decoded into ``any``."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    if value is None:
        return "<nil>"
    return "map[string]interface {}"


class SpecReader:
    """Collects go-openapi style field errors while a spec is read, then raises them at once.

    Rekor validates a spec against its JSON schema and reports every violation as
    ``validation failure list:\\n<field> in body is required\\n...``. Readers return None for a
    missing or mistyped field and record the violation; ``raise_if_any`` raises
    ``MalformedEntry`` with the collected list.
    """

    def __init__(self) -> None:
        self.errors: list[str] = []

    def _type(self, path: str, expected: str, value: JSONValue) -> None:
        self.errors.append(f'{path} in body must be of type {expected}: "{json_kind(value)}"')

    def obj(
        self, parent: Mapping[str, JSONValue], name: str, path: str, *, required: bool
    ) -> Mapping[str, JSONValue] | None:
        """Read an object field."""
        value = parent.get(name)
        if value is None:
            if required:
                self.errors.append(f"{path} in body is required")
            return None
        if not isinstance(value, dict):
            self._type(path, "object", value)
            return None
        return value

    def string(
        self, parent: Mapping[str, JSONValue], name: str, path: str, *, required: bool
    ) -> str | None:
        """Read a string field."""
        value = parent.get(name)
        if value is None:
            if required:
                self.errors.append(f"{path} in body is required")
            return None
        if not isinstance(value, str):
            self._type(path, "string", value)
            return None
        return value

    def array(
        self,
        parent: Mapping[str, JSONValue],
        name: str,
        path: str,
        *,
        required: bool,
        min_items: int = 0,
    ) -> list[JSONValue] | None:
        """Read an array field, checking ``minItems``."""
        value = parent.get(name)
        if value is None:
            if required:
                self.errors.append(f"{path} in body is required")
            return None
        if not isinstance(value, list):
            self._type(path, "array", value)
            return None
        if len(value) < min_items:
            self.errors.append(f"{path} in body should have at least {min_items} items")
            return None
        return value

    def enum(self, value: str | None, path: str, allowed: tuple[str, ...]) -> str | None:
        """Check a string against an enum; None passes through (required-ness is separate)."""
        if value is not None and value not in allowed:
            self.errors.append(f"{path} in body should be one of [{' '.join(allowed)}]")
            return None
        return value

    def raise_if_any(self) -> None:
        """Raise ``MalformedEntry`` listing every recorded violation, if there is any."""
        if self.errors:
            raise MalformedEntry("validation failure list:\n" + "\n".join(self.errors))


def decode_b64_field(value: str, what: str) -> bytes:
    """Decode a ``format: byte`` field; raise ``MalformedEntry`` with Rekor's wording."""
    try:
        return b64decode_std(value)
    except GoDecodeError as exc:
        raise MalformedEntry(f"failed parsing base64 data{what}: {exc}") from None
