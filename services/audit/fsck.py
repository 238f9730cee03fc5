"""``sigstead fsck``: replay every log in a database and prove it is what its checkpoints say.

For each tree (Rekor v1, Rekor v2, the CT log), streaming in index order with bounded memory:

- entries: indices contiguous from 0, each stored leaf hash = SHA-256(0x00 || leaf);
- the tree: rebuilt leaf by leaf in a compact range; every stored tile (the engine's only copy
  of the tree's nodes) must equal the rebuilt one, and no tile may exist beyond the tree;
- checkpoints: every stored checkpoint's signature verifies under one of the data directory's
  log keys, its origin is the tree's, and its root is the rebuilt tree's root at its size (so
  each is consistent with every later one); the tree head is the newest of them;
- the search index: every entry's keys replayed from its stored leaf (``services.audit.index``)
  and compared with its ``search_keys`` rows, nothing missing, nothing it cannot justify, no row
  beyond the head;
- with ``deep``: each Rekor v1 entry's stored SET (``entries.seal``) verifies for its stored
  ``integrated_time``, index and body; each hashedrekord entry (v1 and v2) is re-admitted as a
  new request: its signature verifies and its canonical leaf comes out byte for byte the same
  (DSSE-kind leaves lack the envelope their signatures cover).

The first divergence stops the replay with ``Divergence`` naming the tree, the index or size, and
what was expected against what is stored. The replay reads one snapshot (a read transaction), so
it can run beside a live server. Speed: blocks of leaves are hashed in one call and tiles folded
from one bytes string (``merkle.check_leaves``, ``merkle.subtree_root``: C when built); the hash
replay alone on SQLite steps its rows in C (``_replay.c``), the rest read through the raw
driver (``bench/bench_fsck.py`` prints each beside the hashlib floor). The auditor's replay over
HTTP is ``services.audit.remote``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection

from services.audit.index import (
    Expected,
    NotAdmissible,
    UnreadableEntry,
    ct_keys,
    readmit_v1,
    readmit_v2,
    rekor_v1_keys,
    rekor_v2_keys,
)
from services.db import Database
from services.errors import OperatorError
from services.keys import load_private_key, load_public_ec_key, load_public_log_key
from services.log import merkle
from services.log.checkpoint import LogPublicKey, key_id, note_key_id, verify_note_signature
from services.log.rekor.seal import SealMismatch, verify_seal
from services.log.schema import checkpoints, entries, search_keys, tiles, tree_heads
from services.log.tiles import HASH_SIZE, TILE_HASHES


class _LeafReader(Protocol):
    def check(self, tree_id: int, start: int, end: int, /) -> tuple[int, bytes, int]: ...
    def close(self) -> None: ...


_native_reader: Callable[[str], _LeafReader] | None
try:
    # The hash replay on SQLite stepped in C (_replay.c), built at install when a compiler and
    # SQLite's and OpenSSL's headers are there; without it the same rows come through sqlite3.
    from services.audit._replay import LeafReader

    _native_reader = LeafReader
except ImportError:  # pragma: no cover - fsck reads through the sqlite3 module instead
    _native_reader = None

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
    indexed: int
    seconds: float
    verified: int = 0  # entries re-admitted (signature and canonical form), with deep


@dataclass(frozen=True, slots=True)
class _Key:
    name: str
    key: LogPublicKey
    log_id: bytes  # SHA-256 of the SPKI: Rekor v1's log ID in its SETs


def _keys(data_dir: Path) -> list[_Key]:
    out = []
    for name in ("rekor.pub", "rekor-v2.pub", "ctlog.pub"):
        path = data_dir / "keys" / name
        private = path.with_suffix(".pem")
        if path.is_file() or private.is_file():
            # The public half (written by `keys init` and the trust service), else the key's.
            # Ed25519 is a Rekor v2 key type only.
            key: LogPublicKey
            v2 = name == "rekor-v2.pub"
            if path.is_file():
                key = load_public_log_key(path) if v2 else load_public_ec_key(path)
            else:
                pair = load_private_key(private)
                if not isinstance(pair, ec.EllipticCurvePrivateKey) and not (
                    v2 and isinstance(pair, ed25519.Ed25519PrivateKey)
                ):
                    raise OperatorError(f"{private}: not a key type this log can have")
                key = pair.public_key()
            out.append(_Key(name, key, key_id(key)))
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
            # An Ed25519 key's hint is bound to the name in the line; ECDSA's is not.
            if raw[:4] != note_key_id(key.key, parts[1])[:4]:
                continue
            try:
                verify_note_signature(key.key, raw[4:], text.encode())
            except InvalidSignature:
                raise Divergence(f"{what}: signature by {key.name} does not verify") from None
            return key, origin, size, root
    raise Divergence(f"{what}: no signature by any of the data directory's log keys")


_BLOCK = 16 * TILE_HASHES  # entries per query: whole level-0 tiles, ~2 MB of 512-byte leaves

# One SQL text for both drivers: sqlite3 and SQLAlchemy's text() both take ":name" parameters.
# No idx column: the block's row count proves the rows are entries start..end-1 in order (idx is
# unique per tree), and every column read costs the replay ~0.1 us a row.
_ENTRIES_SQL = (
    "SELECT leaf_hash, leaf{more} FROM entries"
    " WHERE tree_id = :t AND idx >= :a AND idx < :b ORDER BY idx"
)
_INDEXES_SQL = "SELECT idx FROM entries WHERE tree_id = :t AND idx >= :a AND idx < :b ORDER BY idx"
_KEYS_SQL = "SELECT idx, key FROM search_keys WHERE tree_id = :t AND idx >= :a AND idx < :b"
_KEYS_BEYOND_SQL = (
    "SELECT idx, key FROM search_keys WHERE tree_id = :t AND (idx >= :n OR idx < 0) LIMIT 1"
)
_BEYOND_SQL = (
    "SELECT idx FROM entries WHERE tree_id = :t AND (idx >= :n OR idx < 0) ORDER BY idx LIMIT 1"
)
_NEXT_SQL = "SELECT min(idx) FROM entries WHERE tree_id = :t AND idx > :a"
_LEAF_HASH_SQL = "SELECT leaf_hash FROM entries WHERE tree_id = :t AND idx = :i"
_TILES_SQL = (
    "SELECT idx, data FROM tiles WHERE tree_id = :t AND level = :l AND idx >= :a AND idx < :b"
)
_CHECKPOINTS_SQL = (
    "SELECT size, root, checkpoint FROM checkpoints WHERE tree_id = :t AND size > :a"
    " ORDER BY size LIMIT 5000"
)

_Query = Callable[[str, dict[str, int]], list[tuple[Any, ...]]]


def _query(conn: Connection) -> _Query:
    """A row fetcher for the replay's few statements.

    On SQLite the replay goes around SQLAlchemy's result layer to the sqlite3 cursor: building
    Row objects costs more than hashing the leaves they carry (about 5x the whole replay).
    """
    if conn.dialect.name == "sqlite":
        raw = conn.connection.driver_connection
        assert raw is not None
        # Reading the file through a memory map rather than read() calls: ~10 % of the replay.
        raw.execute("PRAGMA mmap_size = 1073741824")

        def run_sqlite(sql: str, params: dict[str, int]) -> list[tuple[Any, ...]]:
            return list(raw.execute(sql, params).fetchall())

        return run_sqlite

    def run(sql: str, params: dict[str, int]) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in conn.execute(text(sql), params)]

    return run


def _checkpoint_rows(query: _Query, tree_id: int) -> Iterator[tuple[int, bytes, str]]:
    last = -1
    while True:
        rows = query(_CHECKPOINTS_SQL, {"t": tree_id, "a": last})
        if not rows:
            return
        for size, root, note in rows:
            yield int(size), bytes(root), str(note)
        last = int(rows[-1][0])


def _first_difference(have: bytes, want: bytes) -> int:
    return next(
        i // HASH_SIZE
        for i in range(0, max(len(have), len(want)), HASH_SIZE)
        if have[i : i + HASH_SIZE] != want[i : i + HASH_SIZE]
    )


def _check_tree(
    conn: Connection,
    tree_id: int,
    origin: str,
    head: tuple[int, bytes, str],
    keys: list[_Key],
    deep: bool,
    index: bool,
    progress: Callable[[int, int], None],
    reader: _LeafReader | None,
) -> TreeReport:
    started = time.perf_counter()
    query = _query(conn)
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

    stored_checkpoints = _checkpoint_rows(query, tree_id)
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

    checked_tiles = 0

    def compare_tile(level: int, index: int, data: bytes, have: bytes | None) -> None:
        nonlocal checked_tiles
        if have is None:
            raise Divergence(f"{what}: tile {level}/{index} is missing")
        if have != data:
            raise Divergence(
                f"{what}: tile {level}/{index} differs from the entries' hashes at slot "
                f"{_first_difference(have, data)} (stored {len(have) // HASH_SIZE} hashes, "
                f"rebuilt {len(data) // HASH_SIZE})"
            )
        checked_tiles += 1

    def stored_tile(level: int, index: int) -> bytes | None:
        rows = query(_TILES_SQL, {"t": tree_id, "l": level, "a": index, "b": index + 1})
        return bytes(rows[0][1]) if rows else None

    # upper[L] (L >= 1): the height-8L nodes of level L's current, not yet full tile;
    # full_tiles[L]: how many full tiles level L has had, i.e. that tile's index.
    upper: list[list[bytes]] = [[]]
    full_tiles: list[int] = [0]

    def push(level: int, node: bytes) -> None:
        while True:
            if level == len(upper):
                upper.append([])
                full_tiles.append(0)
            nodes = upper[level]
            nodes.append(node)
            if len(nodes) < TILE_HASHES:
                return
            at = full_tiles[level]
            compare_tile(level, at, b"".join(nodes), stored_tile(level, at))
            node = merkle.subtree_root(b"".join(nodes))
            nodes.clear()
            full_tiles[level] = at + 1
            level += 1

    rng = merkle.CompactRange()
    check_checkpoints(0, rng.root())
    sealed = 0
    check_seals = deep and rekor_v1
    # Columns 2-4: what the deep and index checks read, only when they are asked for.
    more = ", integrated_time, seal" if check_seals else ""
    read_extra = index and signer.name == "ctlog.pub"
    more += ", extra" if read_extra else ""
    entries_sql = _ENTRIES_SQL.format(more=more)
    index_keys: Callable[[bytes, bytes | None], Expected] = {
        "rekor.pub": lambda leaf, extra: rekor_v1_keys(leaf),
        "rekor-v2.pub": lambda leaf, extra: rekor_v2_keys(leaf),
        "ctlog.pub": ct_keys,
    }[signer.name]
    indexed = 0
    verified = 0
    readmits = {"rekor.pub": readmit_v1, "rekor-v2.pub": readmit_v2}
    readmit = readmits.get(signer.name) if deep else None
    # The deep and index checks need every leaf in Python; the hash replay alone does not.
    if index or deep:
        reader = None
    for start in range(0, head_size, _BLOCK):
        end = min(start + _BLOCK, head_size)
        if reader is None:
            rows = query(entries_sql, {"t": tree_id, "a": start, "b": end})
            count = len(rows)
            # The block's leaf hashes as one bytes string, 32 per entry: the tiles are compared
            # and folded from slices of it, never from one Python object per hash.
            computed, i = merkle.check_leaves(rows)
        else:
            rows = []
            count, computed, i = reader.check(tree_id, start, end)
        # idx is unique per tree, so end - start rows in [start, end) are exactly those
        # entries, and row i is entry start + i.
        if count != end - start:
            present = [int(r[0]) for r in query(_INDEXES_SQL, {"t": tree_id, "a": start, "b": end})]
            missing = next(
                (start + i for i, idx in enumerate(present) if idx != start + i),
                start + len(present),
            )
            (following,) = query(_NEXT_SQL, {"t": tree_id, "a": missing})[0]
            after = "none after it" if following is None else f"next stored index {following}"
            raise Divergence(f"{what}: entry {missing} is missing ({after})")
        if i >= 0:
            found = query(_LEAF_HASH_SQL, {"t": tree_id, "i": start + i})
            stored = bytes(found[0][0]).hex() if found else "none"
            raise Divergence(
                f"{what}: entry {start + i}: stored leaf hash {stored}, the leaf "
                f"hashes to {computed[i * HASH_SIZE : (i + 1) * HASH_SIZE].hex()}"
            )
        if index:
            filed: dict[int, set[str]] = {}
            for idx, key in query(_KEYS_SQL, {"t": tree_id, "a": start, "b": end}):
                filed.setdefault(int(idx), set()).add(str(key))
            for idx, row in enumerate(rows, start):
                leaf, extra = row[1], row[-1] if read_extra else None
                try:
                    expected = index_keys(bytes(leaf), None if extra is None else bytes(extra))
                except UnreadableEntry as exc:
                    raise Divergence(
                        f"{what}: entry {idx} cannot be read to replay its index keys: {exc}"
                    ) from None
                absent, unjustified = expected.judge(filed.get(idx, set()))
                if absent:
                    raise Divergence(
                        f"{what}: entry {idx} is missing from the search index under "
                        f"{min(absent)!r}"
                    )
                if unjustified:
                    raise Divergence(
                        f"{what}: the search index files entry {idx} under "
                        f"{min(unjustified)!r}, which the entry does not hold"
                    )
                indexed += 1
        if readmit is not None:
            for idx, row in enumerate(rows, start):
                try:
                    verified += readmit(bytes(row[1]))
                except NotAdmissible as exc:
                    raise Divergence(f"{what}: entry {idx}: {exc}") from None
        if check_seals:
            for idx, row in enumerate(rows, start):
                leaf, integrated_time, seal = row[1:4]
                if seal is None:
                    continue
                try:
                    verify_seal(
                        bytes(seal),
                        bytes(leaf),
                        int(integrated_time),
                        idx,
                        signer.key,
                        log_id_hex,
                    )
                except SealMismatch as exc:
                    raise Divergence(f"{what}: {exc}") from None
                sealed += 1
        del rows
        level0 = {
            int(i): bytes(d)
            for i, d in query(
                _TILES_SQL,
                {"t": tree_id, "l": 0, "a": start // TILE_HASHES, "b": end // TILE_HASHES + 1},
            )
        }
        tile_bytes = TILE_HASHES * HASH_SIZE
        for offset in range(0, len(computed), tile_bytes):
            chunk = computed[offset : offset + tile_bytes]
            chunk_end = start + (offset + len(chunk)) // HASH_SIZE
            full = len(chunk) == tile_bytes
            tile_index = start // TILE_HASHES + offset // tile_bytes
            compare_tile(0, tile_index, chunk, level0.get(tile_index))
            if full and (next_checkpoint is None or next_checkpoint[0] >= chunk_end):
                node = merkle.subtree_root(chunk)
                rng.append_perfect(node, 8)
            else:
                # A checkpoint inside the tile (or the tree's right edge): leaf by leaf, with
                # the root at every checkpointed size.
                for at in range(0, len(chunk), HASH_SIZE):
                    rng.append(chunk[at : at + HASH_SIZE])
                    if next_checkpoint is not None and next_checkpoint[0] == rng.size:
                        check_checkpoints(rng.size, rng.root())
                node = merkle.subtree_root(chunk) if full else b""
            if next_checkpoint is not None and next_checkpoint[0] == chunk_end:
                check_checkpoints(chunk_end, rng.root())
            if full:
                push(1, node)
        progress(end, head_size)
    beyond = query(_BEYOND_SQL, {"t": tree_id, "n": head_size})
    if beyond:
        raise Divergence(f"{what}: entry {beyond[0][0]} lies beyond the head (size {head_size})")
    stray = query(_KEYS_BEYOND_SQL, {"t": tree_id, "n": head_size}) if index else []
    if stray:
        raise Divergence(
            f"{what}: the search index files entry {stray[0][0]} under {stray[0][1]!r}, "
            f"beyond the head (size {head_size})"
        )
    if rng.root() != head_root:
        raise Divergence(
            f"{what}: the entries hash to {rng.root().hex()}, the head says {head_root.hex()}"
        )
    check_checkpoints(head_size, rng.root())
    if next_checkpoint is not None:
        raise Divergence(f"{what}: checkpoint at size {next_checkpoint[0]} lies beyond the head")
    for level in range(1, len(upper)):
        if upper[level]:
            at = full_tiles[level]
            compare_tile(level, at, b"".join(upper[level]), stored_tile(level, at))
    stored_tiles = conn.execute(
        select(func.count()).select_from(tiles).where(tiles.c.tree_id == tree_id)
    ).scalar_one()
    if stored_tiles != checked_tiles:
        raise Divergence(f"{what}: {stored_tiles} tiles are stored, the tree has {checked_tiles}")
    progress(head_size, head_size)
    return TreeReport(
        tree_id,
        origin,
        head_size,
        seen_checkpoints,
        checked_tiles,
        sealed,
        indexed,
        time.perf_counter() - started,
        verified,
    )


async def fsck(
    db: Database,
    data_dir: Path,
    *,
    deep: bool = False,
    index: bool = True,
    progress: Callable[[int, int, int], None] = lambda tree, done, total: None,
) -> list[TreeReport]:
    """Check every tree in ``db`` against the log keys of ``data_dir``; raise ``Divergence``."""
    keys = _keys(data_dir)

    def run(conn: Connection) -> list[TreeReport]:
        # One snapshot for the whole replay, so a log that keeps sequencing meanwhile is checked
        # as of one moment (heads and rows agree). SQLite (WAL): a read transaction, which also
        # holds off WAL checkpoints until it ends; PostgreSQL: REPEATABLE READ.
        if conn.dialect.name != "sqlite":
            conn.execution_options(isolation_level="REPEATABLE READ")
            return check(conn, None)
        raw = conn.connection.driver_connection
        assert raw is not None
        readers: list[_LeafReader] = []
        raw.execute("BEGIN")
        try:
            return check(conn, readers)
        finally:
            raw.execute("ROLLBACK")
            # Only once this snapshot has ended: see _replay.c on a second SQLite library.
            for reader in readers:
                reader.close()

    def check(conn: Connection, readers: list[_LeafReader] | None) -> list[TreeReport]:
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
        # The C reader, when there is one and the replay is of hashes alone, opens its own
        # snapshot now that this one is taken: a snapshot of its own older than the heads just
        # read could lack entries below them.
        reader = None
        if readers is not None and _native_reader is not None and not (index or deep):
            main = [
                row[2] for row in conn.exec_driver_sql("PRAGMA database_list") if row[1] == "main"
            ]
            if main and main[0]:
                reader = _native_reader(main[0])
                readers.append(reader)
        reports = []
        for tree_id, (origin, size, root, note) in heads.items():

            def tree_progress(done: int, total: int, tree: int = tree_id) -> None:
                progress(tree, done, total)

            head = (size, root, note)
            reports.append(
                _check_tree(conn, tree_id, origin, head, keys, deep, index, tree_progress, reader)
            )
        for table in (entries, tiles, checkpoints, search_keys):
            orphans = conn.execute(
                select(table.c.tree_id).where(table.c.tree_id.not_in(list(heads))).limit(1)
            ).scalar()
            if orphans is not None:
                raise Divergence(f"{table.name} rows of tree {orphans}, which has no head")
        return reports

    return await db.read(run)
