"""RFC 6962 / RFC 9162 Merkle tree math: pure functions, no I/O.

This module is the server side's half of the Merkle story. It hashes leaves and nodes, keeps the
O(log n) append state of a tree (a compact range), and *plans* proofs: it says which stored nodes
an inclusion or consistency proof needs, and then combines the hashes the caller fetched. It never
fetches anything itself, so the same code serves the SQL store, an in-memory test store and the
tile reader (the design of transparency-dev/merkle's ``proof`` and ``compact`` packages).

The independent verifier lives in ``clients/merkle.py`` and shares no code with this module, so a
bug here cannot cancel out a bug there; both are held to the vectors in ``tests/vectors/``.

Node addressing (``NodeID``)::

    level 2            ┌───────(2,0)───────┐
    level 1       ┌──(1,0)──┐         ┌──(1,1)──┐
    level 0     (0,0)     (0,1)     (0,2)     (0,3)      ← leaf hashes

A node ``(level, index)`` is the root of the perfect subtree over leaves
``[index·2^level, (index+1)·2^level)``. Only perfect nodes are ever stored; the one non-perfect
("ephemeral") node a proof may need is recomputed from perfect nodes by ``ProofNodes.rehash``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "EMPTY_ROOT",
    "CompactRange",
    "NodeID",
    "ProofNodes",
    "ProofRangeError",
    "check_leaves",
    "consistency",
    "hash_children",
    "hash_leaf",
    "hash_leaves",
    "inclusion",
    "range_nodes",
    "root",
    "subtree_root",
]

_sha256 = hashlib.sha256
# Copying a hash object that has already absorbed the one-byte prefix is cheaper than hashing a
# freshly concatenated 65-byte string (~340 ns vs ~390 ns per node here): see bench/bench_merkle.py.
_NODE_PREFIX = _sha256(b"\x01")
_LEAF_PREFIX = _sha256(b"\x00")

_HASH = 32

EMPTY_ROOT = _sha256(b"").digest()
"""MTH of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1)."""


class ProofRangeError(ValueError):
    """A proof was requested for indices or sizes the tree cannot have."""


def hash_leaf(data: bytes) -> bytes:
    """Return the RFC 6962 leaf hash ``SHA-256(0x00 ‖ data)``."""
    h = _LEAF_PREFIX.copy()
    h.update(data)
    return h.digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash ``SHA-256(0x01 ‖ left ‖ right)``."""
    h = _NODE_PREFIX.copy()
    h.update(left + right)
    return h.digest()


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the RFC 6962 Merkle Tree Hash of a list of *leaf hashes*.

    The tree shape is RFC 6962's (split at the largest power of two below n), which equals
    building level by level and *promoting* an odd last node unchanged: a promoted node is
    exactly the right subtree that the recursive definition would hash later. This is the tuned
    hashing core: it computes each of the n-1 interior hashes once, with one ``copy()`` and one
    ``update()`` on a pre-seeded hash object, and nothing else in the loop.
    """
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    level: Sequence[bytes] = leaf_hashes
    copy = _NODE_PREFIX.copy
    while len(level) > 1:
        nxt: list[bytes] = []
        append = nxt.append
        it = iter(level)
        for left, right in zip(it, it, strict=False):
            h = copy()
            h.update(left + right)
            append(h.digest())
        if len(level) & 1:
            append(level[-1])
        level = nxt
    return level[0]


def _hash_leaves(leaves: Sequence[bytes]) -> bytes:
    return b"".join(map(hash_leaf, leaves))


def _subtree_root(hashes: bytes) -> bytes:
    count = len(hashes) // _HASH
    if len(hashes) % _HASH or count == 0 or count & (count - 1):
        raise ValueError(f"subtree_root() needs 2**k hashes of 32 bytes, got {len(hashes)} bytes")
    # For 2**k leaf hashes root() is exactly the perfect subtree's root.
    return root([hashes[i : i + _HASH] for i in range(0, len(hashes), _HASH)])


def _tile_levels(hashes: bytes) -> bytes:
    if len(hashes) % _HASH:
        raise ValueError(f"tile_levels() needs hashes of 32 bytes, got {len(hashes)} bytes")
    level = [hashes[i : i + _HASH] for i in range(0, len(hashes), _HASH)]
    parts: list[bytes] = []
    while len(level) > 1:
        it = iter(level)
        level = [hash_children(left, right) for left, right in zip(it, it, strict=False)]
        parts.extend(level)
    return b"".join(parts)


def _check_leaves(rows: Sequence[tuple[bytes, ...]]) -> tuple[bytes, int]:
    computed = _hash_leaves([row[1] for row in rows])
    if computed == b"".join([row[0] for row in rows]):
        return computed, -1
    at = _HASH
    first = next(i for i, row in enumerate(rows) if row[0] != computed[i * at : (i + 1) * at])
    return computed, first


hash_leaves: Callable[[Sequence[bytes]], bytes]
"""The leaf hashes of a sequence of leaves, concatenated (32 bytes each, in order)."""
check_leaves: Callable[[Sequence[tuple[bytes, ...]]], tuple[bytes, int]]
"""For rows ``(stored leaf hash, leaf, ...)``: the leaves' hashes, concatenated, and the position
of the first row whose stored hash differs from its leaf's (-1 when none does)."""
subtree_root: Callable[[bytes], bytes]
"""The root of a perfect subtree from its 2^k bottom hashes, concatenated; ``ValueError`` for
any other length."""
tile_levels: Callable[[bytes], bytes]
"""The levels above a row of concatenated hashes, bottom-up and concatenated: each level hashes
the pairs of the one below (an odd last hash has no parent) until a level of one. What expands
a tile for proofs: 255 node hashes for a full one."""
try:
    # Bulk hashing in C over libcrypto (_merkle.c), built at install when a compiler and
    # OpenSSL's headers are there: what lets fsck replay a log at over a million leaves a second.
    from services.log._merkle import check_leaves, hash_leaves, subtree_root, tile_levels

    NATIVE = True
except ImportError:  # pragma: no cover - the same results, about four times slower
    check_leaves, hash_leaves, subtree_root = _check_leaves, _hash_leaves, _subtree_root
    tile_levels = _tile_levels
    NATIVE = False


class NodeID(NamedTuple):
    """The root of a perfect subtree: ``level`` above the leaves, ``index`` from the left.

    A named tuple rather than a frozen dataclass: proofs create tens of thousands of these per
    batch, and tuple construction is several times cheaper.
    """

    level: int
    # Shadows tuple.index on purpose: the RFC's name for the position within a level.
    index: int  # type: ignore[assignment]

    def parent(self) -> NodeID:
        """Return the node directly above this one."""
        return NodeID(self.level + 1, self.index >> 1)

    def sibling(self) -> NodeID:
        """Return the other child of this node's parent."""
        return NodeID(self.level, self.index ^ 1)

    def coverage(self) -> tuple[int, int]:
        """Return the half-open range of leaf indices ``[begin, end)`` under this node."""
        return self.index << self.level, (self.index + 1) << self.level


def _decompose(begin: int, end: int) -> tuple[int, int]:
    """Split the compact range ``[begin, end)`` into its left and right borders.

    Each returned integer is a bit mask of subtree sizes: bit k set in ``left`` means a perfect
    subtree of 2^k leaves on the left border (climbing), in ``right`` on the right border
    (descending). Together they tile ``[begin, end)`` exactly, with the fewest possible nodes.
    """
    if begin == 0:
        return 0, end
    xbegin = begin - 1
    # Paths to leaves begin-1 and end diverge at bit d; only nodes strictly below it are inside.
    d = (xbegin ^ end).bit_length() - 1
    mask = (1 << d) - 1
    return ~xbegin & mask, end & mask


def range_nodes(begin: int, end: int) -> list[NodeID]:
    """Return the perfect nodes that tile ``[begin, end)``, ordered left to right."""
    if not 0 <= begin <= end:
        raise ProofRangeError(f"invalid range [{begin}, {end})")
    left, right = _decompose(begin, end)
    ids: list[NodeID] = []
    pos = begin
    while left:
        level = (left & -left).bit_length() - 1
        ids.append(NodeID(level, pos >> level))
        pos += 1 << level
        left &= left - 1
    while right:
        level = right.bit_length() - 1
        ids.append(NodeID(level, pos >> level))
        pos += 1 << level
        right ^= 1 << level
    return ids


@dataclass(frozen=True, slots=True)
class ProofNodes:
    """The stored nodes a proof needs, and how to fold them into the RFC 9162 proof.

    ``ids`` lists the perfect nodes to fetch. If the proof involves an ephemeral (non-perfect)
    node, ``ids[begin:end]`` are the perfect nodes that cover it, lowest level first, and
    ``rehash`` folds them into one hash. Otherwise ``begin == end == 0``.
    """

    ids: tuple[NodeID, ...]
    begin: int
    end: int

    def rehash(self, hashes: Sequence[bytes]) -> list[bytes]:
        """Combine the fetched hashes (one per ``ids`` entry, same order) into the proof."""
        if len(hashes) != len(self.ids):
            raise ProofRangeError(f"got {len(hashes)} hashes for {len(self.ids)} nodes")
        if self.end - self.begin < 2:
            return list(hashes)
        ephemeral = hashes[self.begin]
        # The right border comes lowest level first, so each next node is the *left* sibling
        # of everything folded so far.
        for h in hashes[self.begin + 1 : self.end]:
            ephemeral = hash_children(h, ephemeral)
        return [*hashes[: self.begin], ephemeral, *hashes[self.end :]]


def _nodes(index: int, level: int, size: int) -> tuple[list[NodeID], int, int]:
    """Plan a proof for node ``(level, index)`` in the tree of ``size`` leaves.

    Returns the seed node followed by the proof nodes, and the ``[begin, end)`` slice of the
    ephemeral node's constituents (transparency-dev/merkle ``proof.nodes``).
    """
    # The fork is where the path to (level, index) leaves the path to the tree's right edge; the
    # fork's sibling is the one subtree that may be incomplete in a tree of this size.
    inner = (index ^ (size >> level)).bit_length() - 1
    fork = NodeID(level + inner, index >> inner)
    begin, end = fork.coverage()

    ids = [NodeID(level, index)]
    ids.extend(NodeID(lv, (index >> (lv - level)) ^ 1) for lv in range(level, fork.level))
    len1 = len(ids)
    ids.extend(reversed(range_nodes(end, size)))
    len2 = len(ids)
    ids.extend(reversed(range_nodes(0, begin)))
    if len1 >= len2:
        len1 = len2 = 0
    return ids, len1, len2


def _skip_first(ids: list[NodeID], begin: int, end: int) -> ProofNodes:
    if begin < end:
        begin, end = begin - 1, end - 1
    return ProofNodes(tuple(ids[1:]), begin, end)


def inclusion(index: int, size: int) -> ProofNodes:
    """Plan the inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

    Requires ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise ProofRangeError(f"index {index} out of range for tree size {size}")
    ids, begin, end = _nodes(index, 0, size)
    return _skip_first(ids, begin, end)


def consistency(size1: int, size2: int) -> ProofNodes:
    """Plan the consistency proof between trees of ``size1`` and ``size2`` leaves.

    Requires ``0 <= size1 <= size2``. The proof is empty when ``size1 == size2`` or
    ``size1 == 0`` (RFC 9162 §2.1.4: nothing to prove).
    """
    if not 0 <= size1 <= size2:
        raise ProofRangeError(f"invalid consistency range: size1 {size1}, size2 {size2}")
    if size1 in (0, size2):
        return ProofNodes((), 0, 0)
    # The largest perfect subtree ending at size1: the proof is its inclusion path in size2, led
    # by the subtree itself unless size1 is a power of two (the verifier knows it as root1 then).
    level = (size1 & -size1).bit_length() - 1
    index = (size1 - 1) >> level
    ids, begin, end = _nodes(index, level, size2)
    if index == 0:
        return _skip_first(ids, begin, end)
    return ProofNodes(tuple(ids), begin, end)


NodeVisitor = Callable[[NodeID, bytes], None]


class CompactRange:
    """The append state of the tree ``[0, size)``: the roots of its perfect subtrees.

    Invariant: ``hashes[i]`` is the root of the i-th perfect subtree from the left, and their
    levels are the set bits of ``size`` in decreasing order, so ``len(hashes) == size.bit_count()``.
    Appending a leaf costs one node hash amortised; every node that becomes perfect is reported
    to the visitor exactly once, which is how the store learns which tile entries to write.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self._size = size
        self._hashes = list(hashes)
        if size < 0 or len(self._hashes) != size.bit_count():
            raise ValueError(f"a compact range of size {size} needs {size.bit_count()} hashes")

    @property
    def size(self) -> int:
        """Number of leaves covered."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Perfect subtree roots, left to right (largest first)."""
        return tuple(self._hashes)

    @classmethod
    def from_inclusion(
        cls, index: int, size: int, proof: Sequence[bytes], leaf_hash: bytes
    ) -> CompactRange:
        """The compact range of ``[0, index + 1)`` from an RFC 9162 inclusion proof of leaf
        ``index`` in a tree of ``size`` (any size past it): the proof's left siblings are the
        perfect subtrees of ``[0, index)``, bottom-up. Unverified: compare the root with a
        signed one. Raises ``ProofRangeError`` for a proof of the wrong shape."""
        if not 0 <= index < size:
            raise ProofRangeError(f"leaf {index} is not in a tree of size {size}")
        fn, sn = index, size - 1
        lefts = []
        for node in proof:
            if sn == 0:
                raise ProofRangeError("the inclusion proof is too long")
            if fn & 1 or fn == sn:
                lefts.append(node)
                if not fn & 1:
                    while not fn & 1 and fn != 0:
                        fn >>= 1
                        sn >>= 1
            fn >>= 1
            sn >>= 1
        if sn != 0 or len(lefts) != index.bit_count():
            raise ProofRangeError("the inclusion proof has the wrong length")
        rng = cls(index, reversed(lefts))
        rng.append(leaf_hash)
        return rng

    @staticmethod
    def node_ids(size: int) -> list[NodeID]:
        """Return the IDs of the perfect subtrees whose roots make up ``CompactRange(size)``."""
        return range_nodes(0, size)

    def append(self, leaf_hash: bytes, visitor: NodeVisitor | None = None) -> None:
        """Append one leaf hash, reporting the leaf and every newly perfect node to ``visitor``."""
        index = self._size
        if visitor is not None:
            visitor(NodeID(0, index), leaf_hash)
        h = leaf_hash
        level = 0
        hashes = self._hashes
        # Each trailing 1-bit of the old size is a perfect subtree of the same height as the
        # one being carried: merge them, as in binary addition.
        bits = index
        while bits & 1:
            h = hash_children(hashes.pop(), h)
            level += 1
            if visitor is not None:
                visitor(NodeID(level, index >> level), h)
            bits >>= 1
        hashes.append(h)
        self._size = index + 1

    def append_perfect(self, node_hash: bytes, level: int) -> None:
        """Append the root of a perfect subtree of ``2**level`` leaves in one step.

        The size must be a multiple of ``2**level`` (the subtree starts on its own boundary);
        the result equals appending its leaves one by one. Used by replays (fsck) that hash a
        whole tile's leaves level by level and need the compact range only at tile boundaries.
        """
        width = 1 << level
        index = self._size
        if level < 0 or index % width:
            raise ValueError(f"a subtree of 2^{level} leaves cannot start at leaf {index}")
        h = node_hash
        hashes = self._hashes
        bits = index >> level
        while bits & 1:
            h = hash_children(hashes.pop(), h)
            bits >>= 1
        hashes.append(h)
        self._size = index + width

    def extend(self, leaf_hashes: Iterable[bytes], visitor: NodeVisitor | None = None) -> None:
        """Append leaf hashes in order."""
        for leaf_hash in leaf_hashes:
            self.append(leaf_hash, visitor)

    def root(self) -> bytes:
        """Return the Merkle Tree Hash of the covered tree."""
        if not self._hashes:
            return EMPTY_ROOT
        it = reversed(self._hashes)
        h = next(it)
        for left in it:
            h = hash_children(left, h)
        return h

    def copy(self) -> CompactRange:
        """Return an independent copy (used to stage a batch before it commits)."""
        return CompactRange(self._size, self._hashes)


def inclusion_proof(index: int, size: int, get: Callable[[NodeID], bytes]) -> list[bytes]:
    """Return the inclusion proof hashes, fetching each needed node with ``get``."""
    nodes = inclusion(index, size)
    return nodes.rehash([get(i) for i in nodes.ids])


def consistency_proof(size1: int, size2: int, get: Callable[[NodeID], bytes]) -> list[bytes]:
    """Return the consistency proof hashes, fetching each needed node with ``get``."""
    nodes = consistency(size1, size2)
    return nodes.rehash([get(i) for i in nodes.ids])


def append_with_proofs(
    before: CompactRange, leaf_hashes: Sequence[bytes], visitor: NodeVisitor | None = None
) -> tuple[CompactRange, list[list[bytes]]]:
    """Append a batch to a copy of ``before``; return it and each new leaf's inclusion proof.

    Everything comes from memory, with no stored node read: a proof of a leaf at index
    ``i >= before.size`` needs only perfect nodes that are either roots of ``before`` or made
    perfect by this batch. (A left sibling wholly inside ``[0, before.size)`` has a parent that
    straddles ``before.size``, which makes it one of ``before``'s roots; every other node a proof
    needs contains a new leaf, so appending the batch reports it.) ``visitor`` also sees every
    newly perfect node, as ``CompactRange.append`` reports them.
    """
    ids = CompactRange.node_ids(before.size)
    nodes: dict[NodeID, bytes] = dict(zip(ids, before.hashes, strict=True))
    if visitor is None:
        record: NodeVisitor = nodes.__setitem__
    else:

        def record(node: NodeID, node_hash: bytes) -> None:
            nodes[node] = node_hash
            visitor(node, node_hash)

    after = before.copy()
    after.extend(leaf_hashes, record)
    get = nodes.__getitem__
    size = after.size
    return after, [inclusion_proof(i, size, get) for i in range(before.size, size)]


__all__ += ["NodeVisitor", "append_with_proofs", "consistency_proof", "inclusion_proof"]
