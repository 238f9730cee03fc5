"""The public half of every key in a data directory: what clients must trust.

``gather`` loads exactly the keys ``sigstead up`` uses, by calling the same loaders. With
``create`` it also makes missing ones (the server's first start, or an export prepared before it),
so such an export and the repository the server publishes at start-up describe the same keys.
Without ``create`` a missing key is an error: an export from a mistyped data directory would
otherwise hand clients a trust root for keys no server holds.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from services.ca import keys as ca_keys
from services.keys import load_or_create_ec_key
from services.tsa import keys as tsa_keys

__all__ = [
    "LogKey",
    "MissingKeysError",
    "TrustMaterial",
    "describe",
    "gather",
    "key_details",
    "spki_der",
]

# The file names under ``<data_dir>/keys`` that ``services.app._tree`` uses for each log.
REKOR_KEY_FILE = "rekor.pem"
CT_KEY_FILE = "ctlog.pem"


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
    """A log's verification key and when it came into use."""

    public_key: ec.EllipticCurvePublicKey
    created: datetime.datetime

    @property
    def log_id(self) -> bytes:
        """SHA-256 of the SPKI: Rekor's ``logID``, the SCT ``LogID`` and the checkpoint hint."""
        return hashlib.sha256(spki_der(self.public_key)).digest()


@dataclass(frozen=True, slots=True)
class TrustMaterial:
    """Everything a verifier must trust, with no private key in it."""

    rekor: LogKey
    ct: LogKey
    ca_chain: tuple[x509.Certificate, ...]
    tsa_chain: tuple[x509.Certificate, ...]


class MissingKeysError(FileNotFoundError):
    """The data directory lacks keys the trust documents must describe."""


def _log_key(path: Path) -> LogKey:
    key = load_or_create_ec_key(path)
    # The key file's mtime is when the key was made: no entry or SCT can predate it. Key files are
    # written once and never rewritten, so this is stable; ``documents.trusted_root`` also keeps
    # a start it has already published, so a copied data directory cannot move it later.
    created = datetime.datetime.fromtimestamp(int(path.stat().st_mtime), datetime.UTC)
    return LogKey(key.public_key(), created)


def gather(
    data_dir: Path,
    now: datetime.datetime,
    *,
    ca_chain: Sequence[x509.Certificate] | None = None,
    create: bool = True,
) -> TrustMaterial:
    """Load the data directory's keys; with ``create``, make any that are missing first (as
    ``sigstead up`` does), else raise ``MissingKeysError`` naming them.

    ``ca_chain`` replaces the data directory's CA when the CA key lives elsewhere (an operator's
    files or a PKCS#11 token): only the chain is trusted, so only the chain is needed.
    """
    rekor_path = data_dir / "keys" / REKOR_KEY_FILE
    ct_path = data_dir / "keys" / CT_KEY_FILE
    tsa_dir = data_dir / "tsa"
    if create:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    else:
        ca_file = data_dir / "ca" / ca_keys.CHAIN_FILE
        needed = [rekor_path, ct_path, tsa_dir / tsa_keys.CHAIN_FILE]
        needed += [ca_file] if ca_chain is None else []
        missing = [p for p in needed if not p.is_file()]
        if missing:
            elsewhere = (
                ", with the server's --ca-chain if its CA key lives elsewhere"
                if ca_file in missing
                else ""
            )
            names = ", ".join(str(p.relative_to(data_dir)) for p in missing)
            raise MissingKeysError(
                f"{data_dir} holds no {names}: name the data directory the server runs "
                f"with{elsewhere}, or create the keys before its first start"
            )
    rekor = _log_key(rekor_path)
    ct = _log_key(ct_path)
    if ca_chain is None:
        ca_chain = ca_keys.load_or_create(data_dir, now).chain  # <data_dir>/ca/
    _key, tsa_chain = tsa_keys.load_or_create(tsa_dir, now)
    return TrustMaterial(rekor, ct, tuple(ca_chain), tuple(tsa_chain))


def describe(material: TrustMaterial) -> list[str]:
    """One line per key: what an operator checks against the published trust root."""

    def log_id(key: LogKey) -> str:
        return base64.b64encode(key.log_id).decode()

    def subject(chain: Sequence[x509.Certificate]) -> str:
        return chain[0].subject.rfc4514_string()

    return [
        f"rekor log key  {log_id(material.rekor)}  (since {material.rekor.created.isoformat()})",
        f"CT log key     {log_id(material.ct)}  (since {material.ct.created.isoformat()})",
        f"CA             {subject(material.ca_chain)}",
        f"TSA            {subject(material.tsa_chain)}",
    ]
