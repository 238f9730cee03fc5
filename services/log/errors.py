"""The log engine's error hierarchy. Each class maps to one HTTP status in the web layer."""

from __future__ import annotations

__all__ = [
    "CorruptLog",
    "DuplicateEntry",
    "EntryRefused",
    "HeadMoved",
    "LogError",
    "LogFrozen",
    "Pushback",
    "SequencerStopped",
    "SequencingFailed",
]


class LogError(Exception):
    """Base class of every error the log engine raises on purpose."""


class DuplicateEntry(LogError):
    """The leaf is already in the log (Rekor answers 409 with the existing entry's location)."""

    def __init__(self, leaf_hash: bytes, index: int) -> None:
        super().__init__(f"entry {leaf_hash.hex()} already exists at index {index}")
        self.leaf_hash = leaf_hash
        self.index = index


class Pushback(LogError):
    """Too many submissions are waiting; the client should retry later (503 + Retry-After)."""


class LogFrozen(LogError):
    """The log is frozen: its final checkpoint is signed and it takes no more entries (Rekor v2
    answers 405, as rekor-tiles in read-only mode)."""


class SequencerStopped(LogError):
    """The sequencer is shutting down or has stopped after a fatal error."""


class SequencingFailed(LogError):
    """A batch could not be committed; the entries in it were *not* appended."""


class EntryRefused(LogError):
    """The store refused this one entry's data (a batch without it commits): a client error,
    400, not a server one. Validation upstream should make this unreachable; this is the net
    that keeps one bad entry from failing every other client's entries in its batch."""


class HeadMoved(LogError):
    """The compare-and-swap on the tree head failed: another writer advanced the tree."""

    def __init__(self, expected_size: int) -> None:
        super().__init__(f"tree head is no longer at size {expected_size}")
        self.expected_size = expected_size


class CorruptLog(LogError):
    """Stored state contradicts itself (head vs tiles). Fatal: the log refuses to continue."""
