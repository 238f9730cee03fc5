"""The public half of every key in a data directory: what clients must trust.

``gather`` reads public material only: the log keys' public halves (``keys/rekor.pub``,
``keys/rekor-v2.pub``, ``keys/ctlog.pub``), the CA chain and the TSA chain. That is all the trust
service needs, so in the production layout (compose.yaml) it is given nothing else.
``ensure_keys`` makes the keys ``sigstead up`` uses, by calling the same loaders, and writes those
public halves beside them; ``keys init`` runs it, and so does ``gather`` with ``create`` (the
server's first start, or an export prepared before it), so such an export and the repository the
server publishes at start-up describe the same keys. Without ``create`` a missing file is an
error: an export from a mistyped data directory would otherwise hand clients a trust root for keys
no server holds. Only the material of the services being published is read (or made): a deployment
without a CA has no CA chain or CT log key to describe.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from services.ca import keys as ca_keys
from services.errors import OperatorError
from services.keys import (
    load_or_create_ec_key,
    load_or_create_log_key,
    load_private_key,
    load_public_ec_key,
    load_public_log_key,
    write_public_key,
)
from services.log.checkpoint import LogPublicKey, note_key_id
from services.settings import PUBLISHABLE
from services.tsa import keys as tsa_keys

__all__ = [
    "LogKey",
    "MissingKeysError",
    "RetiredLog",
    "TrustMaterial",
    "describe",
    "ensure_keys",
    "gather",
    "key_details",
    "public_files",
    "retire_rekor_v2",
    "retired_rekor_v2",
    "spki_der",
]

# The file names under ``<data_dir>/keys`` that ``services.app._tree`` uses for each log, and
# their public halves.
REKOR_KEY_FILE = "rekor.pem"
CT_KEY_FILE = "ctlog.pem"
REKOR_V2_KEY_FILE = "rekor-v2.pem"
REKOR_PUBLIC_FILE = "rekor.pub"
CT_PUBLIC_FILE = "ctlog.pub"
REKOR_V2_PUBLIC_FILE = "rekor-v2.pub"


def spki_der(key: PublicKeyTypes) -> bytes:
    """DER SubjectPublicKeyInfo: what ``rawBytes`` carries and what log IDs hash."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_details(key: PublicKeyTypes) -> str:
    """The sigstore ``PublicKeyDetails`` name of a key (clients.md §1.2's accepted list)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        names = {
            "secp256r1": "PKIX_ECDSA_P256_SHA_256",
            "secp384r1": "PKIX_ECDSA_P384_SHA_384",
            "secp521r1": "PKIX_ECDSA_P521_SHA_512",
        }
        if key.curve.name in names:
            return names[key.curve.name]
    elif isinstance(key, ed25519.Ed25519PublicKey):
        return "PKIX_ED25519"
    elif isinstance(key, rsa.RSAPublicKey) and key.key_size in (2048, 3072, 4096):
        return f"PKIX_RSA_PKCS1V15_{key.key_size}_SHA256"
    raise ValueError(f"no sigstore key details for {type(key).__name__}")


@dataclass(frozen=True, slots=True)
class LogKey:
    """A log's verification key and when it came into use (ECDSA; Ed25519 for Rekor v2 only)."""

    public_key: LogPublicKey
    created: datetime.datetime

    @property
    def log_id(self) -> bytes:
        """SHA-256 of the SPKI: Rekor's ``logID``, the SCT ``LogID`` and the checkpoint hint."""
        return hashlib.sha256(spki_der(self.public_key)).digest()

    def note_key_id(self, name: str) -> bytes:
        """The signed-note key ID under key ``name``: a Rekor v2 log's ``logId`` (the SPKI hash
        for ECDSA, C2SP's name-bound ID for Ed25519)."""
        return note_key_id(self.public_key, name)


@dataclass(frozen=True, slots=True)
class RetiredLog:
    """A frozen Rekor v2 log replaced by a newer one: still in the trusted root (with an end to
    its validity), still served at its own URL, read-only."""

    key: LogKey
    url: str  # its base URL; the host is its origin and key name
    tree_id: int
    retired: datetime.datetime

    @property
    def host(self) -> str:
        """The log's origin and key name."""
        return urlsplit(self.url).hostname or ""


RETIRED_DIR = "retired"


def retired_rekor_v2(data_dir: Path) -> tuple[RetiredLog, ...]:
    """The retired Rekor v2 logs of ``keys/retired/`` (``retire_rekor_v2`` writes them): each a
    ``rekor-v2-<tree ID>.pub`` public key with its ``.json`` record. Raise ``OperatorError``."""
    out = []
    for record in sorted((data_dir / "keys" / RETIRED_DIR).glob("rekor-v2-*.json")):
        try:
            doc = json.loads(record.read_text())
            url, tree_id = str(doc["url"]), int(doc["tree_id"])
            retired = datetime.datetime.fromisoformat(str(doc["retired"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OperatorError(f"{record}: not a retired log record ({exc})") from None
        if retired.tzinfo is None or not urlsplit(url).hostname:
            raise OperatorError(f"{record}: want a base URL and a UTC time")
        key = _log_key(record.with_suffix(".pub"), allow_ed25519=True)
        out.append(RetiredLog(key, url, tree_id, retired))
    return tuple(sorted(out, key=lambda r: r.retired))


def retire_rekor_v2(data_dir: Path, url: str, tree_id: int, now: datetime.datetime) -> RetiredLog:
    """Move the Rekor v2 key pair to ``keys/retired/rekor-v2-<tree ID>.{pem,pub}`` beside a
    record of the log's URL and retirement time; the next start makes a new key, a new log.

    Crash point: the record is written first (atomically), the key files moved after; an
    interruption in between stops the next start (a record without its key), and running this
    again completes the move. The caller has checked that the log is frozen.
    """
    keys = data_dir / "keys"
    if not (keys / REKOR_V2_PUBLIC_FILE).exists():
        # A log-only data directory (the trust service's files are elsewhere) has no .pub yet.
        private = load_private_key(keys / REKOR_V2_KEY_FILE)
        if not isinstance(private, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise OperatorError(f"{keys / REKOR_V2_KEY_FILE}: not a log key")
        write_public_key(
            keys / REKOR_V2_PUBLIC_FILE, private.public_key(), like=keys / REKOR_V2_KEY_FILE
        )
    retired_dir = keys / RETIRED_DIR
    retired_dir.mkdir(mode=0o700, exist_ok=True)
    stem = retired_dir / f"rekor-v2-{tree_id}"
    record = {"url": url, "tree_id": tree_id, "retired": now.isoformat()}
    tmp = stem.with_name(f".{stem.name}.json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, stem.with_suffix(".json"))
    # os.replace keeps the files' times: the public key's is when the log began.
    for name, suffix in ((REKOR_V2_PUBLIC_FILE, ".pub"), (REKOR_V2_KEY_FILE, ".pem")):
        if (keys / name).exists():
            os.replace(keys / name, stem.with_suffix(suffix))
    return RetiredLog(_log_key(stem.with_suffix(".pub"), allow_ed25519=True), url, tree_id, now)


@dataclass(frozen=True, slots=True)
class TrustMaterial:
    """Everything a verifier must trust, with no private key in it.

    The CA and its CT log come together; both are None when no CA is published, as the TSA
    chain is when no TSA is.
    """

    rekor: LogKey
    ct: LogKey | None
    ca_chain: tuple[x509.Certificate, ...] | None
    tsa_chain: tuple[x509.Certificate, ...] | None
    # The Rekor v2 log's checkpoint key: None for a data directory made before sigstead served
    # Rekor v2 (its first start with this version creates the key).
    rekor_v2: LogKey | None = None
    # Frozen Rekor v2 logs the current one replaced (``keys/retired/``), oldest first.
    rekor_v2_retired: tuple[RetiredLog, ...] = ()

    @property
    def services(self) -> frozenset[str]:
        """The services these keys belong to: ``log``, and ``ca``, ``tsa`` where present."""
        present = {"log": True, "ca": self.ca_chain is not None, "tsa": self.tsa_chain is not None}
        return frozenset(name for name, here in present.items() if here)


ALL_SERVICES = frozenset(PUBLISHABLE)


class MissingKeysError(OperatorError, FileNotFoundError):
    """The data directory lacks keys the trust documents must describe."""


def _log_key(path: Path, *, allow_ed25519: bool = False) -> LogKey:
    # The file's mtime is its private key's (``write_public_key``): when the key was made, and no
    # entry or SCT can predate it. Key files are written once and never rewritten, so this is
    # stable; ``documents.trusted_root`` also keeps a start it has already published, so a copied
    # data directory cannot move it later.
    created = datetime.datetime.fromtimestamp(int(path.stat().st_mtime), datetime.UTC)
    # Ed25519 only where ``allow_ed25519`` says (Rekor v2): Rekor v1's SETs and the CT log's
    # SCTs are ECDSA for every client.
    key = load_public_log_key(path) if allow_ed25519 else load_public_ec_key(path)
    return LogKey(key, created)


def public_files(
    data_dir: Path,
    *,
    ca_chain: Sequence[x509.Certificate] | None = None,
    services: frozenset[str] = ALL_SERVICES,
) -> list[Path]:
    """Every file ``gather`` reads for ``services`` (the CA chain only when the CA is the data
    directory's)."""
    files = [data_dir / "keys" / REKOR_PUBLIC_FILE]
    # Optional: a data directory from before Rekor v2 has none until the server's next start.
    v2 = data_dir / "keys" / REKOR_V2_PUBLIC_FILE
    files += [v2] if v2.is_file() else []
    files += [data_dir / "keys" / CT_PUBLIC_FILE] if "ca" in services else []
    files += [data_dir / "tsa" / tsa_keys.CHAIN_FILE] if "tsa" in services else []
    if "ca" in services and ca_chain is None:
        files.append(data_dir / "ca" / ca_keys.CHAIN_FILE)
    return files


def ensure_keys(
    data_dir: Path,
    now: datetime.datetime,
    *,
    ca_chain: Sequence[x509.Certificate] | None = None,
    services: frozenset[str] = ALL_SERVICES,
) -> None:
    """Create every missing key of ``services`` that ``sigstead up`` uses, write the log keys'
    public halves, and make the TUF directory.

    ``ca_chain`` set means the CA key lives elsewhere (an operator's files or a PKCS#11 token):
    no CA is made here.
    """
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    logs = [(REKOR_KEY_FILE, REKOR_PUBLIC_FILE), (REKOR_V2_KEY_FILE, REKOR_V2_PUBLIC_FILE)]
    logs += [(CT_KEY_FILE, CT_PUBLIC_FILE)] if "ca" in services else []
    for private, public in logs:
        path = data_dir / "keys" / private
        v2 = private == REKOR_V2_KEY_FILE
        key = load_or_create_log_key(path) if v2 else load_or_create_ec_key(path)
        write_public_key(
            data_dir / "keys" / public, key.public_key(), like=data_dir / "keys" / private
        )
    # Where retired Rekor v2 logs' keys go (``retire_rekor_v2``): made empty here so that a
    # layout mounting it (compose.yaml) finds it.
    (data_dir / "keys" / RETIRED_DIR).mkdir(mode=0o700, exist_ok=True)
    if "ca" in services and ca_chain is None:
        ca_keys.load_or_create(data_dir, now)  # <data_dir>/ca/
    if "tsa" in services:
        tsa_keys.load_or_create(data_dir / "tsa", now)
    # The trust service's TUF directory (``publish.tuf_repository``), whose keys it makes on its
    # first publication: made here so that a layout mounting only it (compose.yaml) finds it
    # owned by the user that runs the services.
    (data_dir / "tuf").mkdir(mode=0o700, exist_ok=True)


def _tsa_chain(path: Path) -> tuple[x509.Certificate, ...]:
    try:
        return tuple(x509.load_pem_x509_certificates(path.read_bytes()))
    except ValueError as exc:
        raise tsa_keys.ChainError(f"{path}: not a PEM certificate chain: {exc}") from None


def _missing_message(data_dir: Path, missing: Sequence[Path]) -> str:
    names = ", ".join(str(p.relative_to(data_dir)) for p in missing)
    if any(p.with_suffix(".pem").is_file() for p in missing if p.suffix == ".pub"):
        # A data directory from before the public halves were written beside the keys.
        return (
            f"{data_dir} holds no {names}: run `sigstead keys init --data-dir {data_dir}` once "
            "(it writes the public halves of the keys it holds and creates none of these)"
        )
    elsewhere = (
        ", with the server's --ca-chain if its CA key lives elsewhere"
        if data_dir / "ca" / ca_keys.CHAIN_FILE in missing
        else ""
    )
    return (
        f"{data_dir} holds no {names}: name the data directory the server runs with{elsewhere}, "
        "or create the keys before its first start"
    )


def gather(
    data_dir: Path,
    now: datetime.datetime,
    *,
    ca_chain: Sequence[x509.Certificate] | None = None,
    create: bool = True,
    services: frozenset[str] = ALL_SERVICES,
) -> TrustMaterial:
    """The data directory's public material for ``services``; with ``create``, ``ensure_keys``
    first (as ``sigstead up`` does), else raise ``MissingKeysError`` naming what is missing.

    ``ca_chain`` replaces the data directory's CA when the CA key lives elsewhere (an operator's
    files or a PKCS#11 token): only the chain is trusted, so only the chain is needed.
    """
    if create:
        ensure_keys(data_dir, now, ca_chain=ca_chain, services=services)
    else:
        wanted = public_files(data_dir, ca_chain=ca_chain, services=services)
        missing = [p for p in wanted if not p.is_file()]
        if missing:
            raise MissingKeysError(_missing_message(data_dir, missing))
    rekor = _log_key(data_dir / "keys" / REKOR_PUBLIC_FILE)
    ct, tsa_chain = None, None
    if "ca" in services:
        ct = _log_key(data_dir / "keys" / CT_PUBLIC_FILE)
        if ca_chain is None:
            ca_chain = ca_keys.load_chain(data_dir / "ca" / ca_keys.CHAIN_FILE)
    if "tsa" in services:
        tsa_chain = _tsa_chain(data_dir / "tsa" / tsa_keys.CHAIN_FILE)
    v2_file = data_dir / "keys" / REKOR_V2_PUBLIC_FILE
    return TrustMaterial(
        rekor,
        ct,
        tuple(ca_chain) if "ca" in services and ca_chain else None,
        tsa_chain,
        _log_key(v2_file, allow_ed25519=True) if v2_file.is_file() else None,
        retired_rekor_v2(data_dir),
    )


def describe(material: TrustMaterial) -> list[str]:
    """One line per key: what an operator checks against the published trust root."""

    def log_id(key: LogKey) -> str:
        return base64.b64encode(key.log_id).decode()

    def subject(chain: Sequence[x509.Certificate]) -> str:
        return chain[0].subject.rfc4514_string()

    lines = [
        f"rekor log key  {log_id(material.rekor)}  (since {material.rekor.created.isoformat()})"
    ]
    if material.rekor_v2 is not None:
        v2 = material.rekor_v2
        if isinstance(v2.public_key, ed25519.Ed25519PublicKey):
            # Its log ID is C2SP's, bound to the log's host, which the keys alone do not say:
            # the key itself, as an operator compares it with the trusted root's rawBytes.
            raw = v2.public_key.public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            lines.append(
                f"rekor v2 key   ed25519:{base64.b64encode(raw).decode()}  (since "
                f"{v2.created.isoformat()}; its log ID depends on the log's host)"
            )
        else:
            lines.append(f"rekor v2 key   {log_id(v2)}  (since {v2.created.isoformat()})")
    if material.ct is not None:
        lines.append(
            f"CT log key     {log_id(material.ct)}  (since {material.ct.created.isoformat()})"
        )
    if material.ca_chain is not None:
        lines.append(f"CA             {subject(material.ca_chain)}")
    if material.tsa_chain is not None:
        lines.append(f"TSA            {subject(material.tsa_chain)}")
    return lines
