"""``sigstead monitor``: an auditor's long-running watch over a deployment's Rekor logs.

For each Rekor log of the trusted root (v1 and v2), over the public read APIs only:

- the new checkpoint's signature is verified under the log key of the trusted root;
- every entry since the last verified checkpoint is read (v1: with its index, log ID, UUID and
  SET checked; v2: from the entry bundles), hashed into the compact range kept from the last
  run, and the result must be the new checkpoint's root. That one comparison proves both that
  the new tree extends the old one and that every entry read is in it, with no proof requested:
  the log cannot show the monitor entries other than the ones it committed to;
- each entry is matched against a watch list (certificate identity and issuer, exact or regex;
  Fulcio OIDC extensions; public-key fingerprints; artifact and subject digests).

State (per log: size, compact range, origin) is a JSON file written atomically, so a restart
resumes where the last verified checkpoint left off; a new monitor reads each log from entry 0.
Events are JSON lines on stdout (and POSTed to a webhook): ``match``, ``alarm`` (the log
misbehaved: a bad signature, a checkpoint that does not extend the last one, a log that shrank,
another origin) and ``error`` (the log could not be read). ``--once`` exits 0 (nothing), 1
(matches), 2 (an alarm) or 3 (a log could not be checked).

What a leaf cannot show: the in-toto subjects of DSSE-kind entries (Rekor keeps only the
payload hash), so ``digests`` match their payload and envelope hashes, not their subjects.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import yaml
from cryptography import x509

from clients.merkle import ProofVerificationError, verify_consistency
from clients.rekor import SignedCheckpoint, VerificationFailed
from services.audit.fsck import Divergence
from services.audit.index import UnreadableEntry, rekor_v1_keys, rekor_v2_keys
from services.audit.remote import (
    Reader,
    RemoteLog,
    VerifiedHead,
    consistency_proof,
    ct_certificate,
    ct_entries,
    ct_head,
    rekor_v1_entries,
    rekor_v1_head,
    rekor_v2_entries,
    rekor_v2_head,
    rekor_v2_range,
)
from services.errors import OperatorError
from services.log import merkle
from services.log.rekor._go import GoDecodeError, b64decode_std
from services.log.rekor.keys import MaterialError, VerificationMaterial, parse_material
from services.log.rekor.searchkeys import is_material_key
from services.log.witnessing import CosignatureError, WitnessKey

__all__ = ["Monitor", "WatchList", "load_watchlist"]

ISSUER_V2_OID = "1.3.6.1.4.1.57264.1.8"  # DER UTF8String
ISSUER_V1_OID = "1.3.6.1.4.1.57264.1.1"  # raw string (deprecated, still issued)

Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    exact: str | None = None
    pattern: re.Pattern[str] | None = None

    def matches(self, values: Iterable[str]) -> list[str]:
        return [
            v
            for v in values
            if (self.exact is not None and v == self.exact)
            or (self.pattern is not None and self.pattern.fullmatch(v))
        ]


@dataclass(frozen=True, slots=True)
class _Identity:
    subject: _Rule
    issuer: _Rule | None


@dataclass(frozen=True, slots=True)
class WatchList:
    """What to report: identities (SAN and issuer), extensions, key fingerprints, digests."""

    identities: tuple[_Identity, ...] = ()
    extensions: tuple[tuple[str, _Rule], ...] = ()
    keys: frozenset[str] = frozenset()
    digests: frozenset[str] = frozenset()


def _rule(entry: Mapping[str, Any], name: str, what: str) -> _Rule | None:
    exact, regex = entry.get(name), entry.get(f"{name}_regex")
    if exact is None and regex is None:
        return None
    if exact is not None and not isinstance(exact, str):
        raise OperatorError(f"{what}: {name} must be a string")
    try:
        pattern = None if regex is None else re.compile(str(regex))
    except re.error as exc:
        raise OperatorError(f"{what}: {name}_regex: {exc}") from None
    return _Rule(name, exact, pattern)


def load_watchlist(path: Path) -> WatchList:
    """Read a watch list (YAML or JSON); raise ``OperatorError`` naming what is wrong.

    ::

        identities:            # certificate SANs (email, URI, ...), optionally with the issuer
          - subject: alice@example.com
            issuer: https://accounts.example.com
          - subject_regex: https://github\\.com/acme/.*
        extensions:            # Fulcio OIDC extensions by OID, e.g. the source repository
          - oid: 1.3.6.1.4.1.57264.1.12
            value: https://github.com/acme/app
        keys: [<hex SHA-256 of a DER SubjectPublicKeyInfo>]
        digests: [sha256:<hex>]
    """
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise OperatorError(f"--config {path}: {exc}") from None
    if not isinstance(document, dict):
        raise OperatorError(f"--config {path}: want a mapping")
    identities = []
    for i, entry in enumerate(document.get("identities") or []):
        what = f"--config {path}: identities[{i}]"
        subject = _rule(entry, "subject", what) if isinstance(entry, dict) else None
        if subject is None:
            raise OperatorError(f"{what}: needs subject or subject_regex")
        identities.append(_Identity(subject, _rule(entry, "issuer", what)))
    extensions = []
    for i, entry in enumerate(document.get("extensions") or []):
        what = f"--config {path}: extensions[{i}]"
        rule = _rule(entry, "value", what) if isinstance(entry, dict) else None
        if rule is None or not re.fullmatch(r"[0-9]+(\.[0-9]+)+", str(entry.get("oid", ""))):
            raise OperatorError(f"{what}: needs an oid and a value or value_regex")
        extensions.append((str(entry["oid"]), rule))
    keys = frozenset(str(k).lower() for k in document.get("keys") or [])
    digests = frozenset(str(d).lower() for d in document.get("digests") or [])
    for digest in digests:
        if ":" not in digest:
            raise OperatorError(f"--config {path}: digest {digest!r} needs its algorithm: sha256:")
    return WatchList(tuple(identities), tuple(extensions), keys, digests)


def _extension_text(value: bytes) -> str:
    # Fulcio's newer extensions are DER UTF8Strings; the 1.1-1.6 ones are the raw string.
    if len(value) >= 2 and value[0] == 0x0C and value[1] == len(value) - 2:
        return value[2:].decode("utf-8", "replace")
    return value.decode("utf-8", "replace")


def _extensions(cert: x509.Certificate) -> dict[str, str]:
    out = {}
    for ext in cert.extensions:
        if isinstance(ext.value, x509.UnrecognizedExtension):
            out[ext.oid.dotted_string] = _extension_text(ext.value.value)
    return out


def _pem_materials(kind: str, leaf: bytes) -> list[VerificationMaterial]:
    """The verification material a stored leaf holds (keys and certificates)."""
    try:
        document = json.loads(leaf)
        raw: list[bytes] = []
        spec = document["spec"]
        if kind == "rekor-v1":
            if document.get("kind") == "hashedrekord":
                raw.append(b64decode_std(spec["signature"]["publicKey"]["content"]))
            elif document.get("kind") == "dsse":
                raw += [b64decode_std(s["verifier"]) for s in spec["signatures"]]
            elif document.get("apiVersion") == "0.0.2":
                signatures = spec["content"]["envelope"]["signatures"]
                raw += [b64decode_std(s["publicKey"]) for s in signatures]
            else:
                raw.append(b64decode_std(spec["publicKey"]))
            return [parse_material(r) for r in raw]
        verifiers = (
            [spec["hashedRekordV002"]["signature"]["verifier"]]
            if "hashedRekordV002" in spec
            else [s["verifier"] for s in spec["dsseV002"]["signatures"]]
        )
        out = []
        for verifier in verifiers:
            for name, pem in (("x509Certificate", "CERTIFICATE"), ("publicKey", "PUBLIC KEY")):
                if name in verifier:
                    der = base64.b64decode(verifier[name]["rawBytes"])
                    body = base64.encodebytes(der).decode()
                    text = f"-----BEGIN {pem}-----\n{body}-----END {pem}-----\n"
                    out.append(parse_material(text.encode()))
        return out
    except (KeyError, TypeError, ValueError, binascii.Error, GoDecodeError, MaterialError) as exc:
        raise UnreadableEntry(f"verification material: {exc}") from None


def match_certificate(watch: WatchList, der: bytes) -> list[Event]:
    """What of ``watch`` a certificate the CA issued (a CT log's entry) holds: its identity and
    issuer, extension values, and its key; raise ``UnreadableEntry``."""
    body = base64.encodebytes(der).decode()
    try:
        material = parse_material(
            f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n".encode()
        )
    except MaterialError as exc:
        raise UnreadableEntry(f"certificate: {exc}") from None
    return _material_events(watch, [material])


def match(watch: WatchList, kind: str, leaf: bytes) -> list[Event]:
    """What of ``watch`` the entry ``leaf`` of a ``kind`` log holds; raise ``UnreadableEntry``."""
    keys = (rekor_v1_keys if kind == "rekor-v1" else rekor_v2_keys)(leaf).keys
    digests = sorted(k for k in keys if not is_material_key(k))
    found: list[Event] = []
    for digest in digests:
        if digest in watch.digests:
            found.append({"rule": "digest", "digest": digest})
    wanted = watch.identities or watch.extensions or watch.keys
    return found + (_material_events(watch, _pem_materials(kind, leaf)) if wanted else [])


def _material_events(watch: WatchList, materials: Iterable[VerificationMaterial]) -> list[Event]:
    found: list[Event] = []
    for material in materials:
        if material.spki_sha256 in watch.keys:
            found.append({"rule": "key", "key": material.spki_sha256})
        if not material.certificates:
            continue
        cert = material.certificates[0]
        sans = sorted(material.identities().all())
        extensions = _extensions(cert)
        issuer = extensions.get(ISSUER_V2_OID) or extensions.get(ISSUER_V1_OID)
        for identity in watch.identities:
            subjects = identity.subject.matches(sans)
            if not subjects:
                continue
            if identity.issuer is not None and not identity.issuer.matches([issuer or ""]):
                continue
            found.append({"rule": "identity", "subject": subjects[0], "issuer": issuer})
        for oid, rule in watch.extensions:
            value = extensions.get(oid)
            if value is not None and rule.matches([value]):
                found.append({"rule": "extension", "oid": oid, "value": value})
    return found


async def _one_history(
    mine: Reader, theirs: Reader, ours: _LogState, head: VerifiedHead, who: str
) -> None:
    """Raise ``Divergence`` unless ``head`` and the verified state are one history: equal
    roots at equal sizes, else a consistency proof from the larger side (``mine`` when ours is
    larger, else ``theirs``), checked against both signed roots, so a log showing two
    histories cannot produce one that verifies."""
    root = ours.range().root()
    if head.size == ours.size:
        if head.root != root:
            raise Divergence(
                f"split view: {who} size {head.size} with root {head.root.hex()}, "
                f"{mine.log.url} showed {root.hex()}"
            )
        return
    small, large = sorted(((ours.size, root), (head.size, head.root)))
    prover = mine if ours.size > head.size else theirs
    try:
        proof = await consistency_proof(prover, small[0], large[0])
        verify_consistency(small[0], large[0], proof, small[1], large[1])
    except (Divergence, ProofVerificationError) as exc:
        raise Divergence(
            f"split view: {who} size {head.size} (root {head.root.hex()}), {mine.log.url} "
            f"size {ours.size} (root {root.hex()}), and they are not one history ({exc})"
        ) from None


async def _head(reader: Reader) -> VerifiedHead:
    log = reader.log
    if log.kind == "ct":
        return await ct_head(reader)
    cp = await (rekor_v1_head(reader) if log.kind == "rekor-v1" else rekor_v2_head(reader))
    return VerifiedHead(cp.origin, cp.size, cp.root)


async def _entries(
    reader: Reader, start: int, end: int
) -> AsyncIterator[tuple[int, bytes, int, Callable[[WatchList], list[Event]]]]:
    """(index, leaf, integrated time or 0, what the entry holds of a watch list) for entries
    ``[start, end)`` of any of the logs."""
    kind = reader.log.kind
    if kind == "ct":
        async for index, leaf, extra in ct_entries(reader, start, end):
            stamp, der = ct_certificate(leaf, extra, f"{reader.what}: entry {index}")
            yield index, leaf, stamp // 1000, functools.partial(match_certificate, der=der)
        return
    entries = rekor_v1_entries if kind == "rekor-v1" else rekor_v2_entries
    async for index, leaf, integrated_time in entries(reader, start, end):
        yield index, leaf, integrated_time, functools.partial(match, kind=kind, leaf=leaf)


async def _range_at(reader: Reader, size: int) -> merkle.CompactRange:
    """The compact range of the log's first ``size`` entries, to start from a head without
    reading history: Rekor v2's from its tiles; Rekor v1's and CT's from the last leaf and its
    inclusion proof (the proof's left siblings). The caller compares its root with the signed
    head's, which is what makes it trustworthy."""
    kind, last = reader.log.kind, size - 1
    try:
        if kind == "rekor-v2":
            return await rekor_v2_range(reader, size)
        if kind == "rekor-v1":
            reply = await reader.json(f"/api/v1/log/entries?logIndex={last}")
            ((_, entry),) = reply.items()
            leaf = base64.b64decode(entry["body"], validate=True)
            proof = entry["verification"]["inclusionProof"]
            hashes = [bytes.fromhex(h) for h in proof["hashes"]]
            tree_size = int(proof["treeSize"])
        else:
            reply = await reader.json(f"/v1/get-entries?start={last}&end={last}")
            leaf = base64.b64decode(reply["entries"][0]["leaf_input"], validate=True)
            leaf_hash = base64.b64encode(merkle.hash_leaf(leaf)).decode()
            query = urlencode({"hash": leaf_hash, "tree_size": size})
            proof = await reader.json(f"/v1/get-proof-by-hash?{query}")
            hashes = [base64.b64decode(h, validate=True) for h in proof["audit_path"]]
            tree_size = size
        return merkle.CompactRange.from_inclusion(last, tree_size, hashes, merkle.hash_leaf(leaf))
    except (KeyError, TypeError, ValueError, IndexError, binascii.Error) as exc:
        raise Divergence(
            f"{reader.what}: cannot start from its head of size {size} ({exc})"
        ) from None


@dataclass
class _LogState:
    origin: str
    size: int
    hashes: list[str]

    def range(self) -> merkle.CompactRange:
        return merkle.CompactRange(self.size, [bytes.fromhex(h) for h in self.hashes])


@dataclass
class Monitor:
    """Checks ``logs`` against their last verified state and a watch list, emitting events."""

    logs: Sequence[RemoteLog]
    watch: WatchList
    state_path: Path
    emit: Callable[[Event], None]
    # Base URLs where the same deployment is seen from elsewhere (a mirror, another network
    # path, a colleague's proxy): each log's heads there must be consistent with this one's
    # (Rekor v1 by its proof endpoint, v2 by proofs built from its tiles).
    peers: Sequence[str] = ()
    # A log with no verified state starts at its current head instead of entry 0: history is
    # not read (nor matched), only what is appended from now on.
    from_now: bool = False
    # Witnesses whose cosignatures the log's witnessed checkpoint must carry, and how many.
    witnesses: Sequence[WitnessKey] = ()
    quorum: int = 0
    clock: Callable[[], float] = time.time
    state: dict[str, _LogState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            document = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise OperatorError(f"--state {self.state_path}: {exc}") from None
        for name, value in document.get("logs", {}).items():
            self.state[name] = _LogState(value["origin"], value["size"], list(value["hashes"]))

    def _save(self) -> None:
        document = {"version": 1, "logs": {k: vars(v) for k, v in self.state.items()}}
        folder = self.state_path.parent
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".monitor-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(document, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.state_path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    async def check(self, session: aiohttp.ClientSession) -> tuple[int, int, int]:
        """One pass over every log: (matches, alarms, errors)."""
        counts = [0, 0, 0]
        for log in self.logs:
            name = f"{log.kind} {log.url}"
            try:
                counts[0] += await self._check_log(Reader(session, log), name)
                for peer in self.peers:
                    await self._compare(session, log, peer, self.state[name])
                if self.witnesses and log.kind != "ct":  # the CT log serves no cosigned STH
                    await self._witnessed(session, log, self.state[name])
            except Divergence as exc:
                counts[1] += 1
                self.emit({"type": "alarm", "log": name, "message": str(exc)})
            except OperatorError as exc:
                counts[2] += 1
                self.emit({"type": "error", "log": name, "message": str(exc)})
        self._save()
        return counts[0], counts[1], counts[2]

    async def _compare(
        self, session: aiohttp.ClientSession, log: RemoteLog, peer: str, ours: _LogState
    ) -> None:
        """Split-view detection: the peer's signed head and ours must be one history."""
        # A v2 log is asked for by its own host, whatever address the peer is: one server may
        # serve several v2 logs, each by its name (a retired log keeps its host).
        host = (log.host or urlsplit(log.url).netloc) if log.kind == "rekor-v2" else None
        view = RemoteLog(log.kind, peer.rstrip("/"), log.key, log.log_id, host)
        theirs = Reader(session, view)
        head = await _head(theirs)
        await _one_history(Reader(session, log), theirs, ours, head, f"{peer} shows")

    async def _witnessed(
        self, session: aiohttp.ClientSession, log: RemoteLog, ours: _LogState
    ) -> None:
        """The log's witnessed checkpoint must carry a quorum of the required witnesses'
        cosignatures and be one history with what this monitor verified: a log that showed
        its witnesses another history than the one it shows here cannot pass both."""
        reader = Reader(session, log)
        path = (
            "/api/v1/log/checkpoint/witnessed"
            if log.kind == "rekor-v1"
            else "/api/v2/checkpoint.witnessed"
        )
        note = (await reader.get(path)).decode("utf-8", "replace")
        try:
            head = SignedCheckpoint.verify(note, log.key)
        except VerificationFailed as exc:
            raise Divergence(f"{reader.what}: the witnessed checkpoint: {exc}") from None
        text = note.rpartition("\n\n")[0] + "\n"
        cosigned = []
        for witness in self.witnesses:
            try:
                witness.verify(text, note, int(self.clock()))
            except CosignatureError:
                continue
            cosigned.append(witness.name)
        if len(cosigned) < self.quorum:
            raise Divergence(
                f"{reader.what}: the witnessed checkpoint of size {head.size} is cosigned by "
                f"{len(cosigned)} of the required witnesses ({', '.join(cosigned) or 'none'}), "
                f"fewer than the quorum of {self.quorum}"
            )
        await _one_history(
            reader,
            reader,
            ours,
            VerifiedHead(head.origin, head.size, head.root),
            "the witnesses cosigned",
        )

    async def _check_log(self, reader: Reader, name: str) -> int:
        head = await _head(reader)
        known = self.state.get(name)
        if known is None and self.from_now and head.size > 0:
            rng = await _range_at(reader, head.size)
            if rng.root() != head.root:
                raise Divergence(
                    f"{reader.what}: the tree its head of size {head.size} commits to has root "
                    f"{head.root.hex()}, its entries and proofs make {rng.root().hex()}"
                )
            self.state[name] = _LogState(head.origin, rng.size, [h.hex() for h in rng.hashes])
            return 0
        rng = known.range() if known else merkle.CompactRange()
        if known is not None and head.origin != known.origin:
            raise Divergence(f"{reader.what}: origin {head.origin!r}, was {known.origin!r}")
        if head.size < rng.size:
            raise Divergence(
                f"{reader.what}: the checkpoint says size {head.size}, but size {rng.size} was "
                "verified before: the log shrank (rolled back, or showing another history)"
            )
        matches = 0
        async for index, leaf, integrated_time, holds in _entries(reader, rng.size, head.size):
            rng.append(merkle.hash_leaf(leaf))
            try:
                found = holds(self.watch)
            except UnreadableEntry as exc:
                self.emit({"type": "error", "log": name, "index": index, "message": str(exc)})
                continue
            for event in found:
                matches += 1
                self.emit(
                    {"type": "match", "log": name, "index": index,
                     "integrated_time": integrated_time or None, **event}
                )  # fmt: skip
        if rng.root() != head.root:
            raise Divergence(
                f"{reader.what}: the checkpoint of size {head.size} has root "
                f"{head.root.hex()}, but the entries since the last verified size "
                f"{known.size if known else 0} make {rng.root().hex()}: the log does not "
                "extend what it showed before (or shows a fork)"
            )
        self.state[name] = _LogState(head.origin, rng.size, [h.hex() for h in rng.hashes])
        return matches
