"""Tile geometry and the tile cache."""

from __future__ import annotations

import os

import pytest

from services.log import merkle
from services.log.merkle import NodeID
from services.log.tiles import ExpandedTile, TileCache, tile_for_node, tile_slot


def test_c2sp_example_layout() -> None:
    """C2SP tlog-tiles: size 70,000 has 273 full + 1 partial(112) level-0 tiles and so on."""
    widths: dict[tuple[int, int], int] = {}

    def visit(node: NodeID, _h: bytes) -> None:
        slot = tile_slot(node)
        if slot is not None:
            widths[slot[0]] = max(widths.get(slot[0], 0), slot[1] + 1)

    merkle.CompactRange().extend((i.to_bytes(32, "big") for i in range(70_000)), visit)
    level0 = sorted(w for (lv, _), w in widths.items() if lv == 0)
    assert level0.count(256) == 273
    assert widths[(0, 273)] == 112
    assert widths[(1, 0)] == 256
    assert widths[(1, 1)] == 17
    assert widths[(2, 0)] == 1
    assert len(widths) == 274 + 2 + 1


@pytest.mark.parametrize(
    ("node", "where"),
    [
        (NodeID(0, 0), ((0, 0), 0, 1)),
        (NodeID(0, 257), ((0, 1), 1, 2)),
        (NodeID(3, 5), ((0, 0), 40, 48)),
        (NodeID(7, 1), ((0, 0), 128, 256)),
        (NodeID(8, 0), ((1, 0), 0, 1)),
        (NodeID(9, 3), ((1, 0), 6, 8)),
        (NodeID(16, 2), ((2, 0), 2, 3)),
    ],
)
def test_tile_for_node(node: NodeID, where: tuple[tuple[int, int], int, int]) -> None:
    assert tile_for_node(node) == where


def test_expanded_tile_nodes_are_subtree_roots() -> None:
    hashes = [os.urandom(32) for _ in range(200)]
    tile = ExpandedTile(b"".join(hashes))
    assert not tile.full
    for k in range(8):
        span = 1 << k
        for start in range(0, 200 - span + 1, span):
            assert tile.node(start, start + span) == merkle.root(hashes[start : start + span])
    with pytest.raises(LookupError):
        tile.node(192, 256)  # not inside the width
    with pytest.raises(LookupError):
        tile.node(1, 3)  # not a perfect, aligned subtree
    with pytest.raises(ValueError, match=r"not 0\.\.256 hashes"):
        ExpandedTile(b"x" * 33)


def test_cache_keeps_the_widest_version_and_evicts_lru() -> None:
    cache = TileCache(capacity=2)
    narrow = ExpandedTile(os.urandom(32 * 3))
    wide = ExpandedTile(os.urandom(32 * 5))
    cache.put(1, (0, 0), wide)
    cache.put(1, (0, 0), narrow)  # never replaces a wider version
    assert cache.get(1, (0, 0), 5) is wide
    assert cache.get(1, (0, 0), 6) is None  # a caller needing more must re-read
    cache.put(1, (0, 1), narrow)
    cache.put(2, (0, 0), narrow)  # evicts the least recently used: tree 1 tile (0, 0)
    assert cache.get(1, (0, 0), 1) is None
    assert cache.get(1, (0, 1), 3) is narrow
