"""``sigstead fsck --url``: the auditor's replay, over HTTP from the public read APIs only.

Given the deployment's ``trusted_root.json`` (the keys the auditor already trusts), every log it
lists is replayed from entry 0 to its signed head, with nothing taken on the operator's word:

- Rekor v1: the signed tree head, then every entry (``entries/retrieve`` by index, ten at a
  time as Rekor allows): its index, its UUID (the leaf hash), its SET (which binds the body, the
  integrated time and the index to the log key); the rebuilt root must be the head's.
- Rekor v2: the signed checkpoint, every entry bundle (``tile/entries``) and every Merkle tile
  (``tile/<L>/<N>``) the tree has, each tile rebuilt from the bundles and compared byte for
  byte; the rebuilt root must be the checkpoint's.
- The CT log: the STH and its signature, then every ``get-entries`` leaf; the rebuilt root must
  be the STH's.

What this cannot see and the operator's ``fsck --data-dir`` does: the search index, stored
checkpoints other than the current one, and rows the APIs never serve.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from clients.rekor import SignedCheckpoint, VerificationFailed
from services.audit.fsck import Divergence, TreeReport
from services.errors import OperatorError
from services.log import merkle
from services.log.checkpoint import LogPublicKey
from services.log.ct.rfc6962 import tree_head_input
from services.log.rekor.seal import SealMismatch, verify_seal
from services.log.tiles import HASH_SIZE, TILE_HASHES

__all__ = [
    "Reader",
    "RemoteLog",
    "fsck_remote",
    "rekor_v1_entries",
    "rekor_v1_head",
    "rekor_v2_entries",
    "rekor_v2_head",
    "remote_logs",
]

_CONCURRENCY = 8
_RETRIEVE = 10  # Rekor's limit on the items of one entries/retrieve query
_CT_BATCH = 1000  # sigstead's get-entries limit (RFC 6962 lets a log serve fewer)


@dataclass(frozen=True, slots=True)
class RemoteLog:
    """One log of a trusted root: its kind, where to read it, and the key it must be signed by."""

    kind: str  # "rekor-v1", "rekor-v2" or "ct"
    url: str
    key: LogPublicKey
    log_id: bytes
    # The log's own host (``Host`` header) when ``url`` reaches it at another address: logs
    # sharing a server are told apart by name (a retired Rekor v2 log keeps its host).
    host: str | None = None


def _rebase(url: str, base: str | None) -> str:
    if base is None:
        return url.rstrip("/")
    parts, to = urlsplit(url), urlsplit(base)
    return urlunsplit((to.scheme, to.netloc, parts.path, "", "")).rstrip("/")


def remote_logs(trusted_root: Mapping[str, Any], base_url: str | None = None) -> list[RemoteLog]:
    """The logs a ``trusted_root.json`` lists; ``base_url`` replaces their scheme and host (an
    auditor reaching the deployment by another address). Raise ``OperatorError``."""
    out = []
    for field, kinds in (("tlogs", ("rekor-v1", "rekor-v2")), ("ctlogs", ("ct", "ct"))):
        for log in trusted_root.get(field, []):
            try:
                der = base64.b64decode(log["publicKey"]["rawBytes"], validate=True)
                key = serialization.load_der_public_key(der)
                log_id = base64.b64decode(log["logId"]["keyId"], validate=True)
                url = _rebase(str(log["baseUrl"]), base_url)
                host = None if base_url is None else urlsplit(str(log["baseUrl"])).netloc
            except (KeyError, TypeError, ValueError) as exc:
                raise OperatorError(f"trusted root: a {field} entry is malformed ({exc})") from None
            kind = kinds["checkpointKeyId" in log]
            # Ed25519 only on Rekor v2: v1's SETs and CT's SCTs are ECDSA for every client.
            if not isinstance(key, ec.EllipticCurvePublicKey) and not (
                kind == "rekor-v2" and isinstance(key, ed25519.Ed25519PublicKey)
            ):
                raise OperatorError(f"trusted root: {url}: not a key type this log can have")
            out.append(RemoteLog(kind, url, key, log_id, host))
    if not out:
        raise OperatorError("the trusted root lists no logs")
    return out


class Reader:
    def __init__(self, session: aiohttp.ClientSession, log: RemoteLog) -> None:
        self.session = session
        self.log = log
        self.what = f"{log.kind} log at {log.url}"

    async def get(self, path: str, *, body: Any = None) -> bytes:
        url = self.log.url + path
        method = "GET" if body is None else "POST"
        try:
            headers = None if self.log.host is None else {"Host": self.log.host}
            async with self.session.request(method, url, json=body, headers=headers) as reply:
                data = await reply.read()
                if reply.status != 200:
                    text = data[:200].decode("utf-8", "replace")
                    raise Divergence(f"{self.what}: {method} {path}: {reply.status} {text}")
                return data
        except aiohttp.ClientError as exc:
            raise OperatorError(f"{self.what}: {method} {path}: {exc}") from None

    async def json(self, path: str, *, body: Any = None) -> Any:
        try:
            return json.loads(await self.get(path, body=body))
        except ValueError:
            raise Divergence(f"{self.what}: {path}: not JSON") from None


async def _ordered(jobs: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run coroutine factories at most ``_CONCURRENCY`` at a time; results in order."""
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(one(j) for j in jobs)))


def _b64(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise Divergence(f"{what}: not base64") from None


async def rekor_v1_head(reader: Reader) -> SignedCheckpoint:
    """The Rekor v1 signed tree head, its signature verified; raise ``Divergence``."""
    info = await reader.json("/api/v1/log")
    try:
        return SignedCheckpoint.verify(str(info["signedTreeHead"]), reader.log.key)
    except (KeyError, TypeError, VerificationFailed) as exc:
        raise Divergence(f"{reader.what}: the signed tree head: {exc}") from None


async def rekor_v1_entries(
    reader: Reader, start: int, end: int
) -> AsyncIterator[tuple[int, bytes, int]]:
    """(index, body, integrated time) of entries ``[start, end)``, each checked against what the
    log signed for it (index, log ID, UUID = leaf hash, SET); raise ``Divergence``. The caller
    proves inclusion by hashing the bodies into the tree."""
    log_id_hex = reader.log.log_id.hex()
    for window in range(start, end, _RETRIEVE * _CONCURRENCY):
        batches = [
            list(range(first, min(first + _RETRIEVE, end)))
            for first in range(window, min(window + _RETRIEVE * _CONCURRENCY, end), _RETRIEVE)
        ]
        retrieve = functools.partial(reader.json, "/api/v1/log/entries/retrieve")
        jobs = [functools.partial(retrieve, body={"logIndexes": b}) for b in batches]
        replies = await _ordered(jobs)
        for wanted, reply in zip(batches, replies, strict=True):
            served = [item for hit in reply for item in hit.items()] if reply else []
            if len(served) != len(wanted):
                raise Divergence(
                    f"{reader.what}: asked for entries {wanted[0]}..{wanted[-1]}, got {len(served)}"
                )
            for index, (uuid, entry) in zip(wanted, served, strict=True):
                where = f"{reader.what}: entry {index}"
                if entry.get("logIndex") != index:
                    raise Divergence(f"{where}: served as index {entry.get('logIndex')!r}")
                if entry.get("logID") != log_id_hex:
                    raise Divergence(f"{where}: served with log ID {entry.get('logID')!r}")
                leaf = _b64(entry.get("body"), where)
                if not str(uuid).endswith(merkle.hash_leaf(leaf).hex()):
                    raise Divergence(f"{where}: UUID {uuid} is not its body's leaf hash")
                seal = _b64(entry.get("verification", {}).get("signedEntryTimestamp"), where)
                try:
                    integrated = int(entry["integratedTime"])
                    verify_seal(seal, leaf, integrated, index, reader.log.key, log_id_hex)
                except (KeyError, TypeError, ValueError, SealMismatch) as exc:
                    raise Divergence(f"{where}: its SET does not verify ({exc})") from None
                yield index, leaf, integrated


async def _rekor_v1(reader: Reader, progress: Callable[[int, int], None]) -> TreeReport:
    started = time.perf_counter()
    head = await rekor_v1_head(reader)
    rng = merkle.CompactRange()
    async for _, leaf, _ in rekor_v1_entries(reader, 0, head.size):
        rng.append(merkle.hash_leaf(leaf))
        if rng.size % 1000 == 0:
            progress(rng.size, head.size)
    progress(rng.size, head.size)
    if rng.root() != head.root:
        raise Divergence(
            f"{reader.what}: the served entries hash to {rng.root().hex()}, the signed head "
            f"of size {head.size} says {head.root.hex()}"
        )
    return TreeReport(0, head.origin, head.size, 1, 0, head.size, 0, time.perf_counter() - started)


async def rekor_v2_head(reader: Reader) -> SignedCheckpoint:
    """The Rekor v2 checkpoint, its signature verified; raise ``Divergence``."""
    note = (await reader.get("/api/v2/checkpoint")).decode("utf-8", "replace")
    try:
        return SignedCheckpoint.verify(note, reader.log.key)
    except VerificationFailed as exc:
        raise Divergence(f"{reader.what}: the checkpoint: {exc}") from None


async def rekor_v2_entries(
    reader: Reader, start: int, end: int
) -> AsyncIterator[tuple[int, bytes, int]]:
    """(index, leaf, 0) of entries ``[start, end)`` from the entry bundles (v2 has no
    integrated time); the caller proves inclusion by hashing them into the tree."""
    async for bundle, leaves in _entry_bundles(reader, start // TILE_HASHES, end):
        for offset, leaf in enumerate(leaves):
            index = bundle * TILE_HASHES + offset
            if index >= start:
                yield index, leaf, 0


async def _entry_bundles(
    reader: Reader, first: int, end: int
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """(bundle index, its leaves) for the entry bundles from ``first`` up to the tree of size
    ``end``, ``_CONCURRENCY`` requests at a time; each must hold exactly the entries a tree of
    that size gives it, else ``Divergence``."""
    last = (end + TILE_HASHES - 1) // TILE_HASHES
    for window in range(first, last, _CONCURRENCY):
        indexes = range(window, min(window + _CONCURRENCY, last))
        widths = [min(TILE_HASHES, end - i * TILE_HASHES) for i in indexes]
        served = await _ordered(
            [
                functools.partial(reader.get, _tile_path("entries", i, w))
                for i, w in zip(indexes, widths, strict=True)
            ]
        )
        for bundle, width, data in zip(indexes, widths, served, strict=True):
            leaves = _bundle(data, f"{reader.what}: entry bundle {bundle}")
            if len(leaves) != width:
                raise Divergence(
                    f"{reader.what}: entry bundle {bundle} holds {len(leaves)} entries, "
                    f"a tree of size {end} gives it {width}"
                )
            yield bundle, leaves


def _tile_path(level: int | str, index: int, width: int) -> str:
    digits = f"{index:03d}"
    groups = [digits[max(0, i - 3) : i] for i in range(len(digits), 0, -3)][::-1]
    groups = [g.rjust(3, "0") for g in groups]
    path = "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])
    suffix = "" if width == TILE_HASHES else f".p/{width}"
    return f"/api/v2/tile/{level}/{path}{suffix}"


def _bundle(data: bytes, what: str) -> list[bytes]:
    entries, at = [], 0
    while at < len(data):
        if at + 2 > len(data):
            raise Divergence(f"{what}: truncated")
        n = int.from_bytes(data[at : at + 2], "big")
        entries.append(data[at + 2 : at + 2 + n])
        at += 2 + n
        if at > len(data):
            raise Divergence(f"{what}: truncated")
    return entries


async def _rekor_v2(reader: Reader, progress: Callable[[int, int], None]) -> TreeReport:
    started = time.perf_counter()
    head = await rekor_v2_head(reader)
    rng = merkle.CompactRange()
    checked = 0
    # upper[L]: the level-L hashes of that level's current, unfinished tile.
    upper: list[list[bytes]] = [[]]

    async def compare(level: int, index: int, hashes: list[bytes]) -> None:
        nonlocal checked
        path = _tile_path(level, index, len(hashes))
        served = await reader.get(path)
        want = b"".join(hashes)
        if served != want:
            slot = next(
                (
                    i // HASH_SIZE
                    for i in range(0, len(want), HASH_SIZE)
                    if served[i : i + HASH_SIZE] != want[i : i + HASH_SIZE]
                ),
                len(want) // HASH_SIZE,
            )
            raise Divergence(
                f"{reader.what}: tile {path} differs from the entries' hashes at slot {slot}"
            )
        checked += 1

    async def push(node: bytes) -> None:
        level = 1
        while True:
            if level == len(upper):
                upper.append([])
            upper[level].append(node)
            if len(upper[level]) < TILE_HASHES:
                return
            await compare(level, (rng.size >> (8 * (level + 1))) - 1, upper[level])
            node = merkle.root(upper[level])
            upper[level] = []
            level += 1

    async for index, leaves in _entry_bundles(reader, 0, head.size):
        hashes = [merkle.hash_leaf(leaf) for leaf in leaves]
        await compare(0, index, hashes)
        if len(hashes) == TILE_HASHES:
            node = merkle.root(hashes)
            rng.append_perfect(node, 8)
            await push(node)
        else:
            rng.extend(hashes)
        progress(rng.size, head.size)
    for level in range(1, len(upper)):
        if upper[level]:
            await compare(level, head.size >> (8 * (level + 1)), upper[level])
    if rng.root() != head.root:
        raise Divergence(
            f"{reader.what}: the served entries hash to {rng.root().hex()}, the checkpoint "
            f"of size {head.size} says {head.root.hex()}"
        )
    return TreeReport(0, head.origin, head.size, 1, checked, 0, 0, time.perf_counter() - started)


async def _ct(reader: Reader, progress: Callable[[int, int], None]) -> TreeReport:
    started = time.perf_counter()
    sth = await reader.json("/v1/get-sth")
    try:
        size, timestamp = int(sth["tree_size"]), int(sth["timestamp"])
        root = _b64(sth["sha256_root_hash"], f"{reader.what}: STH root")
        signed = _b64(sth["tree_head_signature"], f"{reader.what}: STH signature")
    except (KeyError, TypeError, ValueError):
        raise Divergence(f"{reader.what}: malformed STH") from None
    # DigitallySigned: hash(1) signature(1) length(2) signature.
    if signed[:2] != b"\x04\x03" or int.from_bytes(signed[2:4], "big") != len(signed) - 4:
        raise Divergence(f"{reader.what}: the STH signature is not ECDSA-SHA256 DigitallySigned")
    key = reader.log.key
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise Divergence(f"{reader.what}: a CT log key is ECDSA")  # remote_logs ensures it
    try:
        key.verify(signed[4:], tree_head_input(timestamp, size, root), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Divergence(f"{reader.what}: the STH signature does not verify") from None
    rng = merkle.CompactRange()
    while rng.size < size:
        start = rng.size
        end = min(size, start + _CT_BATCH) - 1
        reply = await reader.json(f"/v1/get-entries?start={start}&end={end}")
        served = reply.get("entries") if isinstance(reply, dict) else None
        if not served:
            raise Divergence(f"{reader.what}: get-entries from {start} returned nothing")
        for offset, entry in enumerate(served[: end - start + 1]):
            leaf = _b64(entry.get("leaf_input"), f"{reader.what}: entry {start + offset}")
            rng.append(merkle.hash_leaf(leaf))
        progress(rng.size, size)
    if rng.root() != root:
        raise Divergence(
            f"{reader.what}: the served entries hash to {rng.root().hex()}, the STH of size "
            f"{size} says {root.hex()}"
        )
    return TreeReport(0, reader.log.url, size, 1, 0, 0, 0, time.perf_counter() - started)


async def fsck_remote(
    logs: Sequence[RemoteLog],
    *,
    progress: Callable[[int, int, int], None] = lambda log, done, total: None,
    read_timeout: float = 60.0,
) -> list[TreeReport]:
    """Replay every log in ``logs`` over HTTP; raise ``Divergence`` at the first difference.
    ``progress`` gets the log's position in ``logs``, entries checked and the log's size."""
    replays = {"rekor-v1": _rekor_v1, "rekor-v2": _rekor_v2, "ct": _ct}
    reports = []
    client_timeout = aiohttp.ClientTimeout(total=read_timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        for position, log in enumerate(logs):

            def log_progress(done: int, total: int, at: int = position) -> None:
                progress(at, done, total)

            reports.append(await replays[log.kind](Reader(session, log), log_progress))
    return reports
