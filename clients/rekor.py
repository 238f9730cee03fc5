"""An auditor's Rekor v1 client: everything it returns, it has verified.

Independent of ``services/`` (it never imports it): checkpoints, SETs and proofs are checked here
with this package's own code, against a log key given by the user or pinned on first use, and
every new checkpoint is checked for consistency with the last one this client saw.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
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
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from clients.errors import ClientError
from clients.merkle import ProofVerificationError, verify_consistency, verify_inclusion

LogKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

__all__ = [
    "ClientError",
    "Cosigner",
    "LogClient",
    "LogKey",
    "SignedCheckpoint",
    "VerificationFailed",
    "VerifiedEntry",
    "load_log_key",
]

_TIMEOUT = 30


class VerificationFailed(ClientError):
    """Something the log returned did not verify. The log may be lying: do not trust it."""

    label = "VERIFICATION FAILED"


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint whose signature has been verified."""

    origin: str
    size: int
    root: bytes
    text: str

    @classmethod
    def verify(cls, note: str, key: LogKey) -> SignedCheckpoint:
        """Parse a signed note and verify its signature by ``key``; raise ``VerificationFailed``."""
        body, sep, sigs = note.rpartition("\n\n")
        if not sep or not sigs.endswith("\n"):
            raise VerificationFailed("malformed checkpoint: no signature block")
        text = body + "\n"
        lines = body.split("\n")
        if len(lines) < 3 or not (lines[1].isascii() and lines[1].isdigit()):
            raise VerificationFailed("malformed checkpoint: want origin, size and root lines")
        try:
            root = base64.b64decode(lines[2], validate=True)
        except ValueError:
            raise VerificationFailed("malformed checkpoint: root is not base64") from None
        for line in sigs[:-1].split("\n"):
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != "\u2014":
                continue
            raw = base64.b64decode(parts[2])
            # An Ed25519 key's hint depends on the name in the line; ECDSA's does not.
            if raw[:4] != _key_id(key, parts[1])[:4]:
                continue  # another key's signature (a witness, say)
            try:
                if isinstance(key, ed25519.Ed25519PublicKey):
                    key.verify(raw[4:], text.encode())
                else:
                    key.verify(raw[4:], text.encode(), ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                raise VerificationFailed("checkpoint signature does not verify") from None
            return cls(lines[0], int(lines[1]), root, note)
        raise VerificationFailed(f"checkpoint has no signature by log key {_key_id(key).hex()}")


@dataclass(frozen=True, slots=True)
class Cosigner:
    """A ``cosignature/v1`` line on a witnessed checkpoint; ``verified`` when the caller gave
    the witness's key and the signature checked out (else only the name is known)."""

    name: str
    timestamp: int
    verified: bool


def _witness_key(vkey: str) -> tuple[str, bytes, ed25519.Ed25519PublicKey]:
    """(name, key ID, key) of a witness vkey (type 0x04, c2sp.org/tlog-cosignature)."""
    name, _, rest = vkey.partition("+")
    hex_id, _, encoded = rest.partition("+")
    try:
        material = base64.b64decode(encoded, validate=True)
        key_id = bytes.fromhex(hex_id)
    except ValueError:
        raise ClientError(f"--witness {vkey!r}: not <name>+<hex key ID>+<base64 key>") from None
    if len(material) != 33 or material[0] != 0x04:
        raise ClientError(f"--witness {vkey!r}: not a cosignature/v1 (type 0x04) key")
    if hashlib.sha256(name.encode() + b"\n" + material).digest()[:4] != key_id:
        raise ClientError(f"--witness {vkey!r}: the key ID is not its key's")
    return name, key_id, ed25519.Ed25519PublicKey.from_public_bytes(material[1:])


@dataclass(frozen=True, slots=True)
class VerifiedEntry:
    """A log entry whose SET, inclusion proof and checkpoint have all been verified."""

    entry_id: str
    index: int
    integrated_time: int
    body: dict[str, Any]
    checkpoint: SignedCheckpoint
    raw: dict[str, Any]


def _key_id(key: LogKey, name: str = "") -> bytes:
    """The signed-note key ID (c2sp.org/signed-note): for ECDSA the SHA-256 of the SPKI (Rekor's
    log ID), for Ed25519 ``SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)`` under the key name ``name``."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def load_log_key(pem: bytes, where: str = "the log key", *, ed25519_ok: bool = False) -> LogKey:
    """Load a log's PEM public key; raise ``ClientError`` (naming ``where`` it came from)
    unless it is an ECDSA key, or an Ed25519 one where ``ed25519_ok`` (a Rekor v2 log)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise ClientError(f"{where} is not a PEM public key") from None
    if isinstance(key, ed25519.Ed25519PublicKey) and ed25519_ok:
        return key
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ClientError(f"{where} is not an ECDSA key, as a Rekor v1 log key is")
    return key


def _check_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises on a port that is not a number
    except ValueError as exc:
        raise ClientError(f"--url {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"--url {url!r}: want http(s)://HOST[:PORT]")
    return url.rstrip("/")


class LogClient:
    """Talks to one log, pins its key, and remembers the newest verified checkpoint."""

    def __init__(
        self, url: str, *, state_dir: Path, log_key: bytes | None = None, rekor_version: int = 1
    ) -> None:
        self.url = _check_url(url)
        self.rekor_version = rekor_version
        self._state_dir = state_dir
        # The v2 log at the same URL has its own key, so its own pin.
        which = self.url if rekor_version == 1 else f"{self.url}#rekor-v2"
        self._state_file = state_dir / (hashlib.sha256(which.encode()).hexdigest()[:16] + ".json")
        state = self._read_state()
        pinned = state.get("public_key")
        # Set when the key came from the pin file: a signature failure may then be a replaced
        # key rather than a lying log, and the operator needs to know how to pin anew.
        self._pin_hint = ""
        if log_key is not None:
            self.key = load_log_key(log_key, "--log-key", ed25519_ok=rekor_version == 2)
            if pinned and pinned.encode() != log_key:
                raise VerificationFailed(
                    f"the given log key differs from the one pinned in {self._state_file} on "
                    f"first use; if the log's key was really replaced, delete that file"
                )
        elif pinned:
            self.key = load_log_key(
                pinned.encode(),
                f"the key pinned in {self._state_file}",
                ed25519_ok=rekor_version == 2,
            )
            self._pin_hint = (
                f" (checked against the key pinned in {self._state_file} on first use: if the "
                "log's key was really replaced, check the new one, then delete that file or "
                "give it with --log-key)"
            )
        elif rekor_version == 2:
            # Rekor v2 serves no key: it comes from the trusted root (or the export's PEM).
            raise ClientError(
                "the Rekor v2 log publishes no key to pin on first use: give it with --log-key "
                "(snippets/pem/rekor-v2.pub of `sigstead trust export`)"
            )
        else:
            # Trust on first use: the key is fetched once and pinned; a later change is an error.
            fetched = self._get("/api/v1/log/publicKey", raw=True)
            if fetched is None:
                raise ClientError(
                    f"{self.url} is not a Rekor log: GET /api/v1/log/publicKey answered 404"
                )
            self.key = load_log_key(fetched, f"{self.url}/api/v1/log/publicKey (not a Rekor log?)")
            state["public_key"] = fetched.decode()
            self._write_state(state)
        # A Rekor v2 log's key name is its URL's host (what cosign and sigstore-js require).
        self.log_id = _key_id(self.key, urllib.parse.urlsplit(self.url).hostname or "")

    # -- state ---------------------------------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ClientError(
                f"--state-dir {self._state_dir}: cannot read {self._state_file}: {exc.strerror}"
            ) from None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ClientError(
                f"{self._state_file} is not a sigstead state file: delete it to start over "
                "(the log key is then pinned anew)"
            )
        return data

    def _write_state(self, state: Mapping[str, Any]) -> None:
        try:
            self._state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self._state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=2))
            tmp.replace(self._state_file)
        except OSError as exc:
            raise ClientError(
                f"--state-dir {self._state_dir}: cannot write {exc.filename or ''}: {exc.strerror}"
            ) from None

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
        except urllib.error.URLError as exc:
            raise ClientError(f"could not reach {self.url}: {exc.reason}") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
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
        if raw:
            return payload
        try:
            return json.loads(payload)
        except ValueError:
            raise ClientError(
                f"{self.url}{path} did not answer JSON: is {self.url} a Rekor log?"
            ) from None

    # -- verified operations ---------------------------------------------------------------------

    def checkpoint(self) -> SignedCheckpoint:
        """Fetch, verify and remember the newest checkpoint (consistent with the last one seen)."""
        info = self._get("/api/v1/log")
        if not isinstance(info, dict) or not isinstance(info.get("signedTreeHead"), str):
            raise ClientError(f"{self.url}/api/v1/log is not a Rekor log's LogInfo")
        cp = self._verify_note(info["signedTreeHead"])
        if cp.size != info.get("treeSize") or cp.root.hex() != info.get("rootHash"):
            raise VerificationFailed("LogInfo does not match its own signed checkpoint")
        self._advance(cp)
        return cp

    def witnessed(
        self, witnesses: Sequence[str] = ()
    ) -> tuple[SignedCheckpoint, list[Cosigner]] | None:
        """The log's newest witness-cosigned checkpoint (sigstead's
        ``/api/v1/log/checkpoint/witnessed``; None if it serves none): the log's signature and
        its consistency with the checkpoints seen are verified, and so is the cosignature of
        every witness in ``witnesses`` (vkeys), each of which must have cosigned."""
        payload = self._get("/api/v1/log/checkpoint/witnessed", raw=True)
        if payload is None:
            return None
        note = payload.decode("utf-8", "replace")
        cp = self._verify_note(note)
        self._advance(cp)
        keys = {(name, key_id): (name, key) for name, key_id, key in map(_witness_key, witnesses)}
        text = note.rpartition("\n\n")[0] + "\n"
        log_hint = self.log_id[:4]
        cosigners, seen = [], set()
        for line in note.rpartition("\n\n")[2].splitlines():
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != "\u2014":
                continue
            try:
                raw = base64.b64decode(parts[2], validate=True)
            except ValueError:
                continue
            if raw[:4] == log_hint or len(raw) != 4 + 8 + 64:
                continue  # the log's own signature, or not a cosignature/v1
            timestamp = int.from_bytes(raw[4:12], "big")
            known = keys.get((parts[1], raw[:4]))
            if known is not None:
                message = f"cosignature/v1\ntime {timestamp}\n{text}".encode()
                try:
                    known[1].verify(raw[12:], message)
                except InvalidSignature:
                    raise VerificationFailed(
                        f"the cosignature by witness {parts[1]} does not verify"
                    ) from None
                seen.add(raw[:4])
            cosigners.append(Cosigner(parts[1], timestamp, known is not None))
        missing = [name for (name, key_id), _ in keys.items() if key_id not in seen]
        if missing:
            raise VerificationFailed(
                f"the witnessed checkpoint carries no cosignature by {', '.join(missing)}"
            )
        return cp, cosigners

    def _verify_note(self, note: str) -> SignedCheckpoint:
        try:
            return SignedCheckpoint.verify(note, self.key)
        except VerificationFailed as exc:
            raise VerificationFailed(f"{exc}{self._pin_hint}") from None

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
        try:
            return [bytes.fromhex(h) for h in data["hashes"]]
        except (KeyError, TypeError, ValueError):
            raise VerificationFailed(f"malformed consistency proof {first}..{last}") from None

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
        if not isinstance(self.key, ec.EllipticCurvePublicKey):
            raise VerificationFailed("a Rekor v1 log key is ECDSA")  # load_log_key ensures it
        try:
            self.key.verify(sig, payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise VerificationFailed(
                f"signed entry timestamp does not verify{self._pin_hint}"
            ) from None
        proof = entry["verification"]["inclusionProof"]
        cp = self._verify_note(proof["checkpoint"])
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
        if raw is None:
            return None
        try:
            return self._verify_entry(raw)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise VerificationFailed(f"malformed entry: {type(exc).__name__}: {exc}") from None

    def search_v2(self, query: Mapping[str, Any]) -> list[VerifiedEntry]:
        """Search the Rekor v2 log's index (sigstead's ``/api/v2/index/retrieve``) and verify
        every hit: its checkpoint's signature by the v2 key and its inclusion proof. v2 entries
        have no integrated time (0) and no entry ID beyond their leaf hash."""
        hits = self._get("/api/v2/index/retrieve", body=dict(query)) or []
        out = []
        for hit in hits:
            try:
                out.append(self._verify_v2(hit))
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise VerificationFailed(f"malformed entry: {type(exc).__name__}: {exc}") from None
        return out

    def _verify_v2(self, hit: Mapping[str, Any]) -> VerifiedEntry:
        leaf = base64.b64decode(hit["canonicalizedBody"], validate=True)
        leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()
        if base64.b64decode(hit["logId"]["keyId"]) != self.log_id:
            raise VerificationFailed("entry is from another log than the given key's")
        proof = hit["inclusionProof"]
        cp = self._verify_note(proof["checkpoint"]["envelope"])
        size, index = int(proof["treeSize"]), int(hit["logIndex"])
        if cp.size != size or cp.root != base64.b64decode(proof["rootHash"]):
            raise VerificationFailed("inclusion proof does not match its checkpoint")
        try:
            verify_inclusion(
                leaf_hash, index, size, [base64.b64decode(h) for h in proof["hashes"]], cp.root
            )
        except ProofVerificationError as exc:
            raise VerificationFailed(f"inclusion proof does not verify: {exc}") from None
        return VerifiedEntry(leaf_hash.hex(), index, 0, json.loads(leaf), cp, dict(hit))

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
