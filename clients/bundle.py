"""Repair a Sigstore bundle whose writer left out proto3 default values (docs/genesis.md).

sigstore-js writes bundles as proto3 JSON, which omits fields holding their default value. For
the entry at index 0 of a tree of size 1 that drops ``logIndex`` (in the entry and in the
inclusion proof) and ``inclusionProof.hashes``; sigstore-python 4.5.1 requires both and refuses
the bundle. Logs sigstead creates now start with their own genesis entry, so a client never gets
index 0; this repairs bundles issued by logs that predate that, by writing the defaults out.

Nothing is trusted by being repaired: every tlog entry's inclusion proof must verify against
the root its checkpoint names, and with ``log_key`` the checkpoint signature too.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from clients.merkle import ProofVerificationError, hash_leaf, verify_inclusion
from clients.rekor import LogKey, SignedCheckpoint, VerificationFailed

__all__ = ["RepairedBundle", "spell_out_defaults"]


class RepairedBundle:
    """A bundle with its defaults written out, and which fields were added."""

    __slots__ = ("added", "document")

    def __init__(self, document: dict[str, Any], added: list[str]) -> None:
        self.document = document
        self.added = added


def _entries(document: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        entries = document["verificationMaterial"]["tlogEntries"]
    except (KeyError, TypeError):
        raise VerificationFailed(
            "not a Sigstore bundle: no verificationMaterial.tlogEntries"
        ) from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise VerificationFailed("verificationMaterial.tlogEntries is not a list of objects")
    return entries


def _check_inclusion(where: str, entry: dict[str, Any], log_key: LogKey | None) -> None:
    proof = entry["inclusionProof"]
    try:
        leaf = base64.b64decode(entry["canonicalizedBody"], validate=True)
        index = int(proof["logIndex"])
        size = int(proof["treeSize"])
        root = base64.b64decode(proof["rootHash"], validate=True)
        hashes = [base64.b64decode(h, validate=True) for h in proof["hashes"]]
        note = proof["checkpoint"]["envelope"]
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationFailed(f"{where}: unreadable inclusion proof ({exc!r})") from None
    if int(entry["logIndex"]) != index:
        raise VerificationFailed(f"{where}: logIndex {entry['logIndex']} != proof index {index}")
    try:
        verify_inclusion(hash_leaf(leaf), index, size, hashes, root)
    except ProofVerificationError as exc:
        raise VerificationFailed(f"{where}: inclusion proof does not verify: {exc}") from None
    lines = note.split("\n")
    if len(lines) < 3 or lines[1] != str(size) or lines[2] != base64.b64encode(root).decode():
        raise VerificationFailed(f"{where}: the checkpoint does not name the proof's tree")
    if log_key is not None:
        SignedCheckpoint.verify(note, log_key)


def spell_out_defaults(
    document: dict[str, Any], *, log_key: LogKey | None = None
) -> RepairedBundle:
    """Return ``document`` with ``logIndex`` and ``inclusionProof.{logIndex,hashes}`` written out.

    Raises ``VerificationFailed`` if the document is not a bundle, or if an entry's inclusion
    proof (and, given ``log_key``, its checkpoint signature) does not verify once repaired.
    """
    repaired = copy.deepcopy(document)
    added: list[str] = []
    for n, entry in enumerate(_entries(repaired)):
        where = f"tlogEntries[{n}]"
        proof = entry.get("inclusionProof")
        if not isinstance(proof, dict):
            raise VerificationFailed(f"{where}: no inclusion proof")
        # proto3 JSON omits int64 0 and empty repeated fields; nothing else is ever filled in.
        if "logIndex" not in entry:
            entry["logIndex"] = "0"
            added.append(f"{where}.logIndex")
        if "logIndex" not in proof:
            proof["logIndex"] = "0"
            added.append(f"{where}.inclusionProof.logIndex")
        if "hashes" not in proof:
            proof["hashes"] = []
            added.append(f"{where}.inclusionProof.hashes")
        _check_inclusion(where, entry, log_key)
    return RepairedBundle(repaired, added)
