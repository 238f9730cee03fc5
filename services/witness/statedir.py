"""The witness's state directory: its Ed25519 key (0600), its name, and its SQLite database.

    DIR/witness.pem     the private key (PKCS#8 PEM, mode 0600, never logged or printed)
    DIR/witness.name    the key name cosignatures carry (its vkey commits to it)
    DIR/witness.db      known logs and the latest checkpoint cosigned for each

``init`` creates the key and name once and never replaces them: a witness that changed key would
silently stop being the witness its clients trust.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from services.db import sqlite_url
from services.errors import OperatorError
from services.keys import KeyFileError, load_private_key, write_private_key
from services.witness.note import Cosigner, NoteError

__all__ = ["StateDirError", "database_url", "init_state", "load_cosigner"]

_KEY = "witness.pem"
_NAME = "witness.name"
_DB = "witness.db"


class StateDirError(OperatorError):
    """The witness's state directory is missing, incomplete or holds another witness."""


def database_url(state_dir: Path) -> str:
    """The SQLite database of the witness in ``state_dir``."""
    return sqlite_url(state_dir / _DB)


def init_state(state_dir: Path, name: str) -> Cosigner:
    """Create the witness's key and name in ``state_dir`` unless they exist; return the cosigner.

    Idempotent for the same name; a different name for an existing key is refused."""
    try:
        Cosigner(name, ed25519.Ed25519PrivateKey.generate())
    except NoteError as exc:
        raise StateDirError(f"witness name: {exc}") from None
    if not state_dir.parent.is_dir():
        raise StateDirError(f"{state_dir}: the folder {state_dir.parent} does not exist")
    state_dir.mkdir(mode=0o700, exist_ok=True)
    name_file = state_dir / _NAME
    if name_file.exists():
        existing = name_file.read_text().strip()
        if existing != name:
            raise StateDirError(
                f"{state_dir} already holds the witness {existing!r}, not {name!r}; a witness "
                "keeps its name, since its clients trust name and key together"
            )
    key_file = state_dir / _KEY
    if not key_file.exists():
        # Two inits racing: one key wins and both print it.
        with contextlib.suppress(FileExistsError):
            write_private_key(key_file, ed25519.Ed25519PrivateKey.generate())
    if not name_file.exists():
        name_file.write_text(f"{name}\n")
    return load_cosigner(state_dir)


def load_cosigner(state_dir: Path) -> Cosigner:
    """The witness's key and name from ``state_dir``, made by ``init_state``."""
    key_file, name_file = state_dir / _KEY, state_dir / _NAME
    if not key_file.is_file() or not name_file.is_file():
        raise StateDirError(
            f"{state_dir} holds no witness: run `sigstead witness init --state-dir {state_dir} "
            "--name NAME` first"
        )
    key = load_private_key(key_file)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{key_file}: not an Ed25519 private key")
    try:
        return Cosigner(name_file.read_text().strip(), key)
    except NoteError as exc:
        raise StateDirError(f"{name_file}: {exc}") from None
