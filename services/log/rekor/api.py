"""The Rekor v1 HTTP API (rekor.md §1) over the Merkle log engine.

Handlers stay thin: parse, call the domain (``RekorLog``), serialise. Every deliberate error is a
``RekorError`` and becomes ``{code, message}`` with its status in one middleware; the two
GET-entry 404s have no body at all, as Rekor's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from services.fastjson import compact
from services.handoff import Handoff
from services.limits import parse_json_async
from services.log import merkle
from services.log.checkpoint import CheckpointSigner
from services.log.errors import DuplicateEntry, EntryRefused, LogError, Pushback, SequencerStopped
from services.log.merkle import ProofRangeError
from services.log.rekor import searchkeys
from services.log.rekor.errors import RekorError, SchemaViolation
from services.log.rekor.kinds import canonicalize_proposed_entry, canonicalize_proposed_value
from services.log.rekor.seal import set_payload
from services.log.sequencer import Sequencer, TreeHead
from services.log.sqlstore import SQLLogStore, StoredEntry

__all__ = ["RekorLog", "add_routes", "error_middleware", "keys_for_query"]

_logger = logging.getLogger(__name__)

MAX_RETRIEVE = 10
"""Rekor's limit on the items of one ``entries/retrieve`` query."""


class NotFound(RekorError):
    """No such entry (the GET endpoints answer 404 with an empty body)."""

    status = 404


class ServiceUnavailable(RekorError):
    """The log is overloaded or shutting down (503 + Retry-After)."""

    status = 503


class Conflict(RekorError):
    """The entry already exists (409 + Location of the existing entry)."""

    status = 409

    def __init__(self, entry_id: str) -> None:
        super().__init__(
            "an equivalent entry already exists in the transparency log with UUID " + entry_id
        )
        self.entry_id = entry_id


@dataclass(frozen=True, slots=True)
class Created:
    """A committed entry: its ID and the ``LogEntry`` body to answer with."""

    entry_id: str
    body: dict[str, Any]


INLINE_CANONICALIZE = 8 * 1024
"""Entries this large or smaller are canonicalised on the event loop, larger ones in a thread.

A hashedrekord entry (1.5-3 KB) takes 60-80 µs to parse, verify and canonicalise, about what the
hand-off to a thread and back costs the loop; and on a pool that keeps every core busy, the
signature check running beside the loop (cryptography releases the GIL) adds no capacity. On
two workers, inline small entries gave 3,644-3,868 writes/s at c=256 against 3,333-3,644 handed
off, with a lower p99 (docs/sizing.md). 8 KiB bounds what one entry can hold the loop for.
"""


class RekorLog:
    """The Rekor personality of one tree: entry IDs, SETs, proofs and search over the engine."""

    def __init__(
        self,
        *,
        sequencer: Sequencer,
        store: SQLLogStore,
        signer: CheckpointSigner,
        executor: Executor | None = None,
    ) -> None:
        self.sequencer = sequencer
        self.store = store
        self.signer = signer
        self.tree_id = sequencer.tree_id
        self.log_id = signer.key_id.hex()
        # Large entries (``INLINE_CANONICALIZE``) are checked in threads: hashing and parsing
        # them would stall every other request on the loop.
        self._canonicalize = Handoff(
            canonicalize_proposed_entry,
            executor,
            inline=lambda body: len(body) <= INLINE_CANONICALIZE,
        )

    # -- identifiers -----------------------------------------------------------------------

    def entry_id(self, leaf_hash: bytes) -> str:
        """Return the 80-hex entry ID: ``%016x`` of the tree ID followed by the 64-hex UUID."""
        return f"{self.tree_id:016x}{leaf_hash.hex()}"

    def public_key_pem(self) -> bytes:
        """Return the log's public key as PEM."""
        return self.signer.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    # -- writes ------------------------------------------------------------------------------

    async def create(self, body: bytes) -> Created:
        """Verify, canonicalise and append a proposed entry; return once committed."""
        entry = await self._canonicalize(body)
        try:
            receipt = await self.sequencer.submit(entry.leaf, entry.search_keys)
        except DuplicateEntry as dup:
            raise Conflict(self.entry_id(dup.leaf_hash)) from None
        except (Pushback, SequencerStopped) as exc:
            raise ServiceUnavailable(str(exc)) from None
        except EntryRefused as exc:
            raise RekorError(str(exc)) from None
        except LogError as exc:
            _logger.error("append failed: %s", exc)
            raise ServiceUnavailable("the entry could not be appended; retry") from None
        stored = StoredEntry(
            receipt.index,
            receipt.leaf_hash,
            entry.leaf,
            receipt.integrated_time,
            seal=receipt.seal,
        )
        return Created(
            self.entry_id(receipt.leaf_hash),
            self._log_entry(stored, receipt.head, receipt.proof),
        )

    # -- reads -------------------------------------------------------------------------------

    def _log_entry(
        self, entry: StoredEntry, head: TreeHead, proof: Sequence[bytes]
    ) -> dict[str, Any]:
        body_b64 = base64.b64encode(entry.leaf).decode()
        seal = entry.seal
        if seal is None:
            # Entries stored before seals existed (and receipts rebuilt after a failed commit):
            # signed now, over the stored values.
            seal = self.signer.sign(
                set_payload(entry.leaf, entry.integrated_time, self.log_id, entry.index)
            )
        return {
            self.entry_id(entry.leaf_hash): {
                "body": body_b64,
                "integratedTime": entry.integrated_time,
                "logID": self.log_id,
                "logIndex": entry.index,
                "verification": {
                    "inclusionProof": {
                        "checkpoint": head.checkpoint,
                        "hashes": [h.hex() for h in proof],
                        "logIndex": entry.index,
                        "rootHash": head.root.hex(),
                        "treeSize": head.size,
                    },
                    "signedEntryTimestamp": base64.b64encode(seal).decode(),
                },
            }
        }

    async def _render(self, entries: Sequence[StoredEntry], head: TreeHead) -> list[dict[str, Any]]:
        out = []
        for entry in entries:
            proof = await self.sequencer.proofs.inclusion(entry.index, head.size)
            out.append(self._log_entry(entry, head, proof))
        return out

    async def by_index(self, index: int) -> dict[str, Any]:
        """Return the ``LogEntry`` at ``index``."""
        head = await self.sequencer.head_covering(index + 1)
        if index >= head.size:
            raise NotFound(f"no entry at index {index}")
        found = await self.store.read_entries(self.tree_id, [index])
        if index not in found:
            raise NotFound(f"no entry at index {index}")
        (entry,) = await self._render([found[index]], head)
        return entry

    def _leaf_hash_of(self, uuid: str) -> bytes:
        """Parse a 64-hex UUID or an 80-hex entry ID of this tree."""
        text = uuid.lower()
        if len(text) == 80:
            if text[:16] != f"{self.tree_id:016x}":
                raise NotFound(f"tree {text[:16]} is not served here")
            text = text[16:]
        return bytes.fromhex(text)

    async def by_uuids(self, uuids: Sequence[str]) -> list[dict[str, Any]]:
        """Return the entries for UUIDs or entry IDs, skipping unknown ones."""
        hashes: list[bytes] = []
        for uuid in uuids:
            try:
                hashes.append(self._leaf_hash_of(uuid))
            except NotFound:
                continue
        return await self.by_leaf_hashes(hashes)

    async def by_leaf_hashes(self, hashes: Sequence[bytes]) -> list[dict[str, Any]]:
        """Return the committed entries with these leaf hashes, in the order asked."""
        found = await self.store.read_entries_by_leaf_hash(self.tree_id, hashes)
        # Entries a concurrent batch committed after our head snapshot cannot be proven yet.
        newest = max((e.index + 1 for e in found.values()), default=0)
        head = await self.sequencer.head_covering(newest)
        ordered = [
            found[h] for h in dict.fromkeys(hashes) if h in found and found[h].index < head.size
        ]
        return await self._render(ordered, head)

    async def by_indexes(self, indexes: Sequence[int]) -> list[dict[str, Any]]:
        """Return the entries at these indexes, skipping out-of-range ones."""
        head = await self.sequencer.head_covering(max(indexes, default=-1) + 1)
        wanted = [i for i in dict.fromkeys(indexes) if 0 <= i < head.size]
        found = await self.store.read_entries(self.tree_id, wanted)
        return await self._render([found[i] for i in wanted if i in found], head)

    async def log_info(self) -> dict[str, Any]:
        """Return ``LogInfo`` for the current signed tree head."""
        head = await self.sequencer.latest_head()
        return {
            "inactiveShards": [],
            "rootHash": head.root.hex(),
            "signedTreeHead": head.checkpoint,
            "treeID": str(self.tree_id),
            "treeSize": head.size,
        }

    async def consistency(self, first: int, last: int) -> dict[str, Any]:
        """Return the consistency proof from ``first`` to ``last`` (rekor.md §1.2)."""
        head = await self.sequencer.latest_head()
        if last > head.size:
            raise RekorError(
                f"the tree size requested({last}) was greater than what is currently "
                f"observable({head.size})"
            )
        if first > last:
            raise RekorError(f"firstSize({first}) must be less than lastSize({last})")
        try:
            proof = await self.sequencer.proofs.consistency(first, last)
        except ProofRangeError as exc:
            raise RekorError(str(exc)) from None
        root = head.root if last == head.size else await self.sequencer.proofs.root(last)
        return {"hashes": [h.hex() for h in proof], "rootHash": root.hex()}

    async def search(self, keys: Sequence[set[str]], *, match_all: bool) -> list[str]:
        """Return entry IDs for ``keys``: each item is the key set one query field maps to."""
        per_field: list[set[int]] = []
        for field_keys in keys:
            per_field.append(
                set(await self.store.search(self.tree_id, field_keys, match_all=False))
            )
        if not per_field:
            return []
        hits = set.intersection(*per_field) if match_all else set.union(*per_field)
        found = await self.store.read_entries(self.tree_id, sorted(hits))
        return [self.entry_id(found[i].leaf_hash) for i in sorted(found)]


# -- HTTP ------------------------------------------------------------------------------------

REKOR_LOG = web.AppKey("rekor_log", RekorLog)


def _json(
    data: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    # Go's encoding/json: compact, raw UTF-8 (the em dash in checkpoints), trailing newline.
    return web.Response(
        body=compact(data) + b"\n",
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def _error(
    status: int, code: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return _json({"code": code, "message": message}, status, headers)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Map every error to Rekor's ``{code, message}`` wire shape and status."""
    try:
        return await handler(request)
    except NotFound:
        # Rekor's GET-entry 404s have no body and no Content-Type.
        return web.Response(status=404)
    except Conflict as exc:
        location = f"{request.path.rstrip('/')}/{exc.entry_id}"
        return _error(409, 409, exc.message, {"Location": location})
    except ServiceUnavailable as exc:
        return _error(503, 503, exc.message, {"Retry-After": "1"})
    except RekorError as exc:
        _logger.debug("client error %s: %s", exc.status, exc.message)
        return _error(exc.status, exc.code, exc.message)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app._client_max_size
        return _error(413, 413, f"Request Entity Too Large. Limit set to {limit}")
    except web.HTTPNotFound:
        return _error(404, 404, f"path {request.path} was not found")
    except web.HTTPMethodNotAllowed as exc:
        allow = ", ".join(sorted(exc.allowed_methods))
        return _error(405, 405, f"method {request.method} is not allowed", {"Allow": allow})


async def _read_json(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return await parse_json_async(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RekorError(f"parsing body failed, because {exc}") from None


def _query_int(request: web.Request, name: str, *, default: int | None, minimum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise SchemaViolation(f"{name} in query is required", code=602)
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SchemaViolation(
            f"{name} in query must be of type int64: {json.dumps(raw)}", code=601
        ) from None
    if value < minimum:
        raise SchemaViolation(
            f"{name} in query should be greater than or equal to {minimum}", code=609
        )
    return value


def _check_tree_id(log: RekorLog, request: web.Request) -> None:
    tree = request.query.get("treeID")
    if tree is not None and tree != str(log.tree_id):
        raise RekorError(f"unknown treeID {tree}")


async def get_log_info(request: web.Request) -> web.Response:
    """GET /api/v1/log."""
    return _json(await request.app[REKOR_LOG].log_info())


async def get_public_key(request: web.Request) -> web.Response:
    """GET /api/v1/log/publicKey."""
    log = request.app[REKOR_LOG]
    _check_tree_id(log, request)
    return web.Response(body=log.public_key_pem(), content_type="application/x-pem-file")


async def get_log_proof(request: web.Request) -> web.Response:
    """GET /api/v1/log/proof?firstSize=M&lastSize=N."""
    log = request.app[REKOR_LOG]
    _check_tree_id(log, request)
    last = _query_int(request, "lastSize", default=None, minimum=1)
    first = _query_int(request, "firstSize", default=1, minimum=1)
    return _json(await log.consistency(first, last))


async def create_log_entry(request: web.Request) -> web.Response:
    """POST /api/v1/log/entries: 201 with ETag and Location once committed."""
    log = request.app[REKOR_LOG]
    created = await log.create(await request.read())
    location = f"{request.path.rstrip('/')}/{created.entry_id}"
    return _json(created.body, 201, {"ETag": created.entry_id, "Location": location})


async def get_log_entry_by_index(request: web.Request) -> web.Response:
    """GET /api/v1/log/entries?logIndex=N."""
    index = _query_int(request, "logIndex", default=None, minimum=0)
    return _json(await request.app[REKOR_LOG].by_index(index))


def _valid_uuid(value: object) -> bool:
    if not isinstance(value, str) or len(value) not in (64, 80):
        return False
    try:
        binascii.unhexlify(value)
    except (binascii.Error, ValueError):
        return False
    return True


async def get_log_entry_by_uuid(request: web.Request) -> web.Response:
    """GET /api/v1/log/entries/{entryUUID}."""
    uuid = request.match_info["uuid"]
    if not _valid_uuid(uuid):
        raise SchemaViolation(
            "entryUUID in path should match '^([0-9a-fA-F]{64}|[0-9a-fA-F]{80})$'", code=605
        )
    found = await request.app[REKOR_LOG].by_uuids([uuid])
    if not found:
        raise NotFound(uuid)
    return _json(found[0])


async def search_log_query(request: web.Request) -> web.Response:
    """POST /api/v1/log/entries/retrieve: misses are skipped, never 404."""
    log = request.app[REKOR_LOG]
    query = await _read_json(request)
    if not isinstance(query, dict):
        raise RekorError("the search query must be a JSON object")
    uuids = query.get("entryUUIDs") or []
    indexes = query.get("logIndexes") or []
    proposed = query.get("entries") or []
    for name, items in (("entryUUIDs", uuids), ("logIndexes", indexes), ("entries", proposed)):
        if not isinstance(items, list):
            raise SchemaViolation(f"{name} in body must be of type array", code=601)
        if len(items) > MAX_RETRIEVE:
            raise SchemaViolation(
                f"{name} in body should have at most {MAX_RETRIEVE} items", code=611
            )
    if len(uuids) + len(indexes) + len(proposed) > MAX_RETRIEVE:
        raise SchemaViolation(f"more than max allowed {MAX_RETRIEVE} entries in request", code=611)
    for uuid in uuids:
        if not _valid_uuid(uuid):
            raise SchemaViolation(
                "entryUUIDs in body should match '^([0-9a-fA-F]{64}|[0-9a-fA-F]{80})$'", code=605
            )
    for index in indexes:
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise SchemaViolation(
                "logIndexes in body should be greater than or equal to 0", code=609
            )
    loop = asyncio.get_running_loop()
    leaf_hashes = [
        merkle.hash_leaf((await loop.run_in_executor(None, canonicalize_proposed_value, p)).leaf)
        for p in proposed
    ]
    results = await log.by_uuids(cast(list[str], uuids))
    results += await log.by_leaf_hashes(leaf_hashes)
    results += await log.by_indexes(cast(list[int], indexes))
    return _json(results)


async def search_index(request: web.Request) -> web.Response:
    """POST /api/v1/index/retrieve: entry IDs by hash, public key or email (exact, from SQL)."""
    log = request.app[REKOR_LOG]
    query = await _read_json(request)
    if not isinstance(query, dict):
        raise RekorError("the search query must be a JSON object")
    operator = query.get("operator", "or")
    if operator not in ("and", "or"):
        raise SchemaViolation("operator in body should be one of [and or]", code=606)
    return _json(await log.search(keys_for_query(query), match_all=operator == "and"))


def keys_for_query(query: Mapping[str, Any]) -> list[set[str]]:
    """Turn a ``SearchIndex`` into one key set per field given (``and`` intersects the fields)."""
    fields: list[set[str]] = []
    hash_value = query.get("hash")
    if hash_value is not None:
        if not isinstance(hash_value, str):
            raise SchemaViolation("hash in body must be of type string", code=601)
        fields.append(set(searchkeys.index_keys_for_hash(hash_value)))
    public_key = query.get("publicKey")
    if public_key is not None:
        if not isinstance(public_key, dict):
            raise SchemaViolation("publicKey in body must be of type object", code=601)
        content = public_key.get("content")
        if not isinstance(content, str):
            raise SchemaViolation("publicKey.content in body is required", code=602)
        try:
            raw = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise RekorError("publicKey.content is not valid base64") from None
        fmt = public_key.get("format", "x509")
        fields.append(set(searchkeys.index_keys_for_public_key(raw, str(fmt))))
    for name, keys_for in (
        ("email", searchkeys.index_keys_for_email),
        ("subject", searchkeys.index_keys_for_subject),
    ):
        value = query.get(name)
        if value is not None:
            if not isinstance(value, str) or not value:
                raise SchemaViolation(f"{name} in body must be a non-empty string", code=601)
            fields.append(set(keys_for(value)))
    return fields


async def ping(_request: web.Request) -> web.Response:
    """GET /ping: heartbeat."""
    return web.Response(text=".")


def add_routes(app: web.Application) -> None:
    """Mount the Rekor v1 API on ``app``; ``app[REKOR_LOG]`` is set when the log starts."""
    app.router.add_get("/api/v1/log", get_log_info)
    app.router.add_get("/api/v1/log/publicKey", get_public_key)
    app.router.add_get("/api/v1/log/proof", get_log_proof)
    app.router.add_post("/api/v1/log/entries", create_log_entry)
    app.router.add_get("/api/v1/log/entries", get_log_entry_by_index)
    app.router.add_post("/api/v1/log/entries/retrieve", search_log_query)
    app.router.add_post("/api/v1/log/entries/retrieve/", search_log_query)
    app.router.add_get("/api/v1/log/entries/{uuid}", get_log_entry_by_uuid)
    app.router.add_post("/api/v1/index/retrieve", search_index)
    app.router.add_get("/ping", ping)
