"""What a sigstead server is told to do: ``Settings`` and the names the command line offers.

Kept free of heavy imports: the command line builds its parser from these names, and
``sigstead --help`` must not load aiohttp, SQLAlchemy or cryptography to print them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from services.ca.pkcs11 import Pkcs11KeyConfig

__all__ = [
    "COMPONENTS",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_BODY",
    "PUBLISHABLE",
    "Settings",
    "default_database_url",
]

# The largest Rekor entry accepted (--max-body). Entries carry digests, signatures, keys and
# DSSE envelopes, never artifacts: 4 MiB holds an attestation with thousands of subjects.
DEFAULT_MAX_BODY = 4 * 1024 * 1024
DEFAULT_BODY_TIMEOUT = 30.0

# What one process can serve: ``sigstead up`` runs all of them, ``sigstead serve NAME`` one.
COMPONENTS = ("log", "tsa", "ca", "trust")
# What the trust documents can list for clients to use; the log is always among them.
PUBLISHABLE = ("log", "ca", "tsa")


CA_KEY_TYPES = ("ecdsa-p384", "ecdsa-p256", "rsa-3072", "rsa-4096")
"""Key types of a CA generated in the data directory (``services.ca.keys.CAKeyType``), the
default first: Fulcio's public CA is P-384."""

LOG_KEY_TYPES = ("ecdsa-p256", "ed25519")
"""Key types a Rekor v2 log can sign checkpoints with (``--rekor-v2-key-type``)."""


def default_database_url(data_dir: Path) -> str:
    """SQLite in the data directory: the database when none is named."""
    return f"sqlite:///{data_dir / 'sigstead.db'}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``create_app`` needs; see ``sigstead up --help`` for each field."""

    data_dir: Path
    public_url: str
    database_url: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    batch_max_size: int = 256
    batch_max_age: float = 0.0
    max_pending: int = 10_000
    oidc_config: Path | None = None
    # The CA key: an operator's PEM key + chain, or a PKCS#11 token + chain; neither generates
    # one in the data directory. Secrets (password, PIN) come from files or the environment.
    ca_key: Path | None = None
    ca_key_password_file: Path | None = None
    ca_chain: Path | None = None
    ca_pkcs11: Pkcs11KeyConfig | None = None
    # The key type of a CA generated in the data directory (None: P-384, as Fulcio's).
    ca_key_type: str | None = None
    # What the published trust documents say beyond keys and URLs (``sigstead trust export``
    # must be given the same, or it refuses: the server is the one publisher).
    operator: str | None = None
    # The Rekor API version the signing config sends clients to (1, or 2 for v2 first).
    rekor_version: int = 1
    # Whether the Rekor v2 log takes dsseRequestV002 (sigstore-js 4.x attestations).
    rekor_v2_dsse: bool = True
    # The type of a new Rekor v2 checkpoint key ("ecdsa-p256" or "ed25519"); an existing key
    # keeps its type.
    rekor_v2_key_type: str = "ecdsa-p256"
    # The Rekor v2 log's own base URL (None: the public URL); its host is the log's origin.
    rekor_v2_url: str | None = None
    # Sign the Rekor v2 log's final checkpoint at start and take no more entries.
    rekor_v2_freeze: bool = False
    oidc_urls: tuple[str, ...] = ()
    # The services a trust-only process (``serve trust``) publishes; None: the ones already
    # published (all of them on a first publication). A process that runs the services itself
    # publishes those it runs, and this must be None.
    published_services: frozenset[str] | None = None
    # Sigsum-syntax witness policy: the logs ask its witnesses to cosign each new checkpoint.
    witness_policy: Path | None = None
    witness_interval: float = 5.0
    # Processes serving on one port (SO_REUSEPORT); with more than one, or on PostgreSQL, the
    # processes elect one sequencer per log and forward to it (services/log/cluster.py).
    workers: int = 1
    # This process's place in its pool: only worker 0 re-signs the TUF metadata.
    worker: int = 0
    # Where this process takes forwarded entries when it is elected, and the URL the others
    # reach it at (default: http:// the address bound).
    sequencer_listen: tuple[str, int] = ("127.0.0.1", 0)
    sequencer_url: str | None = None
    clock: Callable[[], float] | None = field(default=None, repr=False)

    @property
    def hostname(self) -> str:
        """The public URL's host: the checkpoint key name and origin prefix."""
        host = urlsplit(self.public_url).hostname
        if not host:
            raise ValueError(f"public URL {self.public_url!r} has no host")
        return host

    @property
    def rekor_v2_hostname(self) -> str:
        """The Rekor v2 log's host: its checkpoint origin and key name."""
        host = urlsplit(self.rekor_v2_url or self.public_url).hostname
        if not host:
            raise ValueError(f"Rekor v2 URL {self.rekor_v2_url!r} has no host")
        return host

    @property
    def clustered(self) -> bool:
        """Whether other processes may sequence this one's logs: a worker pool, or PostgreSQL
        (replicas on other hosts may share it)."""
        url = self.resolved_database_url()
        return self.workers > 1 or url.startswith(("postgresql:", "postgres:", "postgresql+"))

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data directory."""
        return self.database_url or default_database_url(self.data_dir)
