"""Private keys on disk: created 0600 on first start, loaded afterwards, never logged.

Beside a private key, ``write_public_key`` leaves its public half for services that must describe
the key but never use it (the trust service, in a layout where it cannot read private keys).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from services.errors import OperatorError
from services.settings import LOG_KEY_TYPES

__all__ = [
    "LOG_KEY_TYPES",
    "KeyFileError",
    "load_or_create_ec_key",
    "load_or_create_log_key",
    "load_private_key",
    "load_public_ec_key",
    "load_public_log_key",
    "write_private_key",
    "write_public_key",
]


class KeyFileError(OperatorError):
    """A key file exists but cannot be used (wrong permissions, wrong type, unparseable)."""


def write_private_key(path: Path, key: PrivateKeyTypes) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM to a *new* file created with mode 0600.

    The key is written and synced under a temporary name, then linked into place: ``path`` is
    complete from the moment it exists, and a concurrent second start gets ``FileExistsError``
    instead of silently replacing a key that may already have signed checkpoints.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
    finally:
        tmp.unlink()


def load_private_key(path: Path) -> PrivateKeyTypes:
    """Load a PEM private key, refusing files that group or others can read."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(
            f"{path}: permissions {mode:o} are too open for a private key, want 600 "
            f"(chmod 600 {path})"
        )
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a PEM private key") from exc


def load_or_create_ec_key(
    path: Path, curve: ec.EllipticCurve | None = None
) -> ec.EllipticCurvePrivateKey:
    """Load the EC key at ``path``, generating it (P-256 by default) if the file does not exist."""
    if not path.exists():
        # Replicas starting together on a new data directory may race here: one key wins, and
        # every process uses it.
        with contextlib.suppress(FileExistsError):
            write_private_key(path, ec.generate_private_key(curve or ec.SECP256R1()))
    key = load_private_key(path)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{path}: not an EC private key")
    return key


def load_or_create_log_key(
    path: Path, key_type: str = "ecdsa-p256"
) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    """Load the log key at ``path`` (ECDSA or Ed25519), generating one of ``key_type`` if the
    file does not exist. An existing key is used whatever ``key_type`` says: the type is chosen
    when a log is created, and a new key is a new log."""
    if key_type not in LOG_KEY_TYPES:
        raise ValueError(f"log key type {key_type!r}: want one of {', '.join(LOG_KEY_TYPES)}")
    if not path.exists():
        new = (
            ed25519.Ed25519PrivateKey.generate()
            if key_type == "ed25519"
            else ec.generate_private_key(ec.SECP256R1())
        )
        # As in load_or_create_ec_key: one key wins a race between replicas.
        with contextlib.suppress(FileExistsError):
            write_private_key(path, new)
    key = load_private_key(path)
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an ECDSA or Ed25519 private key")
    return key


def write_public_key(path: Path, key: PublicKeyTypes, *, like: Path) -> None:
    """Write ``key`` as SPKI PEM to ``path``, with the modification time of ``like`` (its private
    key file), unless ``path`` already holds exactly that.

    The time matters: a log key's file time is when the key came into use, and the trust
    documents publish it (``services.trust.material``). A file holding another key is an error,
    never replaced: it would make clients trust a key the service does not sign with.
    """
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if path.exists():
        if path.read_bytes() != pem:
            raise KeyFileError(f"{path}: not the public key of {like}")
        return
    since = like.stat()
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.utime(tmp, ns=(since.st_atime_ns, since.st_mtime_ns))
    os.replace(tmp, path)


def load_public_log_key(path: Path) -> ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey:
    """Load an SPKI PEM log public key: ECDSA, or Ed25519 (a Rekor v2 log's)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a PEM public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an ECDSA or Ed25519 public key")
    return key


def load_public_ec_key(path: Path) -> ec.EllipticCurvePublicKey:
    """Load an SPKI PEM EC public key (``write_public_key``'s output)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a PEM public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyFileError(f"{path}: not an EC public key")
    return key
