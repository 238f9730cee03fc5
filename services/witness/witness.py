"""The add-checkpoint decision of c2sp.org/tlog-witness, apart from HTTP.

``Witness.add_checkpoint`` takes the request body and the time, and either returns the
cosignature line (after the new state is committed) or raises a ``WitnessError`` whose
``status`` is the answer the protocol prescribes:

- 400: the body is not ``old <size>``, at most 63 base64 hash lines, a blank line and a signed
  checkpoint; or the old size exceeds the checkpoint's;
- 404: the checkpoint's origin is not a configured log;
- 403: no signature by a trusted key of that log verifies, or one by a trusted key fails;
- 409: the old size is not the witness's latest size for the log (``SizeConflict``, whose
  ``size`` the response carries);
- 422: the consistency proof from the witness's latest checkpoint does not verify (this includes
  a size-0 checkpoint whose root is not the empty tree's, a non-empty proof from size 0, and a
  different root at the same size).

Consistency is checked with the project's independent verifier (``clients.merkle``), which
shares no code with the log's prover: a witness must not trust the log's own arithmetic.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from clients.merkle import ProofVerificationError, verify_consistency
from services.log.checkpoint import Checkpoint
from services.witness.note import Cosigner, NoteError, SignatureError, SignedNote, Verifier
from services.witness.state import SizeConflict, WitnessStore

__all__ = [
    "MAX_PROOF_LINES",
    "BadRequest",
    "Forbidden",
    "Inconsistent",
    "SizeConflict",
    "UnknownLog",
    "Witness",
    "WitnessError",
    "parse_request",
]

_logger = logging.getLogger(__name__)

MAX_PROOF_LINES = 63
# A size as the protocol writes it: ASCII decimal, no leading zero unless it is 0.
_SIZE = re.compile(r"0|[1-9][0-9]*")


class WitnessError(Exception):
    """A request the witness refuses; ``status`` is the HTTP answer tlog-witness prescribes."""

    status = 500


class BadRequest(WitnessError):
    """The request is malformed."""

    status = 400


class Forbidden(WitnessError):
    """The checkpoint is not validly signed by a trusted key of its log."""

    status = 403


class UnknownLog(WitnessError):
    """The checkpoint's origin is not a log this witness is configured for."""

    status = 404


class Inconsistent(WitnessError):
    """The checkpoint is not consistent with the witness's latest view of the log."""

    status = 422


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    """A parsed add-checkpoint request."""

    old_size: int
    proof: tuple[bytes, ...]
    note: SignedNote
    checkpoint: Checkpoint


def _size(text: str, what: str) -> int:
    if not _SIZE.fullmatch(text):
        raise BadRequest(f"{what} {text[:40]!r} is not a decimal size without leading zeroes")
    return int(text)


def parse_request(body: bytes) -> AddCheckpoint:
    """Parse an add-checkpoint body; raise ``BadRequest`` saying what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    head, sep, note_text = text.partition("\n\n")
    if not sep:
        raise BadRequest("the body has no blank line before the checkpoint")
    old_line, *proof_lines = head.split("\n")
    if not old_line.startswith("old "):
        raise BadRequest(f"the first line {old_line[:40]!r} is not 'old <size>'")
    old_size = _size(old_line[4:], "old size")
    if len(proof_lines) > MAX_PROOF_LINES:
        raise BadRequest(f"{len(proof_lines)} consistency proof lines, at most {MAX_PROOF_LINES}")
    proof = []
    for line in proof_lines:
        try:
            node = base64.b64decode(line, validate=True)
        except binascii.Error:
            raise BadRequest(f"proof line {line[:60]!r} is not base64") from None
        if len(node) != 32:
            raise BadRequest(f"proof line {line[:60]!r} has {len(node)} bytes, want 32")
        proof.append(node)
    try:
        note = SignedNote.parse(note_text)
    except NoteError as exc:
        raise BadRequest(f"malformed checkpoint: {exc}") from None
    lines = note.text.split("\n")
    if len(lines) < 4:
        raise BadRequest("malformed checkpoint: want origin, size and root lines")
    _size(lines[1], "checkpoint size")
    try:
        checkpoint = Checkpoint.from_text(note.text)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if old_size > checkpoint.size:
        raise BadRequest(f"old size {old_size} exceeds the checkpoint size {checkpoint.size}")
    return AddCheckpoint(old_size, tuple(proof), note, checkpoint)


@lru_cache(maxsize=1024)
def _verifiers(vkeys: tuple[str, ...]) -> tuple[Verifier, ...]:
    # The keys were checked when configured; parsing them again per request would cost an
    # SPKI decode each time.
    return tuple(Verifier.parse(v) for v in vkeys)


def load_logs(lines: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Parse a logs file: per line ``<vkey> [<origin>]`` (the origin, which may hold spaces, is
    the rest of the line; it defaults to the key's name); ``#`` comments and blank lines are
    skipped; a log with several lines trusts each key. Raise ``NoteError`` naming the line."""
    logs: dict[str, list[str]] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        vkey, _, origin = line.partition(" ")
        try:
            verifier = Verifier.parse(vkey)
        except NoteError as exc:
            raise NoteError(f"line {number}: {exc}") from None
        keys = logs.setdefault(origin.strip() or verifier.name, [])
        if vkey not in keys:
            keys.append(vkey)
    return {origin: tuple(keys) for origin, keys in logs.items()}


class Witness:
    """Cosigns checkpoints of the configured logs that extend what it saw before."""

    __slots__ = ("cosigner", "store")

    def __init__(self, store: WitnessStore, cosigner: Cosigner) -> None:
        self.store = store
        self.cosigner = cosigner

    async def configure(self, logs: Mapping[str, Sequence[str]]) -> None:
        """Trust ``logs`` (origin → vkeys), checking every key first."""
        for vkeys in logs.values():
            _verifiers(tuple(vkeys))
        await self.store.configure(logs)

    async def add_checkpoint(self, body: bytes, now: int) -> str:
        """Check an add-checkpoint request at time ``now`` (POSIX seconds); return the
        cosignature line once the checkpoint is the log's committed latest; raise
        ``WitnessError`` (``SizeConflict`` for 409) otherwise."""
        request = parse_request(body)
        checkpoint = request.checkpoint
        origin = checkpoint.origin
        state = await self.store.get(origin)
        if state is None or not state.vkeys:
            raise UnknownLog(f"unknown log origin {origin!r}")
        try:
            signed = request.note.verify(_verifiers(state.vkeys))
        except SignatureError as exc:
            _logger.warning("witness: refused a checkpoint of %r: %s", origin, exc)
            raise Forbidden(str(exc)) from None
        if request.old_size != state.size:
            raise SizeConflict(origin, state.size)
        try:
            verify_consistency(
                state.size, checkpoint.size, request.proof, state.root, checkpoint.root
            )
        except ProofVerificationError as exc:
            # Validly signed yet inconsistent: possible evidence of a log's misbehaviour.
            _logger.warning(
                "witness: checkpoint of %r at size %d is not consistent with size %d: %s\n%s",
                origin,
                checkpoint.size,
                state.size,
                exc,
                body.decode(),
            )
            raise Inconsistent(f"consistency proof: {exc}") from None
        line = self.cosigner.cosign(request.note.text, now)
        kept = {(v.name, v.key_id) for v in signed}
        log_lines = "".join(
            f"\u2014 {s.name} {base64.b64encode(s.key_id + s.signature).decode()}\n"
            for s in request.note.signatures
            if (s.name, s.key_id) in kept
        )
        await self.store.advance(
            origin,
            (state.size, state.root),
            (checkpoint.size, checkpoint.root),
            f"{request.note.text}\n{log_lines}{line}",
            now,
        )
        return line
