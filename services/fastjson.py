"""JSON encoding through ``orjson``, for values where its bytes provably equal the stdlib's.

Two encoders sit on hot paths: RFC 8785 for every Rekor leaf and SET payload (``services.jcs``)
and the compact Go-style JSON of every API answer and every round between a front-end worker and
its sequencer. The stdlib's C encoder costs ~14 µs for one 3 KB ``LogEntry`` answer (it builds a
list of chunks and joins them, and aiohttp then encodes the text again); ``orjson`` writes the
UTF-8 bytes in ~2 µs. Where the two encoders part, the stdlib's bytes are the contract, so
``orjson`` only runs on values ``plain`` accepts:

* floats: ``orjson`` writes ``1e16`` where ``json`` writes ``1e+16``, and NaN as ``null``;
* ints outside ±(2**53 - 1): ``orjson`` refuses past 64 bits, and JCS (``rfc8785``) refuses
  past 2**53 - 1; the one bound serves both;
* exact types only: ``orjson`` writes dataclasses, enums, datetimes and ``dict`` subclasses,
  which ``json.dumps`` refuses or writes differently;
* ASCII keys: JCS sorts keys by UTF-16 code units and ``orjson`` by code points; the two orders
  differ only when a non-BMP character meets one in U+E000-U+FFFF, and Rekor's keys are ASCII.

What needs no check: string escaping is the same (``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``,
other C0 controls as lowercase ``\\u00xx``, and nothing else: not U+007F, not U+2028 or U+2029),
as ``tests/services/test_fastjson.py`` checks character by character. A lone surrogate, which
``json`` writes into a ``str`` that then cannot be encoded, makes ``orjson`` raise; callers fall
back to the reference encoder, which raises its own error. A cycle, or nesting deeper than the
recursion limit, makes the walk raise ``RecursionError``; callers leave that to the reference too.
"""

from __future__ import annotations

import json
from typing import cast

import orjson

__all__ = ["MAX_SAFE_INTEGER", "compact", "plain"]

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest magnitude JCS (I-JSON) allows an integer; ``rfc8785`` refuses anything beyond."""


def plain(value: object) -> bool:
    """True if ``value`` is made only of exact ``dict`` (ASCII ``str`` keys), ``list``, ``str``,
    ``int`` within ±``MAX_SAFE_INTEGER``, ``bool`` and ``None`` (see the module docstring).

    Strings, the commonest leaves, are tested inline rather than by a call, since a call per
    leaf value is most of what this walk would otherwise cost.
    """
    kind = type(value)
    if kind is dict:
        for key, item in cast(dict[object, object], value).items():
            if type(key) is not str or not key.isascii():
                return False
            if type(item) is not str and not plain(item):
                return False
        return True
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -MAX_SAFE_INTEGER <= cast(int, value) <= MAX_SAFE_INTEGER
    if kind is list:
        for item in cast(list[object], value):
            if type(item) is not str and not plain(item):
                return False
        return True
    return False


def compact(value: object) -> bytes:
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()``: the same bytes,
    or the same exception.

    That is Go ``encoding/json``'s layout without its HTML escaping, which is what Rekor's
    clients read (raw UTF-8, as in a checkpoint's em dash).
    """
    try:
        if plain(value):
            return orjson.dumps(value)
    except (RecursionError, orjson.JSONEncodeError):
        pass  # too deep or cyclic, or a lone surrogate: the reference says what happens
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
