"""A TUF repository of the trust documents, built with python-tuf, kept fresh by the server.

Layout (consistent snapshots, as sigstore-python's ``TrustUpdater``, sigstore-js's ``@sigstore/tuf``
and ``cosign initialize --mirror`` fetch it)::

    <dir>/repository/root.json                 latest root, for bootstrapping clients
    <dir>/repository/<N>.root.json             every root version (clients walk the chain)
    <dir>/repository/<N>.targets.json
    <dir>/repository/<N>.snapshot.json
    <dir>/repository/timestamp.json
    <dir>/repository/targets/<sha256>.<name>   trusted_root.json, signing_config.v0.2.json
    <dir>/keys/{root,targets,snapshot,timestamp}.pem   Ed25519, 0600

Crash safety: every file is written to a temporary name and renamed. Versioned files are written
before the file that points at them (targets → snapshot → timestamp), and ``timestamp.json`` is
renamed last: it is the commit point. A crash before it leaves only files no metadata refers to.

Concurrency: one ``flock`` on ``<dir>/.lock`` serialises publishers (``sigstead up``, ``sigstead
serve`` processes sharing a data directory, ``sigstead trust export``); each re-reads the
repository under the lock, so a publication is never based on stale metadata.

The root key: generated beside the online keys on first publication so that one command gives a
working repository. It is only needed again to re-sign ``root`` (yearly) or to rotate keys; the
operator may move ``keys/root.pem`` offline and bring it back for that (see docs/trust.md).
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import ed25519
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from services.errors import OperatorError
from services.keys import load_private_key, write_private_key

__all__ = ["EXPIRY", "ROLES", "Published", "TufError", "TufRepository", "write_atomic"]

_logger = logging.getLogger(__name__)

ROLES = ("root", "targets", "snapshot", "timestamp")

# How long each role's metadata stays valid. A role is re-signed once less than half of its
# period is left, so a server that is down for less than half a day never lets clients see an
# expired timestamp.
EXPIRY: dict[str, datetime.timedelta] = {
    "root": datetime.timedelta(days=365),
    "targets": datetime.timedelta(days=90),
    "snapshot": datetime.timedelta(days=7),
    "timestamp": datetime.timedelta(days=1),
}

_SERIALIZER = JSONSerializer(compact=False)
T = TypeVar("T", Root, Targets, Snapshot, Timestamp)


class TufError(OperatorError):
    """The repository cannot be published as asked (missing root key, foreign keys, …)."""


@dataclass(frozen=True, slots=True)
class Published:
    """What one ``publish`` call did."""

    root: int
    targets: int
    snapshot: int
    timestamp: int
    changed: tuple[str, ...]


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class TufRepository:
    """The repository under ``directory`` (normally ``<data_dir>/tuf``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.repository = directory / "repository"
        self.keys = directory / "keys"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the publishers' lock: nothing is published while it is held (a backup copies)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.directory / ".lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _signer(self, role: str) -> CryptoSigner:
        """The role's key, created on first use (0600, never rewritten)."""
        path = self.keys / f"{role}.pem"
        if not path.exists():
            write_private_key(path, ed25519.Ed25519PrivateKey.generate())
        return self._load_signer(path)

    def _offline_capable_signer(self, role: str) -> CryptoSigner | None:
        """The role's key if it is here; ``None`` if the operator has taken it offline."""
        path = self.keys / f"{role}.pem"
        return self._load_signer(path) if path.exists() else None

    @staticmethod
    def _load_signer(path: Path) -> CryptoSigner:
        key = load_private_key(path)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise TufError(f"{path}: TUF keys are Ed25519")
        return CryptoSigner(key)

    def _load(self, name: str, kind: type[T]) -> Metadata[T] | None:
        path = self.repository / name
        if not path.exists():
            return None
        md = Metadata[T].from_bytes(path.read_bytes())
        if not isinstance(md.signed, kind):
            raise TufError(f"{path}: not {kind.type} metadata")
        return md

    def _write(self, md: Metadata[Any], name: str) -> None:
        write_atomic(self.repository / name, md.to_bytes(_SERIALIZER))

    def root_json(self) -> bytes:
        """The latest root metadata: what a client is given once, out of band."""
        return (self.repository / "root.json").read_bytes()

    def publish(
        self,
        build: Callable[[Callable[[str], bytes | None]], Mapping[str, bytes]],
        now: datetime.datetime,
    ) -> Published:
        """Make the repository serve exactly the targets ``build`` returns, valid for a while.

        ``build`` is called under the lock with a reader of the currently published targets, so
        a document derived from its predecessor (the trusted root keeps published key start
        times) is never derived from a stale one. Idempotent: with unchanged targets and
        metadata far from expiry nothing is written, so it is safe on every start and
        periodically.
        """
        with self.locked():
            return self._publish(build(self._current_target), now)

    def _fresh(self, md: Metadata[Any] | None, now: datetime.datetime) -> bool:
        if md is None:
            return False
        role = md.signed.type
        left: datetime.timedelta = md.signed.expires - now
        return left > EXPIRY[role] / 2

    def _publish(self, wanted: Mapping[str, bytes], now: datetime.datetime) -> Published:
        online = {role: self._signer(role) for role in ROLES[1:]}
        changed: list[str] = []

        root_md = self._load("root.json", Root)
        if root_md is None:
            root_signer = self._signer("root")
            root = Root(expires=now + EXPIRY["root"], consistent_snapshot=True)
            root.add_key(root_signer.public_key, "root")
            for role, signer in online.items():
                root.add_key(signer.public_key, role)
            root_md = Metadata(root)
            root_md.sign(root_signer)
            changed.append("root")
        else:
            for role, signer in online.items():
                if signer.public_key.keyid not in root_md.signed.roles[role].keyids:
                    raise TufError(
                        f"keys/{role}.pem is not a {role} key of the published root; restore "
                        "the original key or re-sign the root with the new one"
                    )
            if not self._fresh(root_md, now):
                offline_root = self._offline_capable_signer("root")
                if offline_root is None:
                    # Not fatal: clients keep working until the root really expires.
                    _logger.warning(
                        "TUF root v%d expires %s and keys/root.pem is offline: bring it back "
                        "and the next refresh re-signs the root",
                        root_md.signed.version,
                        root_md.signed.expires.isoformat(),
                    )
                else:
                    root_md.signed.version += 1
                    root_md.signed.expires = now + EXPIRY["root"]
                    root_md.signatures.clear()
                    root_md.sign(offline_root)
                    changed.append("root")
        if "root" in changed:
            self._write(root_md, f"{root_md.signed.version}.root.json")
            self._write(root_md, "root.json")

        snapshot_md = self._load_versioned_snapshot()
        targets_md = (
            self._load(f"{snapshot_md.signed.meta['targets.json'].version}.targets.json", Targets)
            if snapshot_md is not None
            else None
        )
        want_files = {
            name: TargetFile.from_data(name, data, ["sha256"]) for name, data in wanted.items()
        }
        if (
            targets_md is None
            or targets_md.signed.targets != want_files
            or not self._fresh(targets_md, now)
        ):
            for name, data in wanted.items():
                digest = hashlib.sha256(data).hexdigest()
                write_atomic(self.repository / "targets" / f"{digest}.{name}", data)
            version = _next_version(targets_md, now)
            targets_md = Metadata(Targets(version=version, expires=now + EXPIRY["targets"]))
            targets_md.signed.targets = want_files
            targets_md.sign(online["targets"])
            self._write(targets_md, f"{version}.targets.json")
            changed.append("targets")

        if snapshot_md is None or "targets" in changed or not self._fresh(snapshot_md, now):
            version = _next_version(snapshot_md, now)
            snapshot_md = Metadata(Snapshot(version=version, expires=now + EXPIRY["snapshot"]))
            snapshot_md.signed.meta["targets.json"] = MetaFile(version=targets_md.signed.version)
            snapshot_md.sign(online["snapshot"])
            self._write(snapshot_md, f"{version}.snapshot.json")
            changed.append("snapshot")

        timestamp_md = self._load("timestamp.json", Timestamp)
        if timestamp_md is None or "snapshot" in changed or not self._fresh(timestamp_md, now):
            version = _next_version(timestamp_md, now)
            timestamp_md = Metadata(Timestamp(version=version, expires=now + EXPIRY["timestamp"]))
            timestamp_md.signed.snapshot_meta = MetaFile(version=snapshot_md.signed.version)
            timestamp_md.sign(online["timestamp"])
            # The commit point: until this rename, clients see the previous publication.
            self._write(timestamp_md, "timestamp.json")
            changed.append("timestamp")

        if changed:
            _logger.info("TUF repository: re-signed %s", ", ".join(changed))
        return Published(
            root=root_md.signed.version,
            targets=targets_md.signed.version,
            snapshot=snapshot_md.signed.version,
            timestamp=timestamp_md.signed.version,
            changed=tuple(changed),
        )

    def _load_versioned_snapshot(self) -> Metadata[Snapshot] | None:
        timestamp_md = self._load("timestamp.json", Timestamp)
        if timestamp_md is None:
            return None
        return self._load(f"{timestamp_md.signed.snapshot_meta.version}.snapshot.json", Snapshot)

    def published(self) -> Published | None:
        """The versions currently published (``changed`` empty), or ``None`` before the first."""
        if not (self.repository / "timestamp.json").exists():
            return None  # and without creating anything, as the lock would
        with self.locked():
            root_md = self._load("root.json", Root)
            timestamp_md = self._load("timestamp.json", Timestamp)
            snapshot_md = self._load_versioned_snapshot()
            if root_md is None or timestamp_md is None or snapshot_md is None:
                return None
            return Published(
                root=root_md.signed.version,
                targets=snapshot_md.signed.meta["targets.json"].version,
                snapshot=snapshot_md.signed.version,
                timestamp=timestamp_md.signed.version,
                changed=(),
            )

    def current_target(self, name: str) -> bytes | None:
        """The bytes currently published as target ``name``, if any."""
        with self.locked():
            return self._current_target(name)

    def _current_target(self, name: str) -> bytes | None:
        snapshot_md = self._load_versioned_snapshot()
        if snapshot_md is None:
            return None
        targets_md = self._load(
            f"{snapshot_md.signed.meta['targets.json'].version}.targets.json", Targets
        )
        if targets_md is None or name not in targets_md.signed.targets:
            return None
        digest = targets_md.signed.targets[name].hashes["sha256"]
        return (self.repository / "targets" / f"{digest}.{name}").read_bytes()

    def copy_to(self, destination: Path) -> None:
        """Copy the published repository (no keys) to ``destination``, e.g. for a static mirror."""
        with self.locked():
            shutil.copytree(
                self.repository,
                destination,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns(".*.tmp"),
            )


def _next_version(previous: Metadata[Any] | None, now: datetime.datetime) -> int:
    """The version of a re-signed targets, snapshot or timestamp role: never below the clock.

    TUF clients refuse a version lower than one they have seen (rollback protection). A
    repository restored from a backup would otherwise go back to the backup's versions and be
    refused until it had re-signed past them, half a day per missed timestamp version. With the
    clock (in seconds) as a floor, the first publication after any restore is newer than every
    earlier one, as long as no role was re-signed more than once a second before it; ``+ 1``
    keeps versions increasing when the clock stands still or goes back. The root keeps
    consecutive versions: clients walk ``N.root.json`` one by one.
    """
    floor = int(now.timestamp())
    return max(floor, previous.signed.version + 1) if previous is not None else floor
