"""The RFC 6962 CT log personality over the Merkle engine, and its HTTP API (fulcio.md §5.4).

Every certificate the CA issues goes through ``add-pre-chain`` here. The SCT is issued *after*
the entry is committed (Sunlight's zero merge delay), so each SCT the CA embeds refers to an
entry that is already in the tree.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from services.limits import MAX_CT_CHAIN, parse_json_async
from services.log.checkpoint import CheckpointSigner
from services.log.ct import rfc6962
from services.log.ct.rfc6962 import EntryType, SignedCertificateTimestamp, TimestampedEntry
from services.log.errors import DuplicateEntry, LogError
from services.log.merkle import ProofRangeError
from services.log.sequencer import Genesis, Sequencer
from services.log.sqlstore import SQLLogStore

__all__ = ["CT_LOG", "CTError", "CTLog", "add_routes", "dedup_key", "genesis_entry"]

_logger = logging.getLogger(__name__)
MAX_ENTRIES = 1000


class CTError(Exception):
    """A request the CT log refuses; ctfe answers these as plain text with the status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _has_poison(cert: x509.Certificate) -> bool:
    for ext in cert.extensions:
        if ext.oid.dotted_string == rfc6962.POISON_OID:
            if not ext.critical:
                raise CTError(400, "precertificate poison extension is not critical")
            return True
    return False


class CTLog:
    """One CT log: its own tree and key on the shared engine, accepting chains to ``roots``."""

    def __init__(
        self,
        *,
        sequencer: Sequencer,
        store: SQLLogStore,
        signer: CheckpointSigner,
        roots: Sequence[x509.Certificate],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sequencer = sequencer
        self.store = store
        self.signer = signer
        self.roots = list(roots)
        self._clock = clock

    def _validate(self, chain: list[x509.Certificate], *, precert: bool) -> list[x509.Certificate]:
        """Return the chain up to and including a configured root, or raise ``CTError(400)``."""
        if not chain:
            raise CTError(400, "empty chain")
        if _has_poison(chain[0]) != precert:
            want = "a precertificate" if precert else "not a precertificate"
            raise CTError(400, f"chain[0] must be {want}")
        root_ders = {r.public_bytes(serialization.Encoding.DER): r for r in self.roots}
        path = [chain[0]]
        for cert in chain[1:]:
            if cert.public_bytes(serialization.Encoding.DER) in root_ders:
                break
            path.append(cert)
        # Walk up: every certificate must be signed by the next; the last by a root.
        for child, parent in itertools.pairwise(path):
            _check_issued(child, parent)
        top = path[-1]
        for root in self.roots:
            try:
                _check_issued(top, root)
            except CTError:
                continue
            return [*path, root]
        raise CTError(400, "chain does not verify to a trusted root")

    async def add(self, raw_chain: Sequence[str], *, precert: bool) -> SignedCertificateTimestamp:
        """Validate, log and return the SCT for a chain (duplicates get their original SCT)."""
        try:
            ders = [base64.b64decode(c, validate=True) for c in raw_chain]
        except (binascii.Error, ValueError, TypeError):
            raise CTError(400, "chain is not a list of base64 DER certificates") from None
        return await self.add_ders(ders, precert=precert)

    def _parse_and_validate(self, ders: Sequence[bytes], precert: bool) -> list[x509.Certificate]:
        try:
            chain = [x509.load_der_x509_certificate(d) for d in ders]
        except ValueError:
            raise CTError(400, "chain is not a list of DER certificates") from None
        return self._validate(chain, precert=precert)

    async def add_ders(self, ders: Sequence[bytes], *, precert: bool) -> SignedCertificateTimestamp:
        """``add`` for a chain already in DER."""
        # Parsing and verifying a chain costs milliseconds of CPU per certificate: in a worker
        # thread, so one submitter cannot stall every other request on the event loop.
        full = await asyncio.get_running_loop().run_in_executor(
            None, self._parse_and_validate, ders, precert
        )
        leaf_der = ders[0]
        cert_key = dedup_key(leaf_der)
        existing = await self.store.search(self.sequencer.tree_id, [cert_key], match_all=False)
        if existing:
            stored = (await self.store.read_entries(self.sequencer.tree_id, existing[:1]))[
                existing[0]
            ]
            return self._sct_for_leaf(stored.leaf)
        above = [c.public_bytes(serialization.Encoding.DER) for c in full[1:]]
        now_ms = int(self._clock() * 1000)
        if precert:
            try:
                entry = rfc6962.precert_entry(leaf_der, full[1], now_ms)
            except ValueError as exc:
                raise CTError(400, str(exc)) from None
            extra = rfc6962.precert_chain_entry(leaf_der, above)
        else:
            entry = TimestampedEntry(now_ms, EntryType.X509, leaf_der)
            extra = rfc6962.certificate_chain(above)
        return await self._append(entry, extra, cert_key)

    async def add_issued_precertificate(
        self, precert: x509.Certificate, issuer_key_hash: bytes, chain_ders: Sequence[bytes]
    ) -> SignedCertificateTimestamp:
        """Log a precertificate this process's CA has just signed, with the CA chain above it
        (DER) and its issuer's key hash (both the CA's, computed once, not per certificate).

        The CA's in-process path. The chain was built here, not received, so it is neither parsed
        nor verified again (that was two P-384 verifications per certificate, about half of the
        CA's CPU); the duplicate lookup is skipped (a new precertificate has a fresh random
        serial, so it cannot already be in the log); and the TBS minus the poison comes from a
        DER edit (``remove_poison``) instead of ``strip_poison``'s asn1crypto round trip
        (~0.7 ms), which add-pre-chain keeps for precertificates from elsewhere."""
        precert_der = precert.public_bytes(serialization.Encoding.DER)
        entry = TimestampedEntry(
            int(self._clock() * 1000),
            EntryType.PRECERT,
            rfc6962.remove_poison(precert.tbs_certificate_bytes),
            issuer_key_hash,
        )
        extra = rfc6962.precert_chain_entry(precert_der, list(chain_ders))
        return await self._append(entry, extra, dedup_key(precert_der))

    async def _append(
        self, entry: TimestampedEntry, extra: bytes, cert_key: str
    ) -> SignedCertificateTimestamp:
        leaf = entry.merkle_tree_leaf()
        try:
            await self.sequencer.submit(leaf, {cert_key}, extra=extra, want_proof=False)
        except DuplicateEntry:
            pass  # the very same leaf (same millisecond): its SCT is the same
        except LogError as exc:
            raise CTError(503, f"could not log the certificate: {exc}") from None
        return self._sct_for_leaf(leaf)

    def _sct_for_leaf(self, leaf: bytes) -> SignedCertificateTimestamp:
        timestamp_ms = int.from_bytes(leaf[2:10], "big")
        signature = self.signer.sign(leaf)  # == the SCT signed input, see rfc6962
        # The log key is ECDSA P-256 and signs SHA-256: the SCT's default algorithms.
        return SignedCertificateTimestamp(self.signer.key_id, timestamp_ms, signature)

    async def sth(self) -> dict[str, Any]:
        """get-sth: the current signed tree head."""
        head = await self.sequencer.latest_head()
        sig = self.signer.sign(rfc6962.tree_head_input(head.timestamp_ms, head.size, head.root))
        return {
            "tree_size": head.size,
            "timestamp": head.timestamp_ms,
            "sha256_root_hash": base64.b64encode(head.root).decode(),
            "tree_head_signature": base64.b64encode(rfc6962.digitally_signed(sig)).decode(),
        }


def dedup_key(cert_der: bytes) -> str:
    """The one index key of a CT entry: its certificate's hash (duplicates get the first SCT)."""
    return "ct-cert:sha256:" + hashlib.sha256(cert_der).hexdigest()


def genesis_entry(ca_chain: Sequence[x509.Certificate], now: float) -> Genesis:
    """The CT log's genesis leaf (why every log has one: ``sequencer.Genesis``).

    An x509 entry of the CA's own signing certificate, with the chain above it as extra data:
    the certificate that issues every later precertificate, checkable against ``get-roots``
    and the trusted root's CA chain.
    """
    ders = [c.public_bytes(serialization.Encoding.DER) for c in ca_chain]
    entry = TimestampedEntry(int(now * 1000), EntryType.X509, ders[0])
    return Genesis(
        entry.merkle_tree_leaf(),
        frozenset({dedup_key(ders[0])}),
        rfc6962.certificate_chain(ders[1:]),
    )


def _check_issued(child: x509.Certificate, parent: x509.Certificate) -> None:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        raise CTError(400, "chain does not verify to a trusted root") from None


# -- HTTP ------------------------------------------------------------------------------------

CT_LOG = web.AppKey("ct_log", CTLog)


def _json(data: object) -> web.Response:
    return web.Response(text=json.dumps(data), content_type="application/json")


@web.middleware
async def _ct_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except CTError as exc:
        # ctfe's http.Error: the status text, a newline, the message, as plain text.
        return web.Response(status=exc.status, text=f"{exc.message}\n")


def _int_param(request: web.Request, name: str, minimum: int = 0) -> int:
    raw = request.query.get(name)
    try:
        value = int(raw) if raw is not None else None
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise CTError(400, f"{name} parameter must be an integer >= {minimum}")
    return value


async def _chain_body(request: web.Request) -> list[str]:
    try:
        body = await parse_json_async(await request.read())
        chain = body["chain"]
        if not isinstance(chain, list) or not all(isinstance(c, str) for c in chain):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise CTError(400, 'body must be {"chain": ["<base64 DER>", ...]}') from None
    if not chain or len(chain) > MAX_CT_CHAIN:
        # Every certificate costs a parse and a signature check; real chains here are a
        # leaf, an intermediate and a root.
        raise CTError(400, f"chain must hold 1 to {MAX_CT_CHAIN} certificates")
    return chain


async def add_chain(request: web.Request) -> web.Response:
    """POST /ct/v1/add-chain."""
    sct = await request.app[CT_LOG].add(await _chain_body(request), precert=False)
    return _json(sct.to_add_chain_response())


async def add_pre_chain(request: web.Request) -> web.Response:
    """POST /ct/v1/add-pre-chain."""
    sct = await request.app[CT_LOG].add(await _chain_body(request), precert=True)
    return _json(sct.to_add_chain_response())


async def get_sth(request: web.Request) -> web.Response:
    """GET /ct/v1/get-sth."""
    return _json(await request.app[CT_LOG].sth())


async def get_sth_consistency(request: web.Request) -> web.Response:
    """GET /ct/v1/get-sth-consistency?first=&second=."""
    log = request.app[CT_LOG]
    first, second = _int_param(request, "first"), _int_param(request, "second")
    if first > second or second > (await log.sequencer.latest_head()).size:
        raise CTError(400, f"invalid range first={first} second={second}")
    try:
        proof = await log.sequencer.proofs.consistency(first, second)
    except ProofRangeError as exc:
        raise CTError(400, str(exc)) from None
    return _json({"consistency": [base64.b64encode(h).decode() for h in proof]})


async def get_proof_by_hash(request: web.Request) -> web.Response:
    """GET /ct/v1/get-proof-by-hash?hash=&tree_size=."""
    log = request.app[CT_LOG]
    size = _int_param(request, "tree_size", minimum=1)
    if size > (await log.sequencer.latest_head()).size:
        raise CTError(400, f"tree_size {size} is beyond the current tree")
    try:
        leaf_hash = base64.b64decode(request.query.get("hash", ""), validate=True)
    except (binascii.Error, ValueError):
        raise CTError(400, "hash parameter must be base64") from None
    found = await log.store.find_leaves(log.sequencer.tree_id, [leaf_hash])
    if leaf_hash not in found or found[leaf_hash].index >= size:
        raise CTError(404, "no such leaf in a tree of that size")
    index = found[leaf_hash].index
    proof = await log.sequencer.proofs.inclusion(index, size)
    return _json({"leaf_index": index, "audit_path": [base64.b64encode(h).decode() for h in proof]})


async def get_entries(request: web.Request) -> web.Response:
    """GET /ct/v1/get-entries?start=&end= (inclusive; at most 1000 per answer)."""
    log = request.app[CT_LOG]
    start, end = _int_param(request, "start"), _int_param(request, "end")
    size = (await log.sequencer.latest_head()).size
    if start > end or start >= size:
        raise CTError(400, f"invalid range start={start} end={end} for tree size {size}")
    end = min(end, size - 1, start + MAX_ENTRIES - 1)
    found = await log.store.read_entries(log.sequencer.tree_id, range(start, end + 1))
    entries = [
        {
            "leaf_input": base64.b64encode(found[i].leaf).decode(),
            "extra_data": base64.b64encode(found[i].extra or b"").decode(),
        }
        for i in range(start, end + 1)
        if i in found
    ]
    return _json({"entries": entries})


async def get_roots(request: web.Request) -> web.Response:
    """GET /ct/v1/get-roots."""
    roots = request.app[CT_LOG].roots
    return _json(
        {
            "certificates": [
                base64.b64encode(r.public_bytes(serialization.Encoding.DER)).decode() for r in roots
            ]
        }
    )


def add_routes(app: web.Application) -> web.Application:
    """Return a sub-application with the RFC 6962 API, to mount at ``/ct``."""
    sub = web.Application(middlewares=[_ct_errors])
    sub.router.add_post("/v1/add-chain", add_chain)
    sub.router.add_post("/v1/add-pre-chain", add_pre_chain)
    sub.router.add_get("/v1/get-sth", get_sth)
    sub.router.add_get("/v1/get-sth-consistency", get_sth_consistency)
    sub.router.add_get("/v1/get-proof-by-hash", get_proof_by_hash)
    sub.router.add_get("/v1/get-entries", get_entries)
    sub.router.add_get("/v1/get-roots", get_roots)
    app.add_subapp("/ct", sub)
    return sub
