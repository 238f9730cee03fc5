"""Proofs from stored tiles: the pure planner in ``merkle`` plus a tile fetch, and nothing else.

A proof at tree size n needs at most one read per tile level plus the edge (≈5 tiles at 10^6),
and the upper tiles are hot, so expanded *full* tiles are kept in a ``TileCache``. Partial tiles
are read fresh each time: they grow, but any node that is perfect at size n has the same hash in
every later version of its tile, so a read that races the sequencer is still correct.

Inclusion proofs are every read's and every write's largest cost after the database, so they
take a shorter road than ``merkle.inclusion``'s general plan. A proof splits at the *fork*, the
highest perfect subtree that holds the leaf: below it, the leaf's path of siblings, which lie in
one tile per tile level; above it, the *border*, which depends only on the tree size and the
fork. At one tree size there are at most log2(n) forks, so the borders of recent sizes are
remembered: a tree of size n is the same tree forever, so a remembered border never goes stale.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from services.log import merkle
from services.log.merkle import NodeID, ProofNodes, ProofRangeError
from services.log.tiles import TILE_HEIGHT, ExpandedTile, TileCache, TileKey, tile_for_node

__all__ = ["ProofBuilder", "TileReader"]

_BORDERS = 256
"""Borders remembered per tree: a few tree sizes' worth (about 20 forks each at 10^6 leaves)."""


class TileReader(Protocol):
    """Where tiles come from (the SQL store, or a test fake)."""

    async def read_tiles(self, tree_id: int, keys: Collection[TileKey]) -> dict[TileKey, bytes]:
        """Return the stored data of each requested tile that exists (missing keys are omitted)."""
        ...


class ProofBuilder:
    """Builds inclusion and consistency proofs and historical roots for one tree."""

    __slots__ = ("_borders", "_cache", "_reader", "_tree_id")

    def __init__(self, reader: TileReader, tree_id: int, cache: TileCache | None = None) -> None:
        self._reader = reader
        self._tree_id = tree_id
        self._cache = cache if cache is not None else TileCache()
        self._borders: OrderedDict[tuple[int, int], list[bytes]] = OrderedDict()

    async def nodes(
        self, ids: Sequence[NodeID], overlay: Mapping[TileKey, ExpandedTile] | None = None
    ) -> list[bytes]:
        """Return the hashes of perfect nodes ``ids``, reading each needed tile at most once.

        ``overlay`` supplies tiles the caller already holds (the sequencer's just-committed batch).
        """
        return await self._located([tile_for_node(node) for node in ids], overlay)

    async def _located(
        self,
        located: Sequence[tuple[TileKey, int, int]],
        overlay: Mapping[TileKey, ExpandedTile] | None,
    ) -> list[bytes]:
        """The roots of tile slots ``[start, end)`` of each ``(tile, start, end)``, in order."""
        need: dict[TileKey, int] = {}
        for key, _, end in located:
            need[key] = max(end, need.get(key, 0))
        tiles: dict[TileKey, ExpandedTile] = {}
        missing: list[TileKey] = []
        for key, width in need.items():
            tile = overlay.get(key) if overlay else None
            if tile is None:
                tile = self._cache.get(self._tree_id, key, width)
            if tile is None:
                missing.append(key)
            else:
                tiles[key] = tile
        if missing:
            fetched = await self._reader.read_tiles(self._tree_id, missing)
            for key, data in fetched.items():
                tile = ExpandedTile(data)
                self._cache.put(self._tree_id, key, tile)
                tiles[key] = tile
        try:
            return [tiles[key].node(start, end) for key, start, end in located]
        except KeyError as exc:
            raise LookupError(f"tile {exc.args[0]} is not stored") from None

    async def inclusion(
        self, index: int, size: int, overlay: Mapping[TileKey, ExpandedTile] | None = None
    ) -> list[bytes]:
        """Return the RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size``.

        The same hashes as ``merkle.inclusion(index, size)`` folds from the same nodes.
        """
        if not 0 <= index < size:
            raise ProofRangeError(f"index {index} out of range for tree size {size}")
        # Levels below the fork: where the leaf's path leaves the path to the tree's right edge.
        below = (index ^ size).bit_length() - 1
        located: list[tuple[TileKey, int, int]] = []
        # The sibling at level 8·t + k lies in the tile at level t that holds the leaf's
        # ancestor at level 8·t: flipping bit k < 8 of a position stays inside its 256-block.
        for base in range(0, below, TILE_HEIGHT):
            ancestor = index >> base
            key = (base // TILE_HEIGHT, ancestor >> TILE_HEIGHT)
            slot = ancestor & ((1 << TILE_HEIGHT) - 1)
            for k in range(min(TILE_HEIGHT, below - base)):
                start = ((slot >> k) ^ 1) << k
                located.append((key, start, start + (1 << k)))
        path = await self._located(located, overlay)
        return path + await self._border(size, index >> below << below, below, overlay)

    async def _border(
        self, size: int, begin: int, level: int, overlay: Mapping[TileKey, ExpandedTile] | None
    ) -> list[bytes]:
        """The part of an inclusion proof above the fork ``[begin, begin + 2^level)``.

        It is the fork's right border (folded into one ephemeral node when it has several
        parts), then its left border, nearest first; remembered by (size, fork).
        """
        memo = (size, begin)
        border = self._borders.get(memo)
        if border is not None:
            self._borders.move_to_end(memo)
            return border
        right = merkle.range_nodes(begin + (1 << level), size)[::-1]
        left = merkle.range_nodes(0, begin)[::-1]
        fold = len(right) if len(right) > 1 else 0
        plan = ProofNodes((*right, *left), 0, fold)
        border = plan.rehash(await self.nodes(plan.ids, overlay))
        self._borders[memo] = border
        if len(self._borders) > _BORDERS:
            self._borders.popitem(last=False)
        return border

    async def consistency(self, size1: int, size2: int) -> list[bytes]:
        """Return the RFC 9162 consistency proof from ``size1`` to ``size2``."""
        plan = merkle.consistency(size1, size2)
        return plan.rehash(await self.nodes(plan.ids))

    async def root(self, size: int) -> bytes:
        """Return the root of the tree's first ``size`` leaves (any size up to the current one)."""
        if size < 0:
            raise ProofRangeError(f"negative tree size {size}")
        ids = merkle.CompactRange.node_ids(size)
        return merkle.CompactRange(size, await self.nodes(ids)).root()

    async def leaf_hash(self, index: int) -> bytes:
        """Return the stored leaf hash at ``index``."""
        (h,) = await self.nodes([NodeID(0, index)])
        return h
