"""RFC 8785 (JCS) canonical JSON, with a fast path through the stdlib's C JSON encoder.

Every Rekor entry is JCS-encoded on the write path (its leaf, its SET payload, a v2 ``Entry``),
and the pure-Python ``rfc8785.dumps`` costs ~18 µs for a hashedrekord leaf. For "plain" values
the C encoder, sorting keys, with ``(",", ":")`` separators and ``ensure_ascii=False``, writes
the same bytes in ~5 µs, the walk that proves it included. ``dumps`` takes that path when it
can prove the bytes identical and hands everything else to ``rfc8785.dumps``, so the output,
and every error (its type and its message), stay exactly ``rfc8785``'s.

A value is plain when it is built only from ``dict`` (ASCII ``str`` keys), ``list``, ``str``,
``int`` within ±(2**53 - 1), ``bool`` and ``None``, each of exactly that type. Why each of those
limits is needed, where JCS and ``json.dumps`` part:

* floats: JCS writes ECMAScript numbers (``1.0`` is ``1``, ``5e-07`` is ``5e-7``), Python its
  ``repr``; and ``rfc8785`` refuses NaN and infinities.
* ints outside ±(2**53 - 1): ``rfc8785`` refuses them (``IntegerDomainError``), json writes them.
  (Past 4300 digits ``rfc8785`` raises a bare ``ValueError``, formatting its own message.)
* key order: JCS sorts keys by UTF-16 code units, Python by code points. The two differ only
  when a non-BMP character (surrogates D800-DFFF in UTF-16) meets one in U+E000-U+FFFF, and a
  lone surrogate in a key makes ``rfc8785`` raise ``UnicodeEncodeError``; requiring ASCII keys
  covers all of it with an O(1) ``str.isascii``, and Rekor's keys are ASCII.
* exact types: subclasses (``IntEnum``, ``StrEnum``, ``OrderedDict``) and tuples take other
  paths in each encoder; they are rare enough to leave to ``rfc8785`` rather than prove equal.

What needs no check: string escaping is the same in both (``\\"``, ``\\\\``, ``\\b \\f \\n \\r
\\t``, other C0 controls as lowercase ``\\u00xx``, and nothing else: not U+007F, not U+2028 or
U+2029), as ``tests/services/test_jcs.py`` checks character by character; and a lone surrogate
in a string value, which json writes but which cannot be encoded to UTF-8, so the final
``.encode()`` fails and ``rfc8785`` raises its own error. A cycle, or nesting deeper than the
recursion limit, makes the walk raise ``RecursionError``, and ``rfc8785`` decides (it raises
``RecursionError`` too, as it always has).
"""

from __future__ import annotations

from _json import encode_basestring as _encode_basestring
from _json import make_encoder as _make_encoder
from typing import Any, cast

import rfc8785

__all__ = ["MAX_SAFE_INTEGER", "dumps"]

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest magnitude JCS (I-JSON) allows an integer; ``rfc8785`` refuses anything beyond."""


def _unreachable(value: object) -> object:
    # The C encoder calls ``default`` only for types it cannot write, and ``_plain`` has
    # refused all of those before the encoder runs.
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# The C encoder itself (``_json``, what ``json.dumps`` runs on CPython), made once:
# ``json.dumps`` with these options builds a ``JSONEncoder`` and a new C encoder on every call,
# about a quarter of the fast path's cost. ``markers=None`` turns off json's cycle check, which
# the walk in ``_plain`` has already done. Arguments: markers, default, string encoder, indent,
# key and item separators, sort_keys, skipkeys, allow_nan.
_encode = _make_encoder(None, _unreachable, _encode_basestring, None, ":", ",", True, False, False)


def _plain(value: object) -> bool:
    """True if the C encoder writes ``value`` byte for byte as ``rfc8785`` (module docstring).

    Strings, the commonest leaves, are tested inline rather than by a call, since a call per
    leaf value is most of what this walk would otherwise cost.
    """
    kind = type(value)
    if kind is dict:
        for key, item in cast(dict[object, object], value).items():
            if type(key) is not str or not key.isascii():
                return False
            if type(item) is not str and not _plain(item):
                return False
        return True
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -MAX_SAFE_INTEGER <= cast(int, value) <= MAX_SAFE_INTEGER
    if kind is list:
        for item in cast(list[object], value):
            if type(item) is not str and not _plain(item):
                return False
        return True
    return False


def dumps(value: object) -> bytes:
    """``rfc8785.dumps(value)``: the same bytes, or the same exception."""
    try:
        if _plain(value):
            return "".join(_encode(value, 0)).encode()
    except (RecursionError, UnicodeEncodeError):
        # Too deep (or cyclic) for the walk, or a lone surrogate in a string: rfc8785 says
        # what happens to those.
        pass
    return rfc8785.dumps(cast(Any, value))
