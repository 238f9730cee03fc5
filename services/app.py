"""``sigstead up``: every service on one port, with SQLite (or PostgreSQL) and keys in DIR."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import text

from services.ca import keys as ca_keys
from services.ca import pkcs11 as pkcs11_ca
from services.ca.api import CA, CertificateAuthority
from services.ca.api import add_routes as ca_routes
from services.ca.config import ConfigError, FulcioConfig, load_config
from services.ca.oidc import TokenVerifier
from services.db import Database, parse_url
from services.errors import OperatorError
from services.keys import load_or_create_ec_key, load_or_create_log_key
from services.limits import BodyLimits, body_guard
from services.log.checkpoint import CheckpointSigner, is_frozen, verify_checkpoint
from services.log.cluster import Cluster
from services.log.ct.log import CT_LOG, CTLog
from services.log.ct.log import add_routes as add_ct_routes
from services.log.ct.log import genesis_entry as ct_genesis
from services.log.errors import CorruptLog
from services.log.headguard import HeadGuard
from services.log.rekor.api import REKOR_LOG, RekorLog, add_routes, error_middleware
from services.log.rekor.api_v2 import (
    REKOR_V2_LOG,
    REKOR_V2_RETIRED,
    RekorV2Log,
    RetiredTree,
    add_v2_routes,
)
from services.log.rekor.genesis import GenesisMismatch, verify_genesis
from services.log.rekor.genesis import genesis_entry as rekor_genesis
from services.log.rekor.seal import sealer as rekor_sealer
from services.log.rekor.v2 import genesis_entry as rekor_v2_genesis
from services.log.sequencer import GenesisFactory, Sealer, Sequencer
from services.log.sqlstore import SQLLogStore
from services.log.witnessing import Policy, PolicyError, Witnessing, WitnessingStore
from services.metrics import METRICS, Metrics, metrics_handler, metrics_middleware
from services.migrate import upgrade
from services.openapi import serve as serve_openapi
from services.settings import CA_KEY_TYPES, COMPONENTS, DEFAULT_MAX_BODY, PUBLISHABLE, Settings
from services.trust.documents import Endpoints
from services.trust.material import REKOR_V2_KEY_FILE, retired_rekor_v2
from services.trust.publish import (
    TrustOptions,
    TrustSettingsError,
    check_publication,
    describe_services,
    publish,
    published_settings,
    tuf_repository,
)
from services.tsa import keys as tsa_keys
from services.tsa.app import TSA, TSA_CLOCK, TSA_ISSUED
from services.tsa.app import add_routes as tsa_routes
from services.tsa.authority import TimestampAuthority

__all__ = [
    "COMPONENTS",
    "DEFAULT_MAX_BODY",
    "Settings",
    "check",
    "configured",
    "create_app",
    "tree_id_for_key",
    "trust_options",
]

_logger = logging.getLogger(__name__)


def configured(settings: Settings) -> tuple[str, ...]:
    """The components ``sigstead up`` runs with these settings: all, but the CA only with an
    identity provider to serve (``--oidc-config``)."""
    return tuple(c for c in COMPONENTS if c != "ca" or settings.oidc_config is not None)


def _ca_flags(settings: Settings, components: tuple[str, ...]) -> None:
    """Refuse CA key flags that cannot mean what the operator wrote."""
    if "ca" not in components:
        # A trust-only process takes the chain of a CA that runs elsewhere, and only that.
        stray = settings.ca_key or settings.ca_pkcs11
        if stray or (settings.ca_chain and components != ("trust",)):
            raise OperatorError("the --ca-* flags need --oidc-config: without it, no CA")
        return
    if settings.ca_pkcs11 is not None:
        if settings.ca_key is not None or settings.ca_chain is None:
            raise OperatorError("a PKCS#11 CA key takes a chain file and no key file")
    elif settings.ca_key is not None:
        if settings.ca_chain is None:
            raise OperatorError("a CA key file needs its chain file")
    elif settings.ca_chain is not None:
        raise OperatorError("a CA chain file needs a CA key file or a PKCS#11 key")


def check(settings: Settings, components: tuple[str, ...]) -> FulcioConfig | None:
    """Every check of the settings that writes nothing: run before anything is created.

    Returns the parsed ``--oidc-config`` (None without a CA). The keys themselves are loaded
    when the services start; what is checked here is that every named file can be read.
    """
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; choose from {COMPONENTS}")
    if "ca" in components and settings.oidc_config is None:
        raise ConfigError(
            "the CA needs --oidc-config: with no identity provider it has nothing to serve"
        )
    if {"log", "ca"} & set(components):
        parse_url(settings.resolved_database_url())
    Endpoints(settings.public_url, settings.operator, settings.rekor_v2_url)  # URLs clients use
    if settings.oidc_urls and "ca" not in components and components != ("trust",):
        raise TrustSettingsError(
            "--oidc-url names where clients sign in for the CA, and there is no CA "
            "(--oidc-config enables it)"
        )
    _ca_flags(settings, components)
    if settings.witness_policy is not None:
        if "log" not in components:
            raise OperatorError("--witness-policy is for the log: this process runs none")
        try:
            Policy.load(settings.witness_policy)
        except PolicyError as exc:
            raise OperatorError(str(exc)) from None
    if settings.ca_chain is not None:
        ca_keys.load_chain(settings.ca_chain)
    pin_file = settings.ca_pkcs11.pin_file if settings.ca_pkcs11 is not None else None
    for secret in (settings.ca_key_password_file, pin_file):
        if secret is not None:
            ca_keys.read_secret(secret, "")  # readable, 0600, not empty; the value is not kept
    if settings.ca_key_type is not None and (settings.ca_key or settings.ca_pkcs11):
        raise OperatorError("--ca-key-type is for a CA generated in the data directory")
    if settings.ca_key is not None and not settings.ca_key.is_file():
        raise OperatorError(f"--ca-key {settings.ca_key}: no such file")
    if settings.ca_pkcs11 is not None and not settings.ca_pkcs11.module.is_file():
        raise OperatorError(f"--ca-pkcs11-module {settings.ca_pkcs11.module}: no such file")
    if "ca" in components:
        assert settings.oidc_config is not None
        return load_config(settings.oidc_config)
    return None


def trust_options(settings: Settings, components: tuple[str, ...]) -> TrustOptions:
    """What a process running ``components`` publishes.

    A process that runs the services publishes those it runs (the CA only with its config); a
    trust-only process (``serve trust``) those its settings name, else those already published,
    else all of them.
    """
    services = settings.published_services
    if components != ("trust",):
        if services is not None:
            raise ValueError("published_services is for a trust-only process")
        running = {"log"} | ({"ca", "tsa"} & set(components))
        if settings.oidc_config is None:
            running.discard("ca")
        services = frozenset(running)
    elif services is None:
        published = published_settings(settings.data_dir)
        services = frozenset(PUBLISHABLE) if published is None else published.services
    ca_chain = None if settings.ca_chain is None else ca_keys.load_chain(settings.ca_chain)
    return TrustOptions(
        settings.public_url,
        operator=settings.operator,
        oidc_urls=settings.oidc_urls,
        ca_chain=ca_chain,
        services=services,
        rekor_version=settings.rekor_version,
        rekor_v2_url=settings.rekor_v2_url,
    )


def check_trust(settings: Settings, components: tuple[str, ...]) -> TrustOptions:
    """The options this process will publish, refused (``PublicationMismatch``) if they would
    move clients: run with the data directory's publisher claim held, before any key is made."""
    options = trust_options(settings, components)
    changed_by = "--services" if components == ("trust",) else "--oidc-config"
    check_publication(settings.data_dir, options, changed_by=changed_by)
    return options


def tree_id_for_key(key_id: bytes) -> int:
    """Derive the Rekor tree ID from the log key's ID.

    Stable across restarts and replicas without any extra state, and a second log with another
    key can never write into this tree (cf. Sunlight keying its lock entries by log ID).
    """
    tree_id = int.from_bytes(hashlib.sha256(b"sigstead tree id\x00" + key_id).digest()[:8], "big")
    return (tree_id & ((1 << 63) - 1)) or 1


DATABASE = web.AppKey("database", Database)
# The trees whose witnessed checkpoints the read endpoints serve: Rekor v1's, then v2's.
WITNESSED_TREES: web.AppKey[tuple[int, int]] = web.AppKey("witnessed_trees")


def _tree(
    settings: Settings,
    db: Database,
    key_file: str,
    origin_suffix: str | None,
    genesis: Callable[[CheckpointSigner, str], GenesisFactory],
    sealer: Callable[[CheckpointSigner], Sealer] | None = None,
    metrics: tuple[Metrics, str] | None = None,
    key_type: str | None = None,
    hostname: str | None = None,
) -> tuple[Sequencer, SQLLogStore, CheckpointSigner]:
    """One log tree on the shared engine: its key (created 0600 on first start), its tree ID
    derived from that key, and its sequencer (not yet started) with the personality's genesis
    leaf, given the signer and the origin.

    The origin is ``<host><suffix> - <tree ID>`` (Rekor v1 and CT), or, with no suffix, the
    bare host: a Rekor v2 (C2SP) origin, which clients require to equal the host of the log's
    URL. ``key_type`` (Rekor v2 only) allows an Ed25519 key and names the type a new one gets;
    otherwise the key is ECDSA, which SETs and SCTs need. ``hostname`` (Rekor v2's own URL's)
    replaces the public URL's as key name and origin."""
    path = settings.data_dir / "keys" / key_file
    key = (
        load_or_create_ec_key(path) if key_type is None else load_or_create_log_key(path, key_type)
    )
    host = hostname or settings.hostname
    signer = CheckpointSigner(host, key)
    # From the SPKI, not the note key ID: an Ed25519 key's ID changes with the key name.
    tree_id = tree_id_for_key(signer.spki_id)
    origin = host if origin_suffix is None else f"{host}{origin_suffix} - {tree_id}"
    store = SQLLogStore(db)
    sequencer = Sequencer(
        store,
        tree_id=tree_id,
        origin=origin,
        signer=signer,
        genesis=genesis(signer, origin),
        clock=settings.clock or time.time,
        batch_max_size=settings.batch_max_size,
        batch_max_age=settings.batch_max_age,
        max_pending=settings.max_pending,
        sealer=None if sealer is None else sealer(signer),
        # Outside the database on purpose: it must survive the database being restored.
        guard=HeadGuard(settings.data_dir / "heads" / f"{tree_id}.json"),
        observer=None if metrics is None else metrics[0].commit_observer(metrics[1]),
    )
    if metrics is not None:
        metrics[0].watch(metrics[1], sequencer)
    return sequencer, store, signer


CLUSTER: web.AppKey[Cluster] = web.AppKey("cluster", Cluster)


def _cluster_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """The forwarding endpoint and election of a process that may share its logs with others
    (first in, last out: every log has left, its last batch committed, before it closes)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cluster = Cluster(
            listen=settings.sequencer_listen,
            url=settings.sequencer_url,
            lock_dir=settings.data_dir / "heads",
            clock=settings.clock or time.time,
        )
        await cluster.start()
        app[CLUSTER] = cluster
        try:
            yield
        finally:
            await cluster.close()

    return ctx


async def _start(
    app: web.Application,
    sequencer: Sequencer,
    db: Database,
    store: SQLLogStore,
    signer: CheckpointSigner,
) -> None:
    """Start a tree's sequencer: here, or, in a cluster, wherever the election says."""
    if CLUSTER in app:
        await app[CLUSTER].join(sequencer, db, store, signer)
    else:
        await sequencer.start()


async def _stop(app: web.Application, sequencer: Sequencer) -> None:
    if CLUSTER in app:
        await app[CLUSTER].leave(sequencer)
    else:
        await sequencer.stop()


def _log_context(
    settings: Settings, database: Database | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = database or Database(settings.resolved_database_url())
        try:
            await upgrade(db)
            sequencer, store, signer = _tree(
                settings,
                db,
                "rekor.pem",
                "",
                lambda signer, origin: lambda _now: rekor_genesis(signer, origin),
                rekor_sealer,
                (app[METRICS], "rekor"),
            )
            v2_sequencer, v2_store, v2_signer = _tree(
                settings,
                db,
                REKOR_V2_KEY_FILE,
                None,
                lambda signer, origin: lambda _now: rekor_v2_genesis(signer, origin),
                metrics=(app[METRICS], "rekor-v2"),
                key_type=settings.rekor_v2_key_type,
                hostname=settings.rekor_v2_hostname,
            )
            await _start(app, sequencer, db, store, signer)
            await _check_first_entry(store, sequencer, signer)
            await _check_origin(v2_store, v2_sequencer)
            await _start(app, v2_sequencer, db, v2_store, v2_signer)
            if settings.rekor_v2_freeze:
                await v2_sequencer.freeze()
            elif v2_sequencer.frozen:
                _logger.warning(
                    "the Rekor v2 log %s is frozen: it refuses writes; a new log needs a new key "
                    "(sigstead keys retire-v2, docs/rekor-v2.md)",
                    v2_sequencer.origin,
                )
            app[REKOR_V2_RETIRED] = await _retired_v2_logs(settings, v2_store, v2_sequencer)
            app[DATABASE] = db
            app[WITNESSED_TREES] = (sequencer.tree_id, v2_sequencer.tree_id)
            app[REKOR_LOG] = RekorLog(sequencer=sequencer, store=store, signer=signer)
            app[REKOR_V2_LOG] = RekorV2Log(
                sequencer=v2_sequencer,
                store=v2_store,
                key_id=v2_signer.key_id,
                dsse=settings.rekor_v2_dsse,
            )
            _logger.info(
                "transparency logs ready: Rekor v1 tree %d at size %d, log ID %s; Rekor v2 %s "
                "at size %d, log ID %s",
                sequencer.tree_id,
                sequencer.head.size,
                signer.key_id.hex(),
                v2_sequencer.origin,
                v2_sequencer.head.size,
                v2_signer.key_id.hex(),
            )
            async with _witnessing(
                settings, db, (("rekor", sequencer), ("rekor-v2", v2_sequencer)), app[METRICS]
            ):
                try:
                    yield
                finally:
                    # Graceful shutdown: commit what is queued, then close the database.
                    await _stop(app, v2_sequencer)
                    await _stop(app, sequencer)
        finally:
            if database is None:
                await db.dispose()

    return ctx


async def _check_origin(store: SQLLogStore, sequencer: Sequencer) -> None:
    """Refuse to sign a tree's checkpoints under another origin than the one it has: the Rekor
    v2 origin is the host of ``--rekor-v2-url``, and a log whose host changed would sign what
    no verifier (cosign requires origin == host) nor witness (they know it by its origin)
    accepts. A new host is a new log: retire this one first.

    A log holding only its genesis entry has nothing anyone relies on (a deployment that never
    sent clients to v2), so moving the public URL moves it along."""
    stored = await store.read_origin(sequencer.tree_id)
    head = await store.read_head(sequencer.tree_id)
    if head is None or head.size <= 1:
        return
    if stored is not None and stored != sequencer.origin:
        raise OperatorError(
            f"the Rekor v2 log of keys/rekor-v2.pem has origin {stored!r}, and --rekor-v2-url "
            f"(or --public-url) now names {sequencer.origin!r}: a log keeps its host for life. "
            "Start with its URL, or freeze and retire it (sigstead keys retire-v2) for a new "
            "log on the new host (docs/rekor-v2.md)"
        )


async def _retired_v2_logs(
    settings: Settings, store: SQLLogStore, active: Sequencer
) -> dict[str, RekorV2Log]:
    """The retired v2 logs of ``keys/retired/`` by host, each checked: its tree exists under its
    host as origin, and its head is a final checkpoint signed by its key. Any mismatch stops the
    start: serving a log its trust material does not describe would fail every verifier."""
    out: dict[str, RekorV2Log] = {}
    for retired in retired_rekor_v2(settings.data_dir):
        what = f"retired Rekor v2 log {retired.url} (keys/retired/)"
        if retired.host == settings.rekor_v2_hostname or retired.tree_id == active.tree_id:
            raise OperatorError(
                f"{what} has the active log's host or key: give the active log its own "
                "--rekor-v2-url"
            )
        head = await store.read_head(retired.tree_id)
        origin = await store.read_origin(retired.tree_id)
        if head is None or origin != retired.host:
            raise OperatorError(f"{what}: the database holds no tree {retired.tree_id} for it")
        try:
            verify_checkpoint(head.checkpoint, retired.key.public_key, retired.host)
        except ValueError as exc:
            raise CorruptLog(f"{what}: its head does not verify: {exc}") from None
        if not is_frozen(head.checkpoint):
            raise CorruptLog(f"{what}: its head is not a final (frozen) checkpoint")
        out[retired.host] = RekorV2Log(
            sequencer=RetiredTree(store, retired.tree_id, head),
            store=store,
            key_id=retired.key.note_key_id(retired.host),
            dsse=settings.rekor_v2_dsse,
        )
        _logger.info(
            "retired Rekor v2 log %s: tree %d, frozen at size %d",
            origin,
            retired.tree_id,
            head.size,
        )
    return out


@contextlib.asynccontextmanager
async def _witnessing(
    settings: Settings,
    db: Database,
    logs: tuple[tuple[str, Sequencer], ...],
    metrics: Metrics,
) -> AsyncIterator[None]:
    """With ``--witness-policy``, one background task per log tree pushing its new checkpoints
    to the policy's witnesses (``services.log.witnessing``; fail-open: never stops the log)."""
    if settings.witness_policy is None:
        yield
        return
    policy = Policy.load(settings.witness_policy)
    clock = settings.clock or time.time
    store = WitnessingStore(db)
    async with aiohttp.ClientSession() as session:
        tasks = []
        for name, sequencer in logs:
            witnessing = Witnessing(
                log=name,
                tree_id=sequencer.tree_id,
                # Storage's head: with replicas on one database another may have gone further.
                head=sequencer.latest_head,
                proofs=sequencer.proofs,
                store=store,
                policy=policy,
                session=session,
                lag=metrics.witnessed_lag.labels(name).set,
            )
            await witnessing.load()
            tasks.append(
                asyncio.create_task(
                    witnessing.run(clock, settings.witness_interval), name=f"witnessing-{name}"
                )
            )
        _logger.info(
            "witnessing: %d witnesses, quorum %s", len(policy.witnesses), policy.quorum or "none"
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def _witnessed(request: web.Request, tree: int) -> str | None:
    if WITNESSED_TREES not in request.app or DATABASE not in request.app:
        raise web.HTTPServiceUnavailable()
    tree_id = request.app[WITNESSED_TREES][tree]
    stored = await WitnessingStore(request.app[DATABASE]).witnessed(tree_id)
    return None if stored is None else stored[1]


async def witnessed_v1(request: web.Request) -> web.Response:
    """GET /api/v1/log/checkpoint/witnessed: the Rekor v1 log's newest checkpoint cosigned by
    a quorum of its witnesses, cosignature lines appended (c2sp.org/tlog-cosignature)."""
    note = await _witnessed(request, 0)
    if note is None:
        return web.json_response(
            {"code": 404, "message": "no checkpoint cosigned by the witness quorum yet"},
            status=404,
        )
    return web.Response(text=note, content_type="text/plain", headers={"Cache-Control": "no-cache"})


async def witnessed_v2(request: web.Request) -> web.Response:
    """GET /api/v2/checkpoint.witnessed: the same for the Rekor v2 log."""
    note = await _witnessed(request, 1)
    if note is None:
        return web.Response(text="no checkpoint cosigned by the witness quorum yet\n", status=404)
    return web.Response(text=note, content_type="text/plain", headers={"Cache-Control": "no-cache"})


async def _check_first_entry(
    store: SQLLogStore, sequencer: Sequencer, signer: CheckpointSigner
) -> None:
    """Warn once at start-up when entry 0 is a client's: the log predates genesis entries.

    Its bundle, if sigstore-js wrote it while the tree had one entry, lacks the proto3 defaults
    sigstore-python requires; the warning names the repair (docs/genesis.md).
    """
    first = (await store.read_entries(sequencer.tree_id, [0]))[0]
    try:
        verify_genesis(first.leaf, signer.public_key, sequencer.origin)
    except GenesisMismatch as exc:
        _logger.warning(
            "entry 0 of this log is a client's, not the log's genesis entry (%s): the log "
            "predates genesis entries. A bundle for entry 0 written by sigstore-js may not "
            "verify in sigstore-python; `sigstead log repair-bundle FILE` writes out the "
            "fields it omitted (docs/genesis.md). Later entries are not affected.",
            exc,
        )


def _tsa_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        clock = settings.clock or time.time

        def now() -> datetime:
            return datetime.fromtimestamp(clock(), UTC)

        key, chain = tsa_keys.load_or_create(settings.data_dir / "tsa", now())
        app[TSA] = TimestampAuthority(key, chain)
        app[TSA_CLOCK] = now
        app[TSA_ISSUED] = app[METRICS].timestamps
        yield

    return ctx


CA_KEY_PASSWORD_ENV = "SIGSTEAD_CA_KEY_PASSWORD"  # noqa: S105 -- a variable name


def _load_ca(settings: Settings, now: datetime) -> ca_keys.CAKeyMaterial:
    """The CA key and chain the settings name (``check`` has vetted the combination);
    generated in the data directory if none."""
    if settings.ca_pkcs11 is not None:
        assert settings.ca_chain is not None
        return pkcs11_ca.load(settings.ca_pkcs11, settings.ca_chain, now)
    if settings.ca_key is not None:
        assert settings.ca_chain is not None
        password = ca_keys.read_secret(settings.ca_key_password_file, CA_KEY_PASSWORD_ENV)
        return ca_keys.load(settings.ca_key, settings.ca_chain, now, password=password)
    key_type = ca_keys.CAKeyType(settings.ca_key_type or CA_KEY_TYPES[0])
    return ca_keys.load_or_create(settings.data_dir, now, key_type=key_type)  # <data_dir>/ca/


def _ca_context(
    settings: Settings, config: FulcioConfig, database: Database | None, ct_app: web.Application
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The CA and its CT log (its own tree and key on the same engine and database)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        clock = settings.clock or time.time

        def now() -> datetime:
            return datetime.fromtimestamp(clock(), UTC)

        # Holds the CT log key and the default SQLite even when the CA key lives elsewhere.
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca = _load_ca(settings, now())
        db = database or Database(settings.resolved_database_url())
        verifier = TokenVerifier(config)
        try:
            await upgrade(db)
            sequencer, store, signer = _tree(
                settings,
                db,
                "ctlog.pem",
                "/ct",
                lambda _signer, _origin: lambda now: ct_genesis(ca.chain, now),
                metrics=(app[METRICS], "ct"),
            )
            await _start(app, sequencer, db, store, signer)
            ct_log = CTLog(sequencer=sequencer, store=store, signer=signer, roots=[ca.root])
            ct_app[CT_LOG] = ct_log
            issued = app[METRICS].certificates
            app[CA] = CertificateAuthority(
                config, verifier, ca, ct_log, now, lambda iss: issued.labels(iss).inc()
            )
            _logger.info(
                "CA ready: CT log tree %d, log ID %s", sequencer.tree_id, signer.key_id.hex()
            )
            try:
                yield
            finally:
                await _stop(app, sequencer)
        finally:
            await verifier.close()
            ca.close()
            if database is None:
                await db.dispose()

    return ctx


TUF_DIR = web.AppKey("tuf_dir", Path)
# How often the server re-checks its TUF metadata. Timestamp metadata lives a day and is
# re-signed with half of that left, so this only has to be well under twelve hours.
TUF_REFRESH_SECONDS = 600.0


def _trust_context(
    options: TrustOptions, settings: Settings, *, create_keys: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Publish the trust documents at start-up, then keep the TUF metadata from expiring.

    Without ``create_keys`` (``serve trust``) only public material is read: in the production
    layout this process is given no private key but its TUF keys (``trust.material``).
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        clock = settings.clock or time.time

        def refresh() -> None:
            now = datetime.fromtimestamp(clock(), UTC)
            publish(settings.data_dir, options, now, create_keys=create_keys)

        if settings.worker > 0:
            # One publisher per data directory: worker 0 of the pool, which started (and
            # published) before this one. The others serve the files it writes.
            app[TUF_DIR] = tuf_repository(settings.data_dir).repository
            yield
            return
        # Runs after the other contexts, which have created or loaded every key by now.
        await asyncio.to_thread(refresh)
        app[TUF_DIR] = tuf_repository(settings.data_dir).repository
        _logger.info(
            "publishing trust documents for %s at %s/tuf",
            describe_services(options.services),
            options.endpoints.base,
        )

        async def loop() -> None:
            while True:
                await asyncio.sleep(TUF_REFRESH_SECONDS)
                try:
                    await asyncio.to_thread(refresh)
                except Exception:
                    # Keep serving the last good publication; clients only fail at expiry.
                    _logger.exception("TUF refresh failed; will retry")

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return ctx


_TUF_PATH = re.compile(r"(?:targets/)?[A-Za-z0-9][A-Za-z0-9._-]*\.json")


async def tuf_file(request: web.Request) -> web.StreamResponse:
    """One file of the TUF repository: metadata or a consistent-snapshot target."""
    path = request.match_info["path"]
    if TUF_DIR not in request.app:
        raise web.HTTPServiceUnavailable()
    # A strict name pattern rather than path normalisation: nothing outside the repository,
    # and no dot-files (the atomic writer's temporaries), can ever match.
    if not _TUF_PATH.fullmatch(path):
        raise web.HTTPNotFound()
    file = request.app[TUF_DIR] / path
    if not file.is_file():
        raise web.HTTPNotFound()
    # Versioned names never change content; timestamp.json and root.json do.
    mutable = path in ("timestamp.json", "root.json")
    return web.FileResponse(
        file,
        headers={
            "Content-Type": "application/json",
            "Cache-Control": "no-cache" if mutable else "public, max-age=31536000, immutable",
        },
    )


async def healthz(request: web.Request) -> web.Response:
    """200 once the database answers and the log is sequencing."""
    app = request.app
    if DATABASE not in app or REKOR_LOG not in app:
        return web.json_response({"status": "starting"}, status=503)
    try:
        await app[DATABASE].read(lambda conn: conn.execute(text("SELECT 1")).scalar())
        app[REKOR_LOG].sequencer.head  # noqa: B018 -- raises if the sequencer stopped
    except Exception as exc:
        _logger.warning("health check failed: %r", exc)
        return web.json_response({"status": "unavailable"}, status=503)
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness, distinct from ``/healthz`` (alive and serving): 503 also while any of the
    process's logs is about to push submissions back, so a load balancer stops sending it
    writes until its queue drains, without the process being restarted."""
    health = await healthz(request)
    if health.status != 200:
        return health
    logs = [request.app[key].sequencer for key in (REKOR_LOG, REKOR_V2_LOG) if key in request.app]
    if any(s.saturated for s in logs):
        return web.json_response({"status": "saturated"}, status=503)
    return web.json_response({"status": "ready"})


def create_app(
    settings: Settings,
    *,
    database: Database | None = None,
    components: tuple[str, ...] | None = None,
    trust: TrustOptions | None = None,
) -> web.Application:
    """Build the application; the only constructor, used by ``sigstead up``/``serve`` and tests.

    ``components`` picks the services: by default every one the settings configure (what
    ``sigstead up`` runs), or one for ``sigstead serve NAME``; their paths are disjoint, so any
    subset shares one origin. Naming ``ca`` without an OIDC config is an error: a CA with no
    identity provider has nothing to serve. ``database`` lets a caller that owns a
    ``Database`` (the tests) share it; otherwise one is opened from the settings and closed on
    shutdown. ``trust`` is what the trust component publishes (``check_trust``'s result;
    default ``trust_options``).
    """
    if components is None:
        components = configured(settings)
    config = check(settings, components)
    limits = BodyLimits(max_body=settings.max_body, deadline=settings.body_timeout)
    # body_guard outermost: it answers its own refusals in each endpoint's error format, and
    # every handler and error mapper below it sees a body already read under its limit.
    # metrics outermost: it counts every answer, the guard's refusals included.
    app = web.Application(
        client_max_size=settings.max_body,
        middlewares=[metrics_middleware, body_guard(limits), error_middleware],
    )
    app[METRICS] = Metrics()
    app.router.add_get("/metrics", metrics_handler)
    if settings.clustered and ("log" in components or config is not None):
        app.cleanup_ctx.append(_cluster_context(settings))
    if "log" in components:
        app.cleanup_ctx.append(_log_context(settings, database))
        add_routes(app)
        add_v2_routes(app)
        app.router.add_get("/api/v1/log/checkpoint/witnessed", witnessed_v1)
        app.router.add_get("/api/v2/checkpoint.witnessed", witnessed_v2)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
    if config is not None:
        ct_app = add_ct_routes(app)
        app.cleanup_ctx.append(_ca_context(settings, config, database, ct_app))
        ca_routes(app)
    if "tsa" in components:
        app.cleanup_ctx.append(_tsa_context(settings))
        tsa_routes(app)
    if "trust" in components:
        # Last: the other contexts have created every key the trust documents describe.
        # Alone (``serve trust``) it creates no key: ``keys init`` has, and it reads public ones.
        options = trust if trust is not None else trust_options(settings, components)
        create_keys = components != ("trust",)
        app.cleanup_ctx.append(_trust_context(options, settings, create_keys=create_keys))
        app.router.add_get("/tuf/{path:.+}", tuf_file)
    served = {*components} - ({"ca"} if config is None else set())
    serve_openapi(app, served, settings.public_url)
    if "log" not in components:
        ready: list[web.AppKey[Any]] = []
        if "tsa" in components:
            ready.append(TSA)
        if config is not None:
            ready.append(CA)
        if "trust" in components:
            ready.append(TUF_DIR)
        app.router.add_get("/healthz", _started_healthz(tuple(ready)))
        # Without a log there is no queue to drain: ready once started.
        app.router.add_get("/readyz", _started_healthz(tuple(ready)))
    return app


def _started_healthz(
    keys: tuple[web.AppKey[Any], ...],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Health for a process without the log: 200 once every service in it has started."""

    async def handler(request: web.Request) -> web.Response:
        ready = all(key in request.app for key in keys)
        return web.json_response(
            {"status": "ok" if ready else "starting"}, status=200 if ready else 503
        )

    return handler
