"""An auditor's Rekor v1 client: everything it returns, it has verified.

Independent of ``services/`` (it never imports it): checkpoints, SETs and proofs are checked here
with this package's own code, against a log key given by the user or pinned on first use, and
every new checkpoint is checked for consistency with the last one this client saw.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clients.errors import ClientError
from clients.merkle import ProofVerificationError, verify_consistency, verify_inclusion

__all__ = [
    "ClientError",
    "LogClient",
    "SignedCheckpoint",
    "VerificationFailed",
    "VerifiedEntry",
    "load_log_key",
]

_TIMEOUT = 30


class VerificationFailed(ClientError):
    """Something the log returned did not verify. The log may be lying: do not trust it."""


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint whose signature has been verified."""

    origin: str
    size: int
    root: bytes
    text: str

    @classmethod
    def verify(cls, note: str, key: ec.EllipticCurvePublicKey) -> SignedCheckpoint:
        """Parse a signed note and verify its signature by ``key``; raise ``VerificationFailed``."""
        body, sep, sigs = note.rpartition("\n\n")
        if not sep or not sigs.endswith("\n"):
            raise VerificationFailed("malformed checkpoint: no signature block")
        text = body + "\n"
        lines = body.split("\n")
        if len(lines) < 3 or not lines[1].isdigit():
            raise VerificationFailed("malformed checkpoint: want origin, size and root lines")
        try:
            root = base64.b64decode(lines[2], validate=True)
        except ValueError:
            raise VerificationFailed("malformed checkpoint: root is not base64") from None
        kid = _key_id(key)
        for line in sigs[:-1].split("\n"):
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != "\u2014":
                continue
            raw = base64.b64decode(parts[2])
            if raw[:4] != kid[:4]:
                continue  # another key's signature (a witness, say)
            try:
                key.verify(raw[4:], text.encode(), ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                raise VerificationFailed("checkpoint signature does not verify") from None
            return cls(lines[0], int(lines[1]), root, note)
        raise VerificationFailed(f"checkpoint has no signature by log key {kid.hex()}")


@dataclass(frozen=True, slots=True)
class VerifiedEntry:
    """A log entry whose SET, inclusion proof and checkpoint have all been verified."""

    entry_id: str
    index: int
    integrated_time: int
    body: dict[str, Any]
    checkpoint: SignedCheckpoint
    raw: dict[str, Any]


def _key_id(key: ec.EllipticCurvePublicKey) -> bytes:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def load_log_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    """Load a log's PEM public key; raise ``ClientError`` unless it is an ECDSA key."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise ClientError("the log key is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ClientError("the log key is not an ECDSA key")
    return key


class LogClient:
    """Talks to one log, pins its key, and remembers the newest verified checkpoint."""

    def __init__(self, url: str, *, state_dir: Path, log_key: bytes | None = None) -> None:
        self.url = url.rstrip("/")
        self._state_dir = state_dir
        self._state_file = state_dir / (
            hashlib.sha256(self.url.encode()).hexdigest()[:16] + ".json"
        )
        state = self._read_state()
        pinned = state.get("public_key")
        if log_key is not None:
            self.key = load_log_key(log_key)
            if pinned and pinned.encode() != log_key:
                raise VerificationFailed(
                    f"the given log key differs from the one pinned in {self._state_file}"
                )
        elif pinned:
            self.key = load_log_key(pinned.encode())
        else:
            # Trust on first use: the key is fetched once and pinned; a later change is an error.
            fetched = self._get("/api/v1/log/publicKey", raw=True)
            assert isinstance(fetched, bytes)
            self.key = load_log_key(fetched)
            state["public_key"] = fetched.decode()
            self._write_state(state)
        self.log_id = _key_id(self.key)

    # -- state ---------------------------------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            return {}
        return data

    def _write_state(self, state: Mapping[str, Any]) -> None:
        self._state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self._state_file)

    # -- HTTP ----------------------------------------------------------------------------------

    def _request(self, path: str, data: bytes | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(  # noqa: S310 -- the URL is the user's own log
            self.url + path,
            data=data,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=_TIMEOUT) as resp:  # noqa: S310
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError as exc:
            raise ClientError(f"could not reach {self.url}: {exc}") from None

    def _get(self, path: str, *, raw: bool = False, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        status, payload = self._request(path, data)
        if status == 404:
            return None
        if status >= 300:
            try:
                message = json.loads(payload)["message"]
            except (ValueError, KeyError, TypeError):
                message = payload[:200].decode(errors="replace")
            raise ClientError(f"{self.url}{path}: HTTP {status}: {message}")
        return payload if raw else json.loads(payload)

    # -- verified operations ---------------------------------------------------------------------

    def checkpoint(self) -> SignedCheckpoint:
        """Fetch, verify and remember the newest checkpoint (consistent with the last one seen)."""
        info = self._get("/api/v1/log")
        cp = SignedCheckpoint.verify(info["signedTreeHead"], self.key)
        if cp.size != info["treeSize"] or cp.root.hex() != info["rootHash"]:
            raise VerificationFailed("LogInfo does not match its own signed checkpoint")
        self._advance(cp)
        return cp

    def _advance(self, cp: SignedCheckpoint) -> None:
        """Check ``cp`` is consistent with the last checkpoint seen, then remember it."""
        state = self._read_state()
        last = state.get("checkpoint")
        if last is not None:
            old_size, old_root = int(last["size"]), bytes.fromhex(last["root"])
            if cp.size < old_size:
                # An older checkpoint is fine if the log proves the newer one extends it.
                proof = self.consistency_proof(cp.size, old_size)
                self._verify_consistency(cp.size, old_size, proof, cp.root, old_root)
                return
            proof = self.consistency_proof(old_size, cp.size) if old_size else []
            self._verify_consistency(old_size, cp.size, proof, old_root, cp.root)
        state["checkpoint"] = {"size": cp.size, "root": cp.root.hex(), "note": cp.text}
        self._write_state(state)

    @staticmethod
    def _verify_consistency(
        m: int, n: int, proof: Sequence[bytes], root1: bytes, root2: bytes
    ) -> None:
        try:
            verify_consistency(m, n, proof, root1, root2)
        except ProofVerificationError as exc:
            raise VerificationFailed(f"the log forked or rewrote history: {exc}") from None

    def consistency_proof(self, first: int, last: int) -> list[bytes]:
        """Fetch the consistency proof between two sizes (not yet verified: see ``prove``)."""
        if first == last:
            return []
        data = self._get(f"/api/v1/log/proof?firstSize={first}&lastSize={last}")
        return [bytes.fromhex(h) for h in data["hashes"]]

    def prove(self, first: int, last: int) -> tuple[SignedCheckpoint, list[bytes], bytes]:
        """Verify that the tree at ``last`` extends the tree at ``first``.

        Returns the verified head, the proof, and the root at ``first`` the proof was checked
        against (taken from the log's own history and proven consistent here).
        """
        head = self.checkpoint()
        if not 1 <= first <= last <= head.size:
            raise ClientError(f"need 1 <= first <= last <= {head.size}, got {first}, {last}")
        root_first = self._root_at(first, head)
        root_last = self._root_at(last, head)
        proof = self.consistency_proof(first, last)
        self._verify_consistency(first, last, proof, root_first, root_last)
        return head, proof, root_first

    def _root_at(self, size: int, head: SignedCheckpoint) -> bytes:
        """The root of the first ``size`` leaves: claimed by the log, then proven against ``head``.

        sigstead answers ``proof?firstSize=N&lastSize=N`` with the root at N; the claim is worth
        nothing until the consistency proof from it to the verified head checks out.
        """
        if size == head.size:
            return head.root
        claimed = bytes.fromhex(
            self._get(f"/api/v1/log/proof?firstSize={size}&lastSize={size}")["rootHash"]
        )
        proof = self.consistency_proof(size, head.size)
        self._verify_consistency(size, head.size, proof, claimed, head.root)
        return claimed

    def _verify_entry(self, raw: Mapping[str, Any]) -> VerifiedEntry:
        if len(raw) != 1:
            raise VerificationFailed(f"expected one entry, got {len(raw)}")
        ((entry_id, entry),) = raw.items()
        body_b64 = entry["body"]
        leaf = base64.b64decode(body_b64)
        leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()
        if not entry_id.lower().endswith(leaf_hash.hex()):
            raise VerificationFailed(f"entry ID {entry_id} does not match its body")
        if entry["logID"] != self.log_id.hex():
            raise VerificationFailed(f"entry is from log {entry['logID']}, not this log")
        payload = rfc8785.dumps(
            {
                "body": body_b64,
                "integratedTime": entry["integratedTime"],
                "logID": entry["logID"],
                "logIndex": entry["logIndex"],
            }
        )
        sig = base64.b64decode(entry["verification"]["signedEntryTimestamp"])
        try:
            self.key.verify(sig, payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise VerificationFailed("signed entry timestamp does not verify") from None
        proof = entry["verification"]["inclusionProof"]
        cp = SignedCheckpoint.verify(proof["checkpoint"], self.key)
        if cp.size != proof["treeSize"] or cp.root.hex() != proof["rootHash"]:
            raise VerificationFailed("inclusion proof does not match its checkpoint")
        try:
            verify_inclusion(
                leaf_hash,
                proof["logIndex"],
                proof["treeSize"],
                [bytes.fromhex(h) for h in proof["hashes"]],
                cp.root,
            )
        except ProofVerificationError as exc:
            raise VerificationFailed(f"inclusion proof does not verify: {exc}") from None
        self._advance(cp)
        return VerifiedEntry(
            entry_id, entry["logIndex"], entry["integratedTime"], json.loads(leaf), cp, dict(raw)
        )

    def get(self, *, uuid: str | None = None, index: int | None = None) -> VerifiedEntry | None:
        """Fetch one entry by UUID / entry ID or by index, verified; None if there is none."""
        if (uuid is None) == (index is None):
            raise ValueError("give exactly one of uuid and index")
        path = (
            f"/api/v1/log/entries/{urllib.parse.quote(uuid)}"
            if uuid is not None
            else f"/api/v1/log/entries?logIndex={index}"
        )
        raw = self._get(path)
        return None if raw is None else self._verify_entry(raw)

    def search(self, query: Mapping[str, Any]) -> list[VerifiedEntry]:
        """Search the index, then fetch and verify every hit."""
        ids = self._get("/api/v1/index/retrieve", body=dict(query)) or []
        out = []
        for entry_id in ids:
            entry = self.get(uuid=entry_id)
            if entry is None:
                raise VerificationFailed(f"index lists {entry_id}, which the log cannot produce")
            out.append(entry)
        return out
