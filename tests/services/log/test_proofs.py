"""Proofs from tiles: the inclusion shortcut against the general plan, at every tile level."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients import merkle as client_merkle
from services.log import merkle
from services.log.merkle import NodeID, ProofRangeError
from services.log.proofs import ProofBuilder
from services.log.tiles import TILE_HASHES, TILE_HEIGHT, ExpandedTile, TileCache, TileKey, tile_slot

# Past 65,536 leaves a proof reaches tile level 2, so every branch of the tile walk is taken.
SIZE = 70_001
LEAF_HASHES = [merkle.hash_leaf(i.to_bytes(4, "big")) for i in range(SIZE)]
NODES: dict[NodeID, bytes] = {}
TILES: dict[TileKey, bytes] = {}


def _record(node: NodeID, node_hash: bytes) -> None:
    NODES[node] = node_hash
    slot = tile_slot(node)
    if slot is not None:
        TILES[slot[0]] = TILES.get(slot[0], b"") + node_hash


merkle.CompactRange().extend(LEAF_HASHES, _record)


class TilesAt:
    """The store as it was at ``size``: each tile holds only the nodes perfect by then."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.reads = 0

    def width(self, key: TileKey) -> int:
        level, index = key
        return max(0, min(TILE_HASHES, (self.size >> (TILE_HEIGHT * level)) - TILE_HASHES * index))

    async def read_tiles(self, tree_id: int, keys: Collection[TileKey]) -> dict[TileKey, bytes]:
        self.reads += 1
        return {k: TILES[k][: 32 * self.width(k)] for k in keys if self.width(k)}


def _reference(index: int, size: int) -> list[bytes]:
    return merkle.inclusion_proof(index, size, NODES.__getitem__)


def _root(size: int) -> bytes:
    return merkle.CompactRange(size, [NODES[n] for n in merkle.CompactRange.node_ids(size)]).root()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_inclusion_equals_the_general_plan(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, SIZE) | st.sampled_from([1, 2, 255, 256, 257, 65_536, SIZE]))
    index = data.draw(st.integers(0, size - 1))
    proof = asyncio.run(ProofBuilder(TilesAt(size), 1).inclusion(index, size))
    assert proof == _reference(index, size)
    client_merkle.verify_inclusion(LEAF_HASHES[index], index, size, proof, _root(size))


def test_remembered_borders_stay_right_across_sizes() -> None:
    """Borders are remembered by tree size, so interleaved sizes never borrow each other's."""
    sizes = [65_535, 65_536, 65_537, 69_999, SIZE]
    builder = ProofBuilder(TilesAt(SIZE), 1, TileCache(4096))

    async def run() -> None:
        for index in range(0, 65_535, 997):
            for size in sizes:
                assert await builder.inclusion(index, size) == _reference(index, size)

    asyncio.run(run())


def test_the_sequencers_overlay_supplies_tiles_not_yet_readable() -> None:
    """Right after a commit the sequencer proves new leaves from the tiles it just wrote."""
    size = 70_000
    store = TilesAt(size)
    overlay = {key: ExpandedTile(TILES[key][: 32 * store.width(key)]) for key in TILES}
    nothing_stored = TilesAt(0)
    builder = ProofBuilder(nothing_stored, 1, TileCache(0))
    proof = asyncio.run(builder.inclusion(size - 1, size, overlay))
    assert proof == _reference(size - 1, size)
    with pytest.raises(LookupError):
        asyncio.run(ProofBuilder(nothing_stored, 1, TileCache(0)).inclusion(size - 1, size))


def test_a_proof_reads_each_missing_tile_level_once() -> None:
    store = TilesAt(SIZE)
    builder = ProofBuilder(store, 1, TileCache(4096))
    asyncio.run(builder.inclusion(12_345, SIZE))
    first = store.reads
    asyncio.run(builder.inclusion(12_345, SIZE))
    assert first == 2  # the leaf's path (all its tiles at once), then the border
    assert store.reads == first  # full tiles cached, border remembered


@pytest.mark.parametrize(("index", "size"), [(-1, 5), (5, 5), (0, 0)])
def test_out_of_range(index: int, size: int) -> None:
    with pytest.raises(ProofRangeError):
        asyncio.run(ProofBuilder(TilesAt(SIZE), 1).inclusion(index, size))
