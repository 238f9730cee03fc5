"""C2SP tlog-tiles geometry: which tile holds a node, and node hashes from tile contents. Pure.

A tile at tile-level L, index N holds the hashes of tree level 8·L at positions
[256·N, 256·N + width). A perfect node at tree level l = 8·L + k (0 ≤ k < 8) is the root of 2^k
consecutive hashes inside exactly one such tile, so every stored node is one tile read plus at
most 127 hashes, and a full tile, once expanded, answers every node under it.
"""

from __future__ import annotations

from collections import OrderedDict

from services.log import merkle
from services.log.merkle import NodeID

__all__ = [
    "TILE_HASHES",
    "TILE_HEIGHT",
    "ExpandedTile",
    "TileCache",
    "TileKey",
    "tile_for_node",
    "tile_slot",
]

TILE_HEIGHT = 8
TILE_HASHES = 1 << TILE_HEIGHT
HASH_SIZE = 32

TileKey = tuple[int, int]
"""(tile level, tile index)."""


def tile_for_node(node: NodeID) -> tuple[TileKey, int, int]:
    """Return the tile holding ``node`` and the ``[start, end)`` slots whose root it is."""
    k = node.level % TILE_HEIGHT
    base = node.index << k
    start = base % TILE_HASHES
    return (node.level // TILE_HEIGHT, base // TILE_HASHES), start, start + (1 << k)


def tile_slot(node: NodeID) -> tuple[TileKey, int] | None:
    """Return where a node is *stored* (tile and slot), or None for levels held only implicitly."""
    if node.level % TILE_HEIGHT:
        return None
    return (node.level // TILE_HEIGHT, node.index // TILE_HASHES), node.index % TILE_HASHES


class ExpandedTile:
    """A tile with all its internal nodes computed, for O(1) node lookups.

    Level k of the tile (roots of slots ``[j·2^k, (j+1)·2^k)``) is stored at ``offsets[k]`` of one
    ``bytes`` blob: a cached tile is then a single object, which keeps a cache of thousands of
    tiles cheap for the garbage collector and about 16 KiB per full tile. Only perfect subtrees
    within the tile's current width exist, so a partial tile answers exactly the nodes it can prove.
    """

    __slots__ = ("_blob", "_offsets", "width")

    def __init__(self, data: bytes) -> None:
        if len(data) % HASH_SIZE or len(data) > TILE_HASHES * HASH_SIZE:
            raise ValueError(f"tile data of {len(data)} bytes is not 0..256 hashes")
        self.width = len(data) // HASH_SIZE
        self._blob = data + merkle.tile_levels(data)
        offsets = [0]
        offset = width = len(data)
        while width > HASH_SIZE:
            offsets.append(offset)
            width = width // (2 * HASH_SIZE) * HASH_SIZE
            offset += width
        self._offsets = tuple(offsets)

    @property
    def full(self) -> bool:
        """True once the tile holds 256 hashes: it is then immutable."""
        return self.width == TILE_HASHES

    def node(self, start: int, end: int) -> bytes:
        """Return the root of the perfect subtree over slots ``[start, end)``."""
        span = end - start
        k = span.bit_length() - 1
        if span != 1 << k or start % span or end > self.width:
            raise LookupError(f"tile of width {self.width} has no perfect node [{start}, {end})")
        at = self._offsets[k] + (start >> k) * HASH_SIZE
        return self._blob[at : at + HASH_SIZE]


class TileCache:
    """A bounded LRU of expanded tiles.

    Full tiles are immutable, so a cached one never goes stale. A partial tile is cached too, with
    its width: its first ``width`` hashes never change either, so it answers every node inside
    that width, and ``get`` reports a miss when a caller needs a wider version.
    """

    __slots__ = ("_capacity", "_tiles", "hits", "misses")

    def __init__(self, capacity: int = 2048) -> None:
        self._capacity = capacity
        self._tiles: OrderedDict[tuple[int, int, int], ExpandedTile] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, tree_id: int, key: TileKey, min_width: int = TILE_HASHES) -> ExpandedTile | None:
        """Return a cached tile holding at least ``min_width`` hashes, or None."""
        ck = (tree_id, *key)
        tile = self._tiles.get(ck)
        if tile is None or tile.width < min_width:
            self.misses += 1
            return None
        self.hits += 1
        self._tiles.move_to_end(ck)
        return tile

    def put(self, tree_id: int, key: TileKey, tile: ExpandedTile) -> None:
        """Cache ``tile`` unless a wider version of it is already cached."""
        if self._capacity <= 0:
            return
        ck = (tree_id, *key)
        old = self._tiles.get(ck)
        if old is not None and old.width >= tile.width:
            return
        self._tiles[ck] = tile
        self._tiles.move_to_end(ck)
        while len(self._tiles) > self._capacity:
            self._tiles.popitem(last=False)
