"""``sigstead fsck``: replay every log in a database and prove it is what its checkpoints say.

For each tree (Rekor v1, Rekor v2, the CT log), streaming in index order with bounded memory:

- entries: indices contiguous from 0, each stored leaf hash = SHA-256(0x00 || leaf);
- the tree: rebuilt leaf by leaf in a compact range; every stored tile (the engine's only copy
  of the tree's nodes) must equal the rebuilt one, and no tile may exist beyond the tree;
- checkpoints: every stored checkpoint's signature verifies under one of the data directory's
  log keys, its origin is the tree's, and its root is the rebuilt tree's root at its size (so
  each is consistent with every later one); the tree head is the newest of them;
- with ``deep``: each Rekor v1 entry's stored SET (``entries.seal``) verifies for its stored
  ``integrated_time``, index and body.

The first divergence stops the replay with ``Divergence`` naming the tree, the index or size, and
what was expected against what is stored. What it does not check (yet): the search index against
the entries, entry signatures and canonical form; an auditor's HTTP mode.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from services.db import Database
from services.errors import OperatorError
from services.keys import load_private_key, load_public_ec_key
from services.log import merkle
from services.log.rekor.seal import SealMismatch, verify_seal
from services.log.schema import checkpoints, entries, tiles, tree_heads
from services.log.tiles import HASH_SIZE, TILE_HASHES, tile_slot

__all__ = ["Divergence", "TreeReport", "fsck"]

_CHUNK = 5000
_EM_DASH = "\u2014"


class Divergence(OperatorError):
    """The stored log is not what its checkpoints say."""


@dataclass(frozen=True, slots=True)
class TreeReport:
    """One tree that checked out."""

    tree_id: int
    origin: str
    size: int
    checkpoints: int
    tiles: int
    seals: int
    seconds: float


@dataclass(frozen=True, slots=True)
class _Key:
    name: str
    key: ec.EllipticCurvePublicKey
    hint: bytes
    log_id: bytes


def _keys(data_dir: Path) -> list[_Key]:
    out = []
    for name in ("rekor.pub", "rekor-v2.pub", "ctlog.pub"):
        path = data_dir / "keys" / name
        private = path.with_suffix(".pem")
        if path.is_file() or private.is_file():
            # The public half (written by `keys init` and the trust service), else the key's.
            if path.is_file():
                key = load_public_ec_key(path)
            else:
                pair = load_private_key(private)
                if not isinstance(pair, ec.EllipticCurvePrivateKey):
                    raise OperatorError(f"{private}: not an EC key")
                key = pair.public_key()
            spki = key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            log_id = hashlib.sha256(spki).digest()
            out.append(_Key(name, key, log_id[:4], log_id))
    if not out:
        raise OperatorError(f"{data_dir} holds no log keys (keys/*.pub): name the data directory")
    return out


def _verify_note(note: str, keys: list[_Key], what: str) -> tuple[_Key, str, int, bytes]:
    """The key that signed ``note``, and its origin, size and root; raise ``Divergence``."""
    body, sep, signatures = note.rpartition("\n\n")
    if not sep:
        raise Divergence(f"{what}: not a signed note")
    text = body + "\n"
    lines = body.split("\n")
    try:
        origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True)
    except (IndexError, ValueError):
        raise Divergence(f"{what}: malformed checkpoint text") from None
    for line in signatures.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _EM_DASH:
            continue
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except ValueError:
            continue
        for key in keys:
            if raw[:4] != key.hint:
                continue
            try:
                key.key.verify(raw[4:], text.encode(), ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                raise Divergence(f"{what}: signature by {key.name} does not verify") from None
            return key, origin, size, root
    raise Divergence(f"{what}: no signature by any of the data directory's log keys")


def _entry_rows(
    conn: Connection, tree_id: int, deep: bool
) -> Iterator[tuple[int, bytes, bytes, int, bytes | None]]:
    columns = [entries.c.idx, entries.c.leaf_hash, entries.c.leaf, entries.c.integrated_time]
    columns.append(entries.c.seal)
    last = -1
    while True:
        rows = conn.execute(
            select(*columns)
            .where(entries.c.tree_id == tree_id, entries.c.idx > last)
            .order_by(entries.c.idx)
            .limit(_CHUNK)
        ).all()
        if not rows:
            return
        for idx, leaf_hash, leaf, integrated_time, seal in rows:
            yield (
                int(idx),
                bytes(leaf_hash),
                bytes(leaf),
                int(integrated_time),
                (None if seal is None or not deep else bytes(seal)),
            )
        last = int(rows[-1][0])


def _checkpoint_rows(conn: Connection, tree_id: int) -> Iterator[tuple[int, bytes, str]]:
    last = -1
    while True:
        rows = conn.execute(
            select(checkpoints.c.size, checkpoints.c.root, checkpoints.c.checkpoint)
            .where(checkpoints.c.tree_id == tree_id, checkpoints.c.size > last)
            .order_by(checkpoints.c.size)
            .limit(_CHUNK)
        ).all()
        if not rows:
            return
        for size, root, note in rows:
            yield int(size), bytes(root), str(note)
        last = int(rows[-1][0])


def _check_tree(
    conn: Connection,
    tree_id: int,
    origin: str,
    head: tuple[int, bytes, str],
    keys: list[_Key],
    deep: bool,
    progress: Callable[[int, int], None],
) -> TreeReport:
    started = time.perf_counter()
    head_size, head_root, head_note = head
    what = f"tree {tree_id} ({origin})"
    signer, note_origin, note_size, note_root = _verify_note(head_note, keys, f"{what} head")
    if (note_origin, note_size, note_root) != (origin, head_size, head_root):
        raise Divergence(
            f"{what}: the head's checkpoint says {note_origin!r} size {note_size} "
            f"root {note_root.hex()}, the head row size {head_size} root "
            f"{head_root.hex()}"
        )
    rekor_v1 = signer.name == "rekor.pub"
    log_id_hex = signer.log_id.hex()

    stored_checkpoints = _checkpoint_rows(conn, tree_id)
    next_checkpoint = next(stored_checkpoints, None)
    seen_checkpoints = 0

    def check_checkpoints(size: int, root: bytes) -> None:
        nonlocal next_checkpoint, seen_checkpoints
        while next_checkpoint is not None and next_checkpoint[0] <= size:
            cp_size, cp_root, cp_note = next_checkpoint
            where = f"{what} checkpoint at size {cp_size}"
            _, cp_origin, text_size, text_root = _verify_note(cp_note, keys, where)
            if cp_origin != origin or text_size != cp_size or text_root != cp_root:
                raise Divergence(
                    f"{where}: its text ({cp_origin!r}, {text_size}, {text_root.hex()}) is not "
                    f"its row ({cp_size}, {cp_root.hex()})"
                )
            if cp_size == size and cp_root != root:
                raise Divergence(
                    f"{where}: root {cp_root.hex()}, but the entries hash to {root.hex()}"
                )
            if cp_size < size:
                raise Divergence(f"{where}: the replay passed it (entries missing?)")
            seen_checkpoints += 1
            next_checkpoint = next(stored_checkpoints, None)

    rng = merkle.CompactRange()
    edge: dict[tuple[int, int], bytearray] = {}
    full: list[tuple[tuple[int, int], bytes]] = []
    checked_tiles = 0

    def visit(node: merkle.NodeID, node_hash: bytes) -> None:
        slot = tile_slot(node)
        if slot is None:
            return
        key, position = slot
        data = edge.setdefault(key, bytearray())
        data += node_hash
        if position == TILE_HASHES - 1:
            full.append((key, bytes(edge.pop(key))))

    def compare_tiles(batch: list[tuple[tuple[int, int], bytes]]) -> None:
        nonlocal checked_tiles
        by_level: dict[int, dict[int, bytes]] = {}
        for (level, index), data in batch:
            by_level.setdefault(level, {})[index] = data
        for level, wanted in by_level.items():
            rows = conn.execute(
                select(tiles.c.idx, tiles.c.data).where(
                    tiles.c.tree_id == tree_id,
                    tiles.c.level == level,
                    tiles.c.idx.in_(list(wanted)),
                )
            ).all()
            stored = {int(i): bytes(d) for i, d in rows}
            for index, data in wanted.items():
                have = stored.get(index)
                if have is None:
                    raise Divergence(f"{what}: tile {level}/{index} is missing")
                if have != data:
                    slot = next(
                        i
                        for i in range(0, max(len(have), len(data)), HASH_SIZE)
                        if have[i : i + HASH_SIZE] != data[i : i + HASH_SIZE]
                    )
                    raise Divergence(
                        f"{what}: tile {level}/{index} differs from the entries' hashes at slot "
                        f"{slot // HASH_SIZE} (stored {len(have) // HASH_SIZE} hashes, rebuilt "
                        f"{len(data) // HASH_SIZE})"
                    )
                checked_tiles += 1

    check_checkpoints(0, merkle.CompactRange().root())
    sealed = 0
    expected = 0
    for idx, leaf_hash, leaf, integrated_time, seal in _entry_rows(conn, tree_id, deep):
        if idx != expected:
            raise Divergence(f"{what}: entry {expected} is missing (next stored index {idx})")
        if idx >= head_size:
            raise Divergence(f"{what}: entry {idx} lies beyond the head (size {head_size})")
        computed = hashlib.sha256(b"\x00" + leaf).digest()
        if computed != leaf_hash:
            raise Divergence(
                f"{what}: entry {idx}: stored leaf hash {leaf_hash.hex()}, the leaf "
                f"hashes to {computed.hex()}"
            )
        if deep and rekor_v1 and seal is not None:
            try:
                verify_seal(seal, leaf, integrated_time, idx, signer.key, log_id_hex)
            except SealMismatch as exc:
                raise Divergence(f"{what}: {exc}") from None
            sealed += 1
        rng.append(leaf_hash, visit)
        expected += 1
        if next_checkpoint is not None and next_checkpoint[0] == expected:
            check_checkpoints(expected, rng.root())
        if len(full) >= 256:
            compare_tiles(full)
            full.clear()
        if expected % 65536 == 0:
            progress(expected, head_size)
    if expected != head_size:
        raise Divergence(f"{what}: the head says size {head_size}, {expected} entries are stored")
    if rng.root() != head_root:
        raise Divergence(
            f"{what}: the entries hash to {rng.root().hex()}, the head says {head_root.hex()}"
        )
    check_checkpoints(expected, rng.root())
    if next_checkpoint is not None:
        raise Divergence(f"{what}: checkpoint at size {next_checkpoint[0]} lies beyond the head")
    compare_tiles(full + [(k, bytes(v)) for k, v in edge.items() if v])
    stored_tiles = conn.execute(
        select(func.count()).select_from(tiles).where(tiles.c.tree_id == tree_id)
    ).scalar_one()
    if stored_tiles != checked_tiles:
        raise Divergence(f"{what}: {stored_tiles} tiles are stored, the tree has {checked_tiles}")
    progress(expected, head_size)
    return TreeReport(
        tree_id,
        origin,
        expected,
        seen_checkpoints,
        checked_tiles,
        sealed,
        time.perf_counter() - started,
    )


async def fsck(
    db: Database,
    data_dir: Path,
    *,
    deep: bool = False,
    progress: Callable[[int, int, int], None] = lambda tree, done, total: None,
) -> list[TreeReport]:
    """Check every tree in ``db`` against the log keys of ``data_dir``; raise ``Divergence``."""
    keys = _keys(data_dir)

    def run(conn: Connection) -> list[TreeReport]:
        heads: Mapping[int, tuple[str, int, bytes, str]] = {
            int(t): (str(o), int(s), bytes(r), str(c))
            for t, o, s, r, c in conn.execute(
                select(
                    tree_heads.c.tree_id,
                    tree_heads.c.origin,
                    tree_heads.c.size,
                    tree_heads.c.root,
                    tree_heads.c.checkpoint,
                ).order_by(tree_heads.c.tree_id)
            )
        }
        reports = []
        for tree_id, (origin, size, root, note) in heads.items():

            def tree_progress(done: int, total: int, tree: int = tree_id) -> None:
                progress(tree, done, total)

            head = (size, root, note)
            reports.append(_check_tree(conn, tree_id, origin, head, keys, deep, tree_progress))
        for table in (entries, tiles, checkpoints):
            orphans = conn.execute(
                select(table.c.tree_id).where(table.c.tree_id.not_in(list(heads))).limit(1)
            ).scalar()
            if orphans is not None:
                raise Divergence(f"{table.name} rows of tree {orphans}, which has no head")
        return reports

    return await db.read(run)
