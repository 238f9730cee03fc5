"""What the search index must hold for a stored entry, derived from the stored leaf alone.

``sigstead fsck`` compares these with the ``search_keys`` rows of every entry. The keys come
from the same functions that filed them (``searchkeys``, ``v2.verifier_search_keys``), fed from
the canonical leaf instead of the request.

What a leaf cannot justify: the in-toto subject digests of a DSSE-kind entry (``dsse``,
``intoto``, Rekor v2 ``dsse``). They are filed from the envelope's payload, and neither Rekor's
canonical body nor rekor-tiles' ``Entry`` keeps the payload (only its hash). For those entries a
stored digest key beyond the leaf's own is accepted; every key naming verification material
(``pubkey:``, ``cert:``, ``email:``, ``subject:``) must still come from the leaf.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from dataclasses import dataclass
from typing import Any

from services.log.ct.log import dedup_key
from services.log.rekor import v2
from services.log.rekor._go import GoDecodeError, b64decode_std
from services.log.rekor.errors import RekorError
from services.log.rekor.keys import MaterialError, parse_material
from services.log.rekor.kinds import canonicalize_proposed_entry
from services.log.rekor.searchkeys import digest_key, is_material_key, material_keys

__all__ = [
    "Expected",
    "NotAdmissible",
    "UnreadableEntry",
    "ct_keys",
    "readmit_v1",
    "readmit_v2",
    "rekor_v1_keys",
    "rekor_v2_keys",
]


class UnreadableEntry(ValueError):
    """A stored leaf the replay cannot read (the log wrote something it cannot parse)."""


@dataclass(frozen=True, slots=True)
class Expected:
    """The keys an entry must be filed under; ``open_digests``: digest keys beyond them (the
    payload's subjects) cannot be judged from the leaf."""

    keys: frozenset[str]
    open_digests: bool = False

    def judge(self, stored: set[str]) -> tuple[set[str], set[str]]:
        """(missing keys, stored keys the entry cannot justify)."""
        missing = set(self.keys - stored)
        extra = stored - self.keys
        if self.open_digests:
            extra = {key for key in extra if is_material_key(key)}
        return missing, extra


@functools.lru_cache(maxsize=4096)
def _pem_keys(b64_pem: str) -> frozenset[str]:
    # Key-signed logs repeat one key in every entry: parse it once.
    try:
        return frozenset(material_keys(parse_material(b64decode_std(b64_pem))))
    except (GoDecodeError, MaterialError) as exc:
        raise UnreadableEntry(f"verification material: {exc}") from None


def _get(document: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(document, dict) or name not in document:
            raise UnreadableEntry(f"no {'.'.join(path)}")
        document = document[name]
    return document


def _list(document: Any, *path: str) -> list[Any]:
    value = _get(document, *path)
    if not isinstance(value, list):
        raise UnreadableEntry(f"{'.'.join(path)} is not a list")
    return value


def _sha256_key(document: Any, *path: str) -> str:
    return digest_key("sha256", str(_get(document, *path, "value")))


def rekor_v1_keys(leaf: bytes) -> Expected:
    """The keys of a Rekor v1 canonical body (``hashedrekord``, ``dsse``, ``intoto``)."""
    try:
        body = json.loads(leaf)
    except ValueError as exc:
        raise UnreadableEntry(f"not JSON: {exc}") from None
    kind, version, spec = _get(body, "kind"), _get(body, "apiVersion"), _get(body, "spec")
    keys: set[str] = set()
    if kind == "hashedrekord":
        data = _get(spec, "data", "hash")
        keys.add(digest_key(str(_get(data, "algorithm")), str(_get(data, "value"))))
        keys |= _pem_keys(str(_get(spec, "signature", "publicKey", "content")))
        return Expected(frozenset(keys))
    if kind == "dsse":
        keys |= {_sha256_key(spec, "payloadHash"), _sha256_key(spec, "envelopeHash")}
        for signature in _list(spec, "signatures"):
            keys |= _pem_keys(str(_get(signature, "verifier")))
        return Expected(frozenset(keys), open_digests=True)
    if kind == "intoto" and version == "0.0.2":
        keys.add(_sha256_key(spec, "content", "payloadHash"))
        for signature in _list(spec, "content", "envelope", "signatures"):
            keys |= _pem_keys(str(_get(signature, "publicKey")))
        return Expected(frozenset(keys), open_digests=True)
    if kind == "intoto" and version == "0.0.1":
        keys |= {
            _sha256_key(spec, "content", "hash"),
            _sha256_key(spec, "content", "payloadHash"),
        }
        keys |= _pem_keys(str(_get(spec, "publicKey")))
        return Expected(frozenset(keys), open_digests=True)
    raise UnreadableEntry(f"kind {kind!r} version {version!r} is not one this log writes")


def rekor_v2_keys(leaf: bytes) -> Expected:
    """The keys of a Rekor v2 ``Entry`` (``hashedRekordV002``, ``dsseV002``)."""
    try:
        spec = _get(json.loads(leaf), "spec")
    except ValueError as exc:
        raise UnreadableEntry(f"not JSON: {exc}") from None
    keys: set[str] = set()
    try:
        if "hashedRekordV002" in spec:
            entry = spec["hashedRekordV002"]
            hash_name = v2.HASH_ALGORITHMS.get(str(_get(entry, "data", "algorithm")))
            if hash_name is None:
                raise UnreadableEntry("unknown data.algorithm")
            digest = base64.b64decode(str(_get(entry, "data", "digest")), validate=True)
            keys.add(digest_key(hash_name, digest.hex()))
            keys |= v2.verifier_search_keys(_get(entry, "signature", "verifier"))
            return Expected(frozenset(keys))
        if "dsseV002" in spec:
            entry = spec["dsseV002"]
            digest = base64.b64decode(str(_get(entry, "payloadHash", "digest")), validate=True)
            keys.add(digest_key("sha256", digest.hex()))
            for signature in _list(entry, "signatures"):
                keys |= v2.verifier_search_keys(_get(signature, "verifier"))
            return Expected(frozenset(keys), open_digests=True)
    except (binascii.Error, v2.InvalidRequest) as exc:
        raise UnreadableEntry(str(exc)) from None
    raise UnreadableEntry("neither hashedRekordV002 nor dsseV002")


def ct_keys(leaf: bytes, extra: bytes | None) -> Expected:
    """The CT log's one key per entry: the SHA-256 of the logged certificate (its duplicate
    check). An x509 entry holds the certificate in the leaf; a precertificate entry holds its
    TBSCertificate, and the precertificate itself is the first element of the stored extra data
    (RFC 6962 ``PrecertChainEntry``), so a changed ``extra`` shows here too."""
    # MerkleTreeLeaf: version(1) leaf_type(1) timestamp(8) entry_type(2) then the entry.
    entry_type = int.from_bytes(leaf[10:12], "big")
    if entry_type == 0:
        source = leaf[12:]
    elif entry_type == 1:
        if extra is None:
            raise UnreadableEntry("a precertificate entry without its extra data")
        source = extra
    else:
        raise UnreadableEntry(f"CT entry type {entry_type}")
    length = int.from_bytes(source[:3], "big")
    der = source[3 : 3 + length]
    if len(source) < 3 or len(der) != length:
        raise UnreadableEntry("truncated certificate")
    return Expected(frozenset({dedup_key(der)}))


class NotAdmissible(ValueError):
    """A stored entry the log should never have admitted: its signature does not verify, or
    re-admitting it gives another canonical leaf."""


def readmit_v1(leaf: bytes) -> bool:
    """Re-admit a Rekor v1 ``hashedrekord`` body as a new request: the signature must verify
    and the canonical leaf must come out byte for byte the same. Return False for the DSSE
    kinds, whose bodies lack the envelope the signatures cover (nothing to verify against);
    raise ``NotAdmissible``."""
    try:
        kind = json.loads(leaf).get("kind")
    except (ValueError, AttributeError):
        raise NotAdmissible("not a JSON object") from None
    if kind != "hashedrekord":
        return False
    try:
        again = canonicalize_proposed_entry(leaf).leaf
    except RekorError as exc:
        raise NotAdmissible(f"re-admitting it fails: {exc.message}") from None
    if again != leaf:
        raise NotAdmissible("re-admitting it gives another canonical leaf")
    return True


def readmit_v2(leaf: bytes) -> bool:
    """``readmit_v1`` for a Rekor v2 ``hashedRekordV002`` entry: its digest, signature and
    verifier as a new ``hashedRekordRequestV002``. False for ``dsseV002`` (no envelope)."""
    try:
        spec = json.loads(leaf)["spec"]
    except (ValueError, KeyError, TypeError):
        raise NotAdmissible("not an Entry") from None
    entry = spec.get("hashedRekordV002") if isinstance(spec, dict) else None
    if entry is None:
        return False
    try:
        request = {"digest": entry["data"]["digest"], "signature": entry["signature"]}
        again = v2.canonicalize_request({"hashedRekordRequestV002": request}).leaf
    except (KeyError, TypeError):
        raise NotAdmissible("malformed hashedRekordV002") from None
    except v2.InvalidRequest as exc:
        raise NotAdmissible(f"re-admitting it fails: {exc.message}") from None
    if again != leaf:
        raise NotAdmissible("re-admitting it gives another canonical leaf")
    return True
