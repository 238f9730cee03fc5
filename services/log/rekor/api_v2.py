"""The Rekor v2 HTTP API (rekor-tiles, rekor.md §6) over the Merkle log engine.

Writes: ``POST /api/v2/log/entries`` answers 201 with a ``TransparencyLogEntry`` as soon as the
entry's batch is committed, with the inclusion proof against the checkpoint of that commit (no
publication wait). Errors are grpc-gateway's ``{code, message, details}`` with rekor-tiles'
statuses: 400 InvalidArgument, 409 AlreadyExists with ``X-Log-Index``, 503 Unavailable, 405 (plain
text) when the log is frozen.

Reads: C2SP tlog-tiles under ``/api/v2/``, served by the log itself from the tiles the engine
keeps (no second copy, no bucket): ``checkpoint``, ``tile/<L>/<N>[.p/<W>]`` and
``tile/entries/<N>[.p/<W>]``. A tile's content for a given width never changes, so tiles are
immutable for caches; the checkpoint is not cached. Anything beyond the tree is a 404.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

from aiohttp import web

from services.handoff import Handoff
from services.limits import parse_json_async
from services.log.errors import (
    DuplicateEntry,
    EntryRefused,
    LogError,
    LogFrozen,
    Pushback,
    SequencerStopped,
)
from services.log.proofs import ProofBuilder
from services.log.rekor.api import keys_for_query
from services.log.rekor.errors import RekorError
from services.log.rekor.v2 import InvalidRequest, canonicalize_request
from services.log.sequencer import Receipt, TreeHead
from services.log.sqlstore import SQLLogStore
from services.log.tiles import TILE_HASHES

__all__ = ["REKOR_V2_LOG", "REKOR_V2_RETIRED", "RekorV2Log", "RetiredTree", "add_v2_routes"]

_logger = logging.getLogger(__name__)

FROZEN_MESSAGE = "This log has been frozen, please switch to the latest log.\n"
_IMMUTABLE = "public, max-age=31536000, immutable"
_HASH_SIZE = 32
_MAX_LEVEL = 63
# Entry indices are BIGINT columns: no tree grows past 2^63 leaves, and an index beyond that is
# a 404 before it reaches the database (which would refuse it as out of range).
_MAX_TREE_SIZE = 1 << 63
MAX_SEARCH_RESULTS = 1000
"""The most entries one search returns (each carries a proof); narrow the query for more."""


class V2Error(Exception):
    """A gRPC status as grpc-gateway renders it."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class V2Tree(Protocol):
    """What a Rekor v2 log needs of its tree: the engine's ``Sequencer``, or a ``RetiredTree``."""

    @property
    def tree_id(self) -> int: ...

    @property
    def frozen(self) -> bool: ...

    @property
    def proofs(self) -> ProofBuilder: ...

    @property
    def saturated(self) -> bool: ...

    async def latest_head(self) -> TreeHead: ...

    async def submit(self, leaf: bytes, search_keys: Collection[str]) -> Receipt: ...


class RetiredTree:
    """A frozen v2 log that an active one has replaced, kept readable: its final head (checked
    at start by the caller) and its proofs; it takes no entries and signs nothing."""

    frozen = True
    saturated = False

    def __init__(self, store: SQLLogStore, tree_id: int, head: TreeHead) -> None:
        self.tree_id = tree_id
        self.head = head
        self.proofs = ProofBuilder(store, tree_id)

    async def latest_head(self) -> TreeHead:
        return self.head

    async def submit(self, *args: Any, **kwargs: Any) -> Receipt:
        raise LogFrozen(f"tree {self.tree_id} is retired")


class RekorV2Log:
    """One Rekor v2 log: its tree on the engine and its checkpoint key ID (``logId``).

    Frozen when its tree's head is a final checkpoint (``Sequencer.freeze``): writes are then
    answered 405, as by rekor-tiles in read-only mode, and reads go on."""

    def __init__(
        self,
        *,
        sequencer: V2Tree,
        store: SQLLogStore,
        key_id: bytes,
        dsse: bool = True,
        executor: Executor | None = None,
    ) -> None:
        self.sequencer = sequencer
        self.store = store
        self.key_id = key_id
        self.dsse = dsse
        self.tree_id = sequencer.tree_id
        # Verification releases the GIL: off the loop, in groups (services/handoff.py).
        self._canonicalize = Handoff(functools.partial(canonicalize_request, dsse=dsse), executor)

    @property
    def frozen(self) -> bool:
        """Whether the log takes no more entries."""
        return self.sequencer.frozen

    async def create(self, document: Any) -> dict[str, Any]:
        """Verify and append a parsed ``CreateEntryRequest``; return the ``TransparencyLogEntry``
        once it is committed. Raises ``V2Error``."""
        try:
            entry = await self._canonicalize(document)
        except InvalidRequest as exc:
            raise V2Error(400, 3, exc.message) from None
        try:
            receipt = await self.sequencer.submit(entry.leaf, entry.search_keys)
        except DuplicateEntry as dup:
            raise _Duplicate(dup.index) from None
        except LogFrozen:
            raise _Frozen from None  # frozen by another replica since this request began
        except (Pushback, SequencerStopped):
            raise V2Error(503, 14, "reached max pushback; retry") from None
        except EntryRefused as exc:
            raise V2Error(400, 3, f"invalid entry: {exc}") from None
        except LogError as exc:
            _logger.error("v2 append failed: %s", exc)
            raise V2Error(500, 2, "failed to integrate entry") from None
        return self._entry(receipt.index, entry.leaf, receipt.head, receipt.proof, entry.kind)

    def _entry(
        self, index: int, leaf: bytes, head: TreeHead, proof: Sequence[bytes], kind: str
    ) -> dict[str, Any]:
        b64 = _b64
        return {
            "logIndex": str(index),
            "logId": {"keyId": b64(self.key_id)},
            "kindVersion": {"kind": kind, "version": "0.0.2"},
            # protojson with EmitUnpopulated, as rekor-tiles answers: v2 has no integrated time
            # and no promise; clients take the time from an RFC 3161 timestamp.
            "integratedTime": "0",
            "inclusionPromise": None,
            "inclusionProof": {
                "logIndex": str(index),
                "rootHash": b64(head.root),
                "treeSize": str(head.size),
                "hashes": [b64(h) for h in proof],
                "checkpoint": {"envelope": head.checkpoint},
            },
            "canonicalizedBody": b64(leaf),
        }

    async def search(self, keys: Sequence[set[str]], *, match_all: bool) -> list[dict[str, Any]]:
        """The entries the search index finds for ``keys`` (one key set per query field, as
        v1's ``index/retrieve``), each with its inclusion proof against the latest checkpoint.
        What rekor-tiles dropped: auditors search by digest, identity and key on v2 too."""
        head = await self.sequencer.latest_head()
        per_field = [
            {i for i in await self.store.search(self.tree_id, k, match_all=False) if i < head.size}
            for k in keys
        ]
        if not per_field:
            return []
        hits = sorted(set.intersection(*per_field) if match_all else set.union(*per_field))
        found = await self.store.read_entries(self.tree_id, hits[:MAX_SEARCH_RESULTS])
        out = []
        for index in sorted(found):
            proof = await self.sequencer.proofs.inclusion(index, head.size)
            leaf = found[index].leaf
            out.append(self._entry(index, leaf, head, proof, json.loads(leaf)["kind"]))
        return out

    async def checkpoint(self) -> str:
        head = await self.sequencer.latest_head()
        return head.checkpoint

    async def tile(self, level: int, index: int, width: int | None) -> bytes:
        """The hashes of tile ``level``/``index``: all 256, or the first ``width``.

        No tree head is read. ``SQLLogStore.commit_batch`` writes a batch's tiles in the same
        transaction as the head that covers them (its tree-head compare-and-swap comes first,
        and a lost one stores nothing), and a tile only ever holds perfect-subtree hashes
        (``services.log.tiles``): a stored tile with at least ``want`` hashes proves a committed
        tree of at least ``(256·index + want)·256^level`` leaves, by this replica or any other
        on the same database. A shorter one (the growing edge of its level) is a 404, as is
        anything the tree can never reach."""
        want = TILE_HASHES if width is None else width
        if (index * TILE_HASHES + want) * TILE_HASHES**level > _MAX_TREE_SIZE:
            raise web.HTTPNotFound(text="tile not found\n")
        data = (await self.store.read_tiles(self.tree_id, [(level, index)])).get((level, index))
        if data is None or len(data) < want * _HASH_SIZE:
            raise web.HTTPNotFound(text="tile not found\n")
        return data[: want * _HASH_SIZE]

    async def entry_bundle(self, index: int, width: int | None) -> bytes:
        """Entries ``[256·index, 256·index + width)`` as ``uint16 BE length || leaf`` each.

        No tree head is read: entries are committed in the same transaction as the head that
        covers them (see ``tile``), so all ``width`` of them being stored proves they are in
        the tree; any one missing is a 404."""
        want = TILE_HASHES if width is None else width
        first = index * TILE_HASHES
        if first + want > _MAX_TREE_SIZE:
            raise web.HTTPNotFound(text="entry bundle not found\n")
        leaves = await self.store.read_leaves(self.tree_id, range(first, first + want))
        if len(leaves) < want:
            raise web.HTTPNotFound(text="entry bundle not found\n")
        return b"".join(len(leaf).to_bytes(2, "big") + leaf for leaf in leaves)


class _Duplicate(V2Error):
    def __init__(self, index: int) -> None:
        super().__init__(
            409,
            6,
            f"an equivalent entry already exists in the transparency log with index {index}",
        )
        self.index = index


class _Frozen(V2Error):
    def __init__(self) -> None:
        super().__init__(405, 12, FROZEN_MESSAGE)


REKOR_V2_LOG = web.AppKey("rekor_v2_log", RekorV2Log)
REKOR_V2_RETIRED: web.AppKey[Mapping[str, RekorV2Log]] = web.AppKey("rekor_v2_retired")
"""Retired (frozen) v2 logs by host: each keeps the host of its URL, its origin."""


def _log(request: web.Request) -> RekorV2Log:
    """The v2 log a request is for: a retired one if the request names its host, else the
    active one (any other name, an IP address, a gateway's upstream name)."""
    retired = request.app.get(REKOR_V2_RETIRED, {})
    host = request.url.host
    if host is not None and host in retired:
        return retired[host]
    return request.app[REKOR_V2_LOG]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _error(exc: V2Error) -> web.Response:
    if isinstance(exc, _Frozen):
        return web.Response(status=405, text=FROZEN_MESSAGE, content_type="text/plain")
    response = web.json_response(
        {"code": exc.code, "message": exc.message, "details": []}, status=exc.status
    )
    if isinstance(exc, _Duplicate):
        response.headers["X-Log-Index"] = str(exc.index)
    return response


async def _create(request: web.Request) -> web.StreamResponse:
    log = _log(request)
    if log.frozen:
        return _error(_Frozen())
    try:
        try:
            document = await parse_json_async(await request.read())
        except ValueError as exc:
            raise V2Error(400, 3, f"invalid request body: {exc}") from None
        return web.json_response(await log.create(document), status=201)
    except V2Error as exc:
        return _error(exc)


_TILE_INDEX = re.compile(r"(?:x\d{3}/)*\d{3}", re.ASCII)
_WIDTH = re.compile(r"\.p/(\d{1,3})", re.ASCII)


def _tile_index(path: str) -> tuple[int, int | None]:
    """``x001/x234/067[.p/W]`` → (1234067, W or None); 404 for anything else."""
    width = None
    partial = path.find(".p/")
    if partial >= 0:
        match = _WIDTH.fullmatch(path[partial:])
        if not match:
            raise web.HTTPNotFound(text="malformed tile path\n")
        width = int(match.group(1))
        if not 0 < width < TILE_HASHES or match.group(1).startswith("0"):
            raise web.HTTPNotFound(text="malformed tile width\n")
        path = path[:partial]
    if not _TILE_INDEX.fullmatch(path):
        raise web.HTTPNotFound(text="malformed tile index\n")
    return int(path.replace("x", "").replace("/", "")), width


async def _immutable(request: web.Request, body: bytes) -> web.Response:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag, "Cache-Control": _IMMUTABLE})
    response = web.Response(
        body=body,
        content_type="application/octet-stream",
        headers={"ETag": etag, "Cache-Control": _IMMUTABLE},
    )
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression(web.ContentCoding.gzip)
    return response


async def _checkpoint(request: web.Request) -> web.Response:
    text = await _log(request).checkpoint()
    return web.Response(text=text, content_type="text/plain", headers={"Cache-Control": "no-cache"})


async def _tile(request: web.Request) -> web.Response:
    level_text = request.match_info["level"]
    if level_text == "entries":
        index, width = _tile_index(request.match_info["index"])
        body = await _log(request).entry_bundle(index, width)
        return await _immutable(request, body)
    # isascii: str.isdigit also holds for U+00B9, which int() refuses, and U+0663, which it reads.
    if not (level_text.isascii() and level_text.isdigit()) or (
        level_text != "0" and level_text.startswith("0")
    ):
        raise web.HTTPNotFound(text="malformed tile level\n")
    level = int(level_text)
    if level > _MAX_LEVEL:
        raise web.HTTPNotFound(text="malformed tile level\n")
    index, width = _tile_index(request.match_info["index"])
    body = await _log(request).tile(level, index, width)
    return await _immutable(request, body)


async def _search(request: web.Request) -> web.Response:
    """``POST /api/v2/index/retrieve``: v1's ``SearchIndex`` query (``hash``, ``email``,
    ``subject``, ``publicKey``, ``operator``), answered with ``TransparencyLogEntry`` objects."""
    try:
        query = await parse_json_async(await request.read())
    except ValueError as exc:
        raise RekorError(f"invalid search query: {exc}") from None
    if not isinstance(query, dict):
        raise RekorError("the search query must be a JSON object")
    operator = query.get("operator", "or")
    if operator not in ("and", "or"):
        raise RekorError("operator must be 'and' or 'or'")
    log = _log(request)
    return web.json_response(await log.search(keys_for_query(query), match_all=operator == "and"))


def add_v2_routes(app: web.Application) -> None:
    """Register the v2 write endpoint, the search and the tlog-tiles read endpoints."""
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]] = _create
    app.router.add_post("/api/v2/log/entries", handler)
    app.router.add_post("/api/v2/index/retrieve", _search)
    app.router.add_get("/api/v2/checkpoint", _checkpoint)
    app.router.add_get("/api/v2/tile/{level}/{index:.+}", _tile)
