"""The log side of witnessing: ask the witnesses of a policy to cosign each new checkpoint and
keep the newest one whose cosignatures satisfy the policy's quorum.

Protocols: c2sp.org/tlog-witness (``POST <url>/add-checkpoint``: ``old <size>``, a consistency
proof, a blank line, the signed checkpoint; 200 with cosignature lines, 409 with the witness's
size), c2sp.org/tlog-cosignature (``cosignature/v1`` Ed25519 lines). The policy file is Sigsum's
syntax (sigsum-go ``pkg/policy``)::

    witness NAME VKEY URL
    group NAME k|all|any MEMBER...
    quorum NAME|none

``VKEY`` is the witness's ``<name>+<hex key ID>+<base64>`` verifier key (``sigstead witness
init`` prints it); Sigsum's raw hex Ed25519 keys are refused, as they carry no key name to match
cosignature lines against. ``log`` lines (a Sigsum client's) are ignored.

Fail-open: a witness that is down or refuses never stops the log. The log keeps sequencing and
answering with immediate proofs; only the witnessed checkpoint lags, and each round that fails
to reach the quorum logs by how many entries it lags.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import re
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable

from services.db import Database
from services.log.checkpoint import FROZEN_LINE_PREFIX
from services.log.proofs import ProofBuilder
from services.log.schema import witness_sizes, witnessed_checkpoints
from services.log.sequencer import TreeHead
from services.witness.note import COSIGNATURE_V1, ED25519_COSIGNATURE

__all__ = [
    "CosignatureError",
    "Group",
    "Policy",
    "PolicyError",
    "PolicyWitness",
    "Round",
    "WitnessKey",
    "WitnessRefused",
    "Witnessing",
    "WitnessingStore",
]

_logger = logging.getLogger(__name__)

_EM_DASH = "\u2014"
_HEX8 = re.compile(r"[0-9a-f]{8}")
_NAME = re.compile(r"[^\s]+")
_SIZE = re.compile(r"0|[1-9][0-9]*")
# A cosignature dated further ahead than this is refused: the witness's clock is wrong, or the
# line was made to look fresher than it is.
MAX_FUTURE_SKEW = 600
# A witness answers a few cosignature lines (or a size, or one line saying why); more is not read.
MAX_ANSWER = 64 * 1024
DEFAULT_TIMEOUT = 10.0
MAX_BACKOFF = 300.0


class PolicyError(ValueError):
    """The witness policy file is malformed; the message names the line."""


class CosignatureError(Exception):
    """A witness's answer holds no valid cosignature by its configured key."""


class WitnessRefused(Exception):
    """A witness answered add-checkpoint with something other than a cosignature."""


@dataclass(frozen=True, slots=True)
class WitnessKey:
    """A witness's ``cosignature/v1`` Ed25519 verifier key (type 0x04)."""

    name: str
    key_id: bytes
    key: ed25519.Ed25519PublicKey
    vkey: str

    @classmethod
    def parse(cls, vkey: str) -> WitnessKey:
        """Parse a witness vkey; raise ``PolicyError`` unless well-formed with its true key ID."""
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise PolicyError(f"vkey {vkey[:80]!r}: want <name>+<hex key ID>+<base64 key>")
        name, hex_id, encoded = parts
        if not name or "+" in name:
            raise PolicyError(f"vkey {vkey[:80]!r}: empty key name")
        if not _HEX8.fullmatch(hex_id):
            raise PolicyError(f"vkey {vkey[:80]!r}: key ID {hex_id!r} is not 8 lowercase hex")
        try:
            material = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise PolicyError(f"vkey {name!r}: the key is not base64") from None
        if len(material) != 33 or material[0] != ED25519_COSIGNATURE:
            raise PolicyError(
                f"vkey {name!r}: want a witness's cosignature/v1 key (type 0x04 and 32 bytes)"
            )
        public = material[1:]
        want = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
        if bytes.fromhex(hex_id) != want:
            raise PolicyError(f"vkey {name!r}: key ID {hex_id} is not its key's ID {want.hex()}")
        return cls(name, want, ed25519.Ed25519PublicKey.from_public_bytes(public), vkey)

    def verify(self, text: str, answer: str, now: int) -> str:
        """Find this key's cosignature line of the checkpoint ``text`` in a witness's ``answer``
        and verify it; return the line. Raise ``CosignatureError`` if there is none, it does not
        verify, or it is dated more than ``MAX_FUTURE_SKEW`` seconds after ``now``."""
        for line in answer.split("\n"):
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != _EM_DASH or parts[1] != self.name:
                continue
            try:
                raw = base64.b64decode(parts[2], validate=True)
            except binascii.Error:
                raise CosignatureError(f"{self.name}: the cosignature is not base64") from None
            if raw[:4] != self.key_id:
                continue
            if len(raw) != 4 + 8 + 64:
                raise CosignatureError(f"{self.name}: the cosignature has {len(raw)} bytes")
            (timestamp,) = struct.unpack(">Q", raw[4:12])
            if timestamp > now + MAX_FUTURE_SKEW:
                raise CosignatureError(
                    f"{self.name}: the cosignature is dated {timestamp}, after now ({now})"
                )
            message = f"{COSIGNATURE_V1}\ntime {timestamp}\n{text}".encode()
            try:
                self.key.verify(raw[12:], message)
            except InvalidSignature:
                raise CosignatureError(f"{self.name}: the cosignature does not verify") from None
            return line + "\n"
        raise CosignatureError(
            f"{self.name}: no cosignature by {self.name}+{self.key_id.hex()} in the answer"
        )


@dataclass(frozen=True, slots=True)
class PolicyWitness:
    """One ``witness`` line."""

    name: str
    key: WitnessKey
    url: str


@dataclass(frozen=True, slots=True)
class Group:
    """One ``group`` line: satisfied when ``threshold`` of ``members`` are."""

    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed witness policy."""

    witnesses: Mapping[str, PolicyWitness]
    groups: Mapping[str, Group]
    quorum: str | None

    @classmethod
    def parse(cls, text: str, source: str = "policy") -> Policy:
        """Parse Sigsum policy syntax; raise ``PolicyError`` naming ``source`` and the line."""
        witnesses: dict[str, PolicyWitness] = {}
        groups: dict[str, Group] = {}
        quorum: str | None = None
        seen_quorum = False
        for number, raw in enumerate(text.splitlines(), 1):
            where = f"{source}:{number}"
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            keyword, *args = line.split()
            if keyword == "log":
                continue  # a Sigsum client's log key: not this log's business
            if keyword == "witness":
                if len(args) != 3:
                    raise PolicyError(f"{where}: want 'witness NAME VKEY URL'")
                name, vkey, url = args
                _new_name(where, name, witnesses, groups)
                if re.fullmatch(r"[0-9a-fA-F]{64}", vkey):
                    raise PolicyError(
                        f"{where}: witness {name}: a raw hex key has no key name to match "
                        "cosignatures by; give the witness's vkey (name+id+base64)"
                    )
                try:
                    key = WitnessKey.parse(vkey)
                except PolicyError as exc:
                    raise PolicyError(f"{where}: witness {name}: {exc}") from None
                if not url.startswith(("http://", "https://")):
                    raise PolicyError(f"{where}: witness {name}: URL {url!r} is not http(s)")
                witnesses[name] = PolicyWitness(name, key, url.rstrip("/"))
            elif keyword == "group":
                if len(args) < 3:
                    raise PolicyError(f"{where}: want 'group NAME k|all|any MEMBER...'")
                name, threshold_text, *members = args
                _new_name(where, name, witnesses, groups)
                for member in members:
                    if member not in witnesses and member not in groups:
                        raise PolicyError(f"{where}: group {name}: {member!r} is not defined above")
                if len(set(members)) != len(members):
                    raise PolicyError(f"{where}: group {name}: a member is listed twice")
                if threshold_text == "all":
                    threshold = len(members)
                elif threshold_text == "any":
                    threshold = 1
                elif _SIZE.fullmatch(threshold_text) and 1 <= int(threshold_text) <= len(members):
                    threshold = int(threshold_text)
                else:
                    raise PolicyError(
                        f"{where}: group {name}: threshold {threshold_text!r} is not 'all', "
                        f"'any' or a number from 1 to {len(members)}"
                    )
                groups[name] = Group(name, threshold, tuple(members))
            elif keyword == "quorum":
                if len(args) != 1:
                    raise PolicyError(f"{where}: want 'quorum NAME|none'")
                if seen_quorum:
                    raise PolicyError(f"{where}: a second quorum line")
                seen_quorum = True
                if args[0] != "none":
                    if args[0] not in witnesses and args[0] not in groups:
                        raise PolicyError(f"{where}: quorum {args[0]!r} is not defined above")
                    quorum = args[0]
            else:
                raise PolicyError(
                    f"{where}: unknown keyword {keyword!r} (want witness, group, quorum or log)"
                )
        if not seen_quorum:
            raise PolicyError(f"{source}: no 'quorum NAME|none' line")
        if not witnesses:
            raise PolicyError(f"{source}: no witness")
        return cls(witnesses, groups, quorum)

    @classmethod
    def load(cls, path: Path) -> Policy:
        """Read and parse a policy file."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"--witness-policy {path}: {exc}") from None
        return cls.parse(text, str(path))

    def satisfied(self, cosigned: frozenset[str]) -> bool:
        """Whether the witnesses named in ``cosigned`` satisfy the quorum."""
        if self.quorum is None:
            return True
        return self._met(self.quorum, cosigned)

    def _met(self, name: str, cosigned: frozenset[str]) -> bool:
        if name in self.witnesses:
            return name in cosigned
        group = self.groups[name]
        return sum(self._met(m, cosigned) for m in group.members) >= group.threshold


def _new_name(
    where: str, name: str, witnesses: Mapping[str, object], groups: Mapping[str, object]
) -> None:
    if name == "none":
        raise PolicyError(f"{where}: 'none' is reserved")
    if name in witnesses or name in groups:
        raise PolicyError(f"{where}: {name!r} is already defined")


def _upsert(dialect: str, table: str) -> Executable:
    """INSERT … ON CONFLICT DO UPDATE that never moves a size backwards (two replicas pushing
    at once, or a slow round finishing after a faster one)."""
    t = witness_sizes if table == "sizes" else witnessed_checkpoints
    keys = (
        [witness_sizes.c.tree_id, witness_sizes.c.witness]
        if table == "sizes"
        else [witnessed_checkpoints.c.tree_id]
    )
    guard = t.c.size < literal_column("excluded.size")
    if table != "sizes":
        # A frozen log's final checkpoint replaces the witnessed one of its size (never the
        # other way round: a slower replica's round for the same head comes after it).
        guard = guard | (
            (t.c.size == literal_column("excluded.size"))
            & literal_column("excluded.checkpoint").like(f"%\n{FROZEN_LINE_PREFIX}%")
        )
    if dialect == "sqlite":
        lite = sqlite.insert(t)
        set_ = {c.name: lite.excluded[c.name] for c in t.c if c not in keys}
        return lite.on_conflict_do_update(index_elements=keys, set_=set_, where=guard)
    if dialect == "postgresql":
        pg = postgresql.insert(t)
        set_ = {c.name: pg.excluded[c.name] for c in t.c if c not in keys}
        return pg.on_conflict_do_update(index_elements=keys, set_=set_, where=guard)
    raise ValueError(f"unsupported database dialect {dialect!r}")


class WitnessingStore:
    """The witnesses' sizes and the witnessed checkpoint, in the log's database."""

    __slots__ = ("_db",)

    def __init__(self, db: Database) -> None:
        self._db = db

    async def sizes(self, tree_id: int) -> dict[str, int]:
        """Per witness vkey, the latest size it cosigned for this tree."""

        def run(conn: Connection) -> dict[str, int]:
            rows = conn.execute(
                select(witness_sizes.c.witness, witness_sizes.c.size).where(
                    witness_sizes.c.tree_id == tree_id
                )
            )
            return {str(w): int(s) for w, s in rows}

        return await self._db.read(run)

    async def save_size(self, tree_id: int, vkey: str, size: int) -> None:
        """Remember that the witness ``vkey`` has cosigned ``size`` (never moves backwards)."""

        def run(conn: Connection) -> None:
            conn.execute(
                _upsert(conn.dialect.name, "sizes"),
                {"tree_id": tree_id, "witness": vkey, "size": size},
            )

        await self._db.write(run)

    async def witnessed(self, tree_id: int) -> tuple[int, str] | None:
        """The newest quorum-cosigned checkpoint of the tree (size, note), if any."""

        def run(conn: Connection) -> tuple[int, str] | None:
            row = conn.execute(
                select(witnessed_checkpoints.c.size, witnessed_checkpoints.c.checkpoint).where(
                    witnessed_checkpoints.c.tree_id == tree_id
                )
            ).first()
            return None if row is None else (int(row[0]), str(row[1]))

        return await self._db.read(run)

    async def save_witnessed(self, tree_id: int, size: int, note: str) -> None:
        """Store a quorum-cosigned checkpoint unless a larger one is already stored."""

        def run(conn: Connection) -> None:
            conn.execute(
                _upsert(conn.dialect.name, "witnessed"),
                {"tree_id": tree_id, "size": size, "checkpoint": note},
            )

        await self._db.write(run)


@dataclass(frozen=True, slots=True)
class Round:
    """What one push of a checkpoint to the witnesses gave."""

    size: int
    cosigned: tuple[str, ...]
    failures: Mapping[str, str]
    quorum: bool
    witnessed_size: int | None


class Witnessing:
    """Pushes one log tree's checkpoints to a policy's witnesses (fail-open)."""

    def __init__(
        self,
        *,
        log: str,
        tree_id: int,
        head: Callable[[], Awaitable[TreeHead]],
        proofs: ProofBuilder,
        store: WitnessingStore,
        policy: Policy,
        session: aiohttp.ClientSession,
        timeout: float = DEFAULT_TIMEOUT,
        lag: Callable[[int], None] | None = None,
    ) -> None:
        self.log = log
        self.tree_id = tree_id
        self._head = head
        self._proofs = proofs
        self._store = store
        self.policy = policy
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._sizes: dict[str, int] = {}
        # The checkpoint last pushed: its text, as a frozen log re-signs its head at one size.
        self._pushed: str | None = None
        self._lag = lag
        self.witnessed_size: int | None = None

    async def load(self) -> None:
        """Read the remembered sizes and witnessed checkpoint (a restart resumes from them)."""
        self._sizes = await self._store.sizes(self.tree_id)
        stored = await self._store.witnessed(self.tree_id)
        self.witnessed_size = None if stored is None else stored[0]

    def size_of(self, witness: str) -> int:
        """The latest size ``witness`` (a policy name) cosigned, 0 if none."""
        return self._sizes.get(self.policy.witnesses[witness].key.vkey, 0)

    async def step(self, now: int) -> Round | None:
        """Push the current head if it has moved since the last push, or if the witnessed
        checkpoint lags it (retrying the witnesses that failed); None when there was nothing
        to do."""
        head = await self._head()
        if head.checkpoint == self._pushed and head.size == self.witnessed_size:
            return None
        # Log replicas share the store: when another has had this head (or a later one)
        # cosigned to the quorum, asking the witnesses again is only load on them. At equal
        # size only the same checkpoint counts: a frozen log's final one must be cosigned too,
        # so that witnesses and monitors learn the log ended there.
        stored = await self._store.witnessed(self.tree_id)
        if stored is not None and (
            stored[0] > head.size
            or (stored[0] == head.size and stored[1].startswith(head.checkpoint))
        ):
            self._pushed = head.checkpoint
            self.witnessed_size = stored[0]
            if self._lag is not None:
                self._lag(head.size - stored[0])
            return None
        return await self.push(head, now)

    async def push(self, head: TreeHead, now: int) -> Round:
        """Ask every witness to cosign ``head``; store it if the cosignatures meet the quorum.

        Never raises for a witness's failure: each is logged and reported in the ``Round``."""
        self._pushed = head.checkpoint
        names = list(self.policy.witnesses)
        results = await asyncio.gather(
            *(self._one(self.policy.witnesses[n], head, now) for n in names),
            return_exceptions=True,
        )
        lines: dict[str, str] = {}
        failures: dict[str, str] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, str):
                lines[name] = result
            elif isinstance(result, Exception):
                failures[name] = str(result) or type(result).__name__
                _logger.warning(
                    "witnessing %s: witness %s did not cosign size %d: %s",
                    self.log,
                    name,
                    head.size,
                    failures[name],
                )
            else:
                raise result
        quorum = self.policy.satisfied(frozenset(lines))
        if quorum and (self.witnessed_size is None or head.size >= self.witnessed_size):
            note = head.checkpoint + "".join(lines[n] for n in names if n in lines)
            await self._store.save_witnessed(self.tree_id, head.size, note)
            self.witnessed_size = head.size
        elif not quorum:
            behind = head.size - (self.witnessed_size or 0)
            _logger.warning(
                "witnessing %s: size %d lacks the quorum (%d of %d witnesses cosigned); the "
                "witnessed checkpoint (size %s) lags the log by %d entries",
                self.log,
                head.size,
                len(lines),
                len(names),
                self.witnessed_size,
                behind,
            )
        if self._lag is not None:
            self._lag(head.size - (self.witnessed_size or 0))
        return Round(head.size, tuple(lines), failures, quorum, self.witnessed_size)

    async def _one(self, witness: PolicyWitness, head: TreeHead, now: int) -> str:
        text = head.checkpoint.partition("\n\n")[0] + "\n"
        old = self._sizes.get(witness.key.vkey, 0)
        for attempt in range(2):
            if old > head.size:
                raise WitnessRefused(
                    f"the witness holds size {old}, beyond this log's {head.size}: the log "
                    "was rolled back, or the witness saw a fork"
                )
            proof = await self._proofs.consistency(old, head.size) if old > 0 else []
            body = (
                f"old {old}\n"
                + "".join(f"{base64.b64encode(h).decode()}\n" for h in proof)
                + f"\n{head.checkpoint}"
            )
            # No redirects: the policy names where the witness is, and a POST must not wander.
            async with self._session.post(
                f"{witness.url}/add-checkpoint",
                data=body.encode(),
                timeout=self._timeout,
                allow_redirects=False,
            ) as reply:
                answer = (await reply.content.read(MAX_ANSWER)).decode("utf-8", "replace")
                status = reply.status
            if status == 200:
                line = witness.key.verify(text, answer, now)
                await self._store.save_size(self.tree_id, witness.key.vkey, head.size)
                self._sizes[witness.key.vkey] = head.size
                return line
            if status == 409 and attempt == 0:
                size_text = answer.strip()
                if not _SIZE.fullmatch(size_text):
                    raise WitnessRefused(f"409 without a size: {answer[:100]!r}")
                old = int(size_text)
                continue
            raise WitnessRefused(f"HTTP {status}: {answer.strip()[:200]}")
        raise AssertionError("unreachable")  # the second attempt returns or raises

    async def run(self, clock: Callable[[], float], interval: float) -> None:
        """Push whenever the head moves, checking every ``interval`` seconds, until cancelled.

        A round that misses the quorum doubles the wait (up to ``MAX_BACKOFF``): a witness
        that is down, or not configured for this log, is not asked every few seconds."""
        delay = interval
        while True:
            try:
                result = await self.step(int(clock()))
            except Exception:
                # Fail-open: a broken round (the database unreachable, say) is retried.
                _logger.exception("witnessing %s: round failed; will retry", self.log)
                delay = min(max(delay, interval) * 2, MAX_BACKOFF)
            else:
                if result is not None and not result.quorum:
                    delay = min(max(delay, interval) * 2, MAX_BACKOFF)
                elif result is not None:
                    delay = interval
            await asyncio.sleep(delay)
