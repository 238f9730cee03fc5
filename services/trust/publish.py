"""Publishing the trust documents: into the TUF repository, and exported for consumers.

The server and ``sigstead trust export`` both go through ``publish``, so the repository the
server serves at ``/tuf/`` and the files an export writes are the same bytes.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from services.trust import documents
from services.trust.material import gather
from services.trust.snippets import snippets
from services.trust.tuf import Published, TufRepository

__all__ = ["SIGNING_CONFIG", "TRUSTED_ROOT", "Exported", "TrustOptions", "export", "publish"]

TRUSTED_ROOT = "trusted_root.json"
SIGNING_CONFIG = "signing_config.v0.2.json"
CLIENT_TRUST_CONFIG = "client_trust_config.json"


@dataclass(frozen=True, slots=True)
class TrustOptions:
    """What the documents say beyond the keys: where the services answer and who runs them."""

    public_url: str
    operator: str | None = None
    oidc_urls: Sequence[str] = ()
    # Set when the CA key is not in the data directory (operator files, PKCS#11).
    ca_chain: Sequence[x509.Certificate] | None = field(default=None, repr=False)

    @property
    def endpoints(self) -> documents.Endpoints:
        """The service URLs derived from the public URL."""
        return documents.Endpoints(self.public_url, self.operator)


def tuf_repository(data_dir: Path) -> TufRepository:
    """The data directory's TUF repository (served at ``/tuf/``)."""
    return TufRepository(data_dir / "tuf")


@dataclass(frozen=True, slots=True)
class Exported:
    """The published documents and repository versions."""

    trusted_root: documents.Document
    signing_config: documents.Document
    published: Published


def publish(
    data_dir: Path, options: TrustOptions, now: datetime.datetime, *, create_keys: bool = True
) -> Exported:
    """Bring the TUF repository in line with the data directory's keys; return the documents.

    ``create_keys`` makes missing keys, as the server's first start does; without it a missing
    key raises ``MissingKeysError``.
    """
    endpoints = options.endpoints
    material = gather(data_dir, now, ca_chain=options.ca_chain, create=create_keys)
    built: dict[str, documents.Document] = {}

    def build(current: Callable[[str], bytes | None]) -> Mapping[str, bytes]:
        previous_bytes = current(TRUSTED_ROOT)
        previous = json.loads(previous_bytes) if previous_bytes is not None else None
        built["root"] = documents.trusted_root(material, endpoints, now, previous)
        built["config"] = documents.signing_config(material, endpoints, options.oidc_urls)
        return {
            TRUSTED_ROOT: documents.dumps(built["root"]),
            SIGNING_CONFIG: documents.dumps(built["config"]),
        }

    published = tuf_repository(data_dir).publish(build, now)
    return Exported(built["root"], built["config"], published)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def export(
    data_dir: Path,
    options: TrustOptions,
    out: Path,
    now: datetime.datetime,
    *,
    identity: str | None = None,
    issuer: str | None = None,
    create_keys: bool = False,
) -> Exported:
    """Publish, then write everything a consumer needs into ``out`` (no private key).

    Unlike the server, an export does not make keys unless ``create_keys`` is set: the data
    directory is the one the server runs with, and a wrong one must fail, not invent keys.
    """
    exported = publish(data_dir, options, now, create_keys=create_keys)
    root, config = exported.trusted_root, exported.signing_config
    _write(out / TRUSTED_ROOT, documents.dumps(root))
    _write(out / SIGNING_CONFIG, documents.dumps(config))
    _write(out / CLIENT_TRUST_CONFIG, documents.dumps(documents.client_trust_config(root, config)))
    repo = tuf_repository(data_dir)
    repo.copy_to(out / "tuf")
    for name, content in snippets(
        root,
        config,
        options.endpoints,
        identity=identity,
        issuer=issuer,
        tuf_root=repo.root_json(),
    ).items():
        _write(out / "snippets" / name, content)
    return exported
