"""Errors of the Rekor v1 entry layer, each carrying the HTTP status and the body Rekor answers.

Rekor's error body is ``{"code": <int>, "message": "<text>"}``. Two families exist there and
both are reproduced here:

* errors produced by Rekor's own handlers put the HTTP status in ``code``; every entry that fails
  validation answers **400** with ``message = "error processing entry: <detail>"``;
* errors produced by go-openapi while binding the request (a required top-level field missing, a
  pattern mismatch, an unknown ``kind``) answer **422** with a 6xx validation code in ``code``
  (602 required, 605 pattern) or 422 itself for an unknown discriminator value.

The web layer maps a ``RekorError`` to a response with ``status`` and ``to_json()``; nothing else
needs to know which family an error belongs to.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ENTRY_ERROR_PREFIX",
    "ENUM_FAIL_CODE",
    "INVALID_TYPE_CODE",
    "PATTERN_FAIL_CODE",
    "REQUIRED_FAIL_CODE",
    "TOO_LONG_FAIL_CODE",
    "TOO_SHORT_FAIL_CODE",
    "AlgorithmNotAllowed",
    "CertificateChainInvalid",
    "EntryRejected",
    "KeyUnparseable",
    "MalformedEntry",
    "MalformedJSON",
    "MalformedSearchQuery",
    "NotInsertable",
    "RekorError",
    "SchemaViolation",
    "SignatureInvalid",
    "UnknownKind",
    "UnsupportedKind",
    "UnsupportedPKIFormat",
    "UnsupportedVersion",
]

ENTRY_ERROR_PREFIX = "error processing entry: "
"""Rekor's ``validationError`` format: every rejected proposed entry's message starts with it."""

# go-openapi validation codes (github.com/go-openapi/errors): the JSON ``code`` of a 422 answer.
INVALID_TYPE_CODE = 601
REQUIRED_FAIL_CODE = 602
TOO_LONG_FAIL_CODE = 603
TOO_SHORT_FAIL_CODE = 604
PATTERN_FAIL_CODE = 605
ENUM_FAIL_CODE = 606


class RekorError(Exception):
    """Base class of every error this package raises on purpose.

    ``status`` is the HTTP status to answer with, ``code`` the JSON ``code`` field (equal to the
    status except for go-openapi validation errors) and ``message`` the JSON ``message`` field,
    exactly as Rekor words it.
    """

    status: ClassVar[int] = 400

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = self.status if code is None else code

    def to_json(self) -> dict[str, int | str]:
        """Return the Rekor ``Error`` body: ``{"code": ..., "message": ...}``."""
        return {"code": self.code, "message": self.message}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code}, {self.message!r})"


class MalformedJSON(RekorError):
    """The request body is not JSON, or a top-level field has the wrong JSON type (400).

    go-openapi words it ``parsing proposedEntry body from "" failed, because <reason>``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f'parsing proposedEntry body from "" failed, because {reason}')
        self.reason = reason


class SchemaViolation(RekorError):
    """A top-level swagger constraint failed (422 with a 6xx ``code``).

    For example ``{"code": 602, "message": "spec in body is required"}``.
    """

    status = 422

    def __init__(self, message: str, *, code: int = REQUIRED_FAIL_CODE) -> None:
        super().__init__(message, code=code)


class UnknownKind(RekorError):
    """``kind`` names no Rekor entry type at all (422, ``invalid kind value: "x"``)."""

    status = 422

    def __init__(self, kind: str) -> None:
        super().__init__(f"invalid kind value: {_go_quote(kind)}")
        self.kind = kind


class EntryRejected(RekorError):
    """A proposed entry failed validation (400, ``error processing entry: <detail>``).

    ``detail`` is the part after the prefix; subclasses say *why* the entry was rejected.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(ENTRY_ERROR_PREFIX + detail)
        self.detail = detail


class UnsupportedKind(EntryRejected):
    """A kind Rekor knows (``rekord``, ``rpm``, ...) that this log does not accept."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"could not unmarshal entry for kind '{kind}'")
        self.kind = kind


class UnsupportedVersion(EntryRejected):
    """A supported kind with an ``apiVersion`` this log cannot insert."""


class MalformedEntry(EntryRejected):
    """The spec is structurally wrong: missing fields, bad base64 or hex, a wrong digest length."""


class KeyUnparseable(EntryRejected):
    """The public key, certificate or chain does not parse, or is a key type nothing verifies."""


class CertificateChainInvalid(EntryRejected):
    """A certificate chain is too long or does not verify from the leaf to its last element."""


class SignatureInvalid(EntryRejected):
    """A signature does not verify (hashedrekord digest signature or a DSSE envelope signature)."""


class AlgorithmNotAllowed(EntryRejected):
    """The (key, digest) pair is outside the configured client signing algorithms."""

    def __init__(self) -> None:
        super().__init__("entry algorithms are not allowed")


class NotInsertable(EntryRejected):
    """The entry is well-formed but lacks what an insert needs (DSSE without proposedContent)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"entry not insertable into log: {reason}")
        self.reason = reason


class UnsupportedPKIFormat(RekorError):
    """A search by public key named a format other than ``x509`` (400)."""

    def __init__(self) -> None:
        super().__init__("the PKI format requested is not supported by this server")


class MalformedSearchQuery(RekorError):
    """A search query value does not parse, e.g. a public key that is neither PEM nor DER (400)."""


def _go_quote(value: str) -> str:
    """Quote like Go's ``%q`` for the printable ASCII cases clients realistically send."""
    out = ['"']
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
