"""RFC 8785 (JCS) canonical JSON, with a fast path through ``orjson``.

Every Rekor entry is JCS-encoded on the write path (its leaf, its SET payload, a v2 ``Entry``),
and the pure-Python ``rfc8785.dumps`` costs ~18 µs for a hashedrekord leaf. For "plain" values
(``services.fastjson.plain``) ``orjson``, sorting keys, writes the same bytes in a few µs, the
walk that proves it included. ``dumps`` takes that path when it can prove the bytes identical
and hands everything else to ``rfc8785.dumps``, so the output, and every error (its type and its
message), stay exactly ``rfc8785``'s. ``services.fastjson``'s docstring says where the encoders
part and why each limit of "plain" is needed; JCS needs all of them (floats are ECMAScript
numbers there, and ``rfc8785`` refuses NaN, infinities and ints beyond ±(2**53 - 1)).
"""

from __future__ import annotations

from typing import Any, cast

import orjson
import rfc8785

from services.fastjson import MAX_SAFE_INTEGER, plain

__all__ = ["MAX_SAFE_INTEGER", "dumps"]


def dumps(value: object) -> bytes:
    """``rfc8785.dumps(value)``: the same bytes, or the same exception."""
    try:
        if plain(value):
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (RecursionError, orjson.JSONEncodeError):
        # Too deep (or cyclic) for the walk, or a lone surrogate in a string: rfc8785 says
        # what happens to those.
        pass
    return rfc8785.dumps(cast(Any, value))
