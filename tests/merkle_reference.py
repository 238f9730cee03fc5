"""A short recursive reference implementation of RFC 9162 §2.1 (tests only).

The naive recursive definitions, transcribed as literally as Python allows, to cross-check the
optimised prover in ``services/log/merkle.py`` and the iterative verifier in ``clients/merkle.py``
(neither is imported here). Quadratic-ish and slow on purpose: clarity is the point.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def leaf_hash(data: bytes) -> bytes:
    """The RFC 9162 leaf hash ``SHA-256(0x00 ‖ data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 interior node hash ``SHA-256(0x01 ‖ left ‖ right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """k, the largest power of two smaller than n (requires n > 1)."""
    assert n > 1
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over *leaf hashes* (§2.1.1)."""
    n = len(hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = split(n)
    return node_hash(mth(hashes[:k]), mth(hashes[k:]))


def path(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the inclusion proof of leaf m, for 0 <= m < n (§2.1.3.1)."""
    n = len(hashes)
    if not 0 <= m < n:
        raise ValueError(f"PATH({m}, D[{n}]) is undefined")
    if n == 1:
        return []
    k = split(n)
    if m < k:
        return [*path(m, hashes[:k]), mth(hashes[k:])]
    return [*path(m - k, hashes[k:]), mth(hashes[:k])]


def subproof(m: int, hashes: Sequence[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) (§2.1.4.1), for 0 < m <= n."""
    n = len(hashes)
    if m == n:
        return [] if b else [mth(hashes)]
    k = split(n)
    if m <= k:
        return [*subproof(m, hashes[:k], b), mth(hashes[k:])]
    return [*subproof(m - k, hashes[k:], False), mth(hashes[:k])]


def proof(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true), for 0 < m <= n (§2.1.4.1).

    Empty when m == n. The RFC leaves m == 0 undefined (every tree extends the empty one and
    there is nothing to prove); we refuse it rather than guess.
    """
    n = len(hashes)
    if not 0 < m <= n:
        raise ValueError(f"PROOF({m}, D[{n}]) is undefined")
    return subproof(m, hashes, True)
