"""Proofs from stored tiles: the pure planner in ``merkle`` plus a tile fetch, and nothing else.

A proof at tree size n needs at most one read per tile level plus the edge (≈5 tiles at 10^6),
and the upper tiles are hot, so expanded *full* tiles are kept in a ``TileCache``. Partial tiles
are read fresh each time: they grow, but any node that is perfect at size n has the same hash in
every later version of its tile, so a read that races the sequencer is still correct.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from services.log import merkle
from services.log.merkle import NodeID, ProofRangeError
from services.log.tiles import ExpandedTile, TileCache, TileKey, tile_for_node

__all__ = ["ProofBuilder", "TileReader"]


class TileReader(Protocol):
    """Where tiles come from (the SQL store, or a test fake)."""

    async def read_tiles(self, tree_id: int, keys: Collection[TileKey]) -> dict[TileKey, bytes]:
        """Return the stored data of each requested tile that exists (missing keys are omitted)."""
        ...


class ProofBuilder:
    """Builds inclusion and consistency proofs and historical roots for one tree."""

    __slots__ = ("_cache", "_reader", "_tree_id")

    def __init__(self, reader: TileReader, tree_id: int, cache: TileCache | None = None) -> None:
        self._reader = reader
        self._tree_id = tree_id
        self._cache = cache if cache is not None else TileCache()

    async def nodes(
        self, ids: Sequence[NodeID], overlay: Mapping[TileKey, ExpandedTile] | None = None
    ) -> list[bytes]:
        """Return the hashes of perfect nodes ``ids``, reading each needed tile at most once.

        ``overlay`` supplies tiles the caller already holds (the sequencer's just-committed batch).
        """
        located = [tile_for_node(node) for node in ids]
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
        """Return the RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size``."""
        plan = merkle.inclusion(index, size)
        return plan.rehash(await self.nodes(plan.ids, overlay))

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
