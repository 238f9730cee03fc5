"""What the benchmarks that write large trees straight into the database share."""

from __future__ import annotations

from services.log import merkle
from services.log.tiles import TileKey, tile_slot

__all__ = ["TileCollector"]


class TileCollector:
    """A ``CompactRange.append`` visitor that gathers the tile contents the store would write:
    every reported node at a tile level, in order, per tile."""

    def __init__(self) -> None:
        self.tiles: dict[TileKey, bytearray] = {}

    def __call__(self, node: merkle.NodeID, node_hash: bytes) -> None:
        slot = tile_slot(node)
        if slot is not None:
            self.tiles.setdefault(slot[0], bytearray()).extend(node_hash)
