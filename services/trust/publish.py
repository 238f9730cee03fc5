"""Publishing the trust documents: into the TUF repository, and exported for consumers.

The running server is the one publisher: it publishes at start-up and every few minutes, with
its own settings. ``sigstead trust export`` writes out what is published, byte for byte, after
checking that its own settings would produce the same documents; a second publisher with other
settings (another public URL, operator or OIDC URL) would otherwise have the server and the
export take turns overwriting each other's targets. Only before anything is published (a data
directory prepared before the first start) does the export publish itself.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from services.trust import documents
from services.trust.material import TrustMaterial, gather
from services.trust.snippets import snippets
from services.trust.tuf import Published, TufRepository, write_atomic

__all__ = [
    "SIGNING_CONFIG",
    "TRUSTED_ROOT",
    "Exported",
    "NotPublishedError",
    "TrustOptions",
    "export",
    "publish",
]

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


def _documents(
    material: TrustMaterial,
    options: TrustOptions,
    now: datetime.datetime,
    previous: Mapping[str, Any] | None,
) -> tuple[documents.Document, documents.Document]:
    """The trusted root (merged with ``previous``) and the signing config for ``options``."""
    endpoints = options.endpoints
    return (
        documents.trusted_root(material, endpoints, now, previous),
        documents.signing_config(material, endpoints, options.oidc_urls),
    )


def publish(
    data_dir: Path, options: TrustOptions, now: datetime.datetime, *, create_keys: bool = True
) -> Exported:
    """Bring the TUF repository in line with the data directory's keys; return the documents.

    ``create_keys`` makes missing keys, as the server's first start does; without it a missing
    key raises ``MissingKeysError``.
    """
    material = gather(data_dir, now, ca_chain=options.ca_chain, create=create_keys)
    built: list[documents.Document] = []

    def build(current: Callable[[str], bytes | None]) -> Mapping[str, bytes]:
        previous_bytes = current(TRUSTED_ROOT)
        previous = json.loads(previous_bytes) if previous_bytes is not None else None
        built[:] = _documents(material, options, now, previous)
        return {TRUSTED_ROOT: documents.dumps(built[0]), SIGNING_CONFIG: documents.dumps(built[1])}

    published = tuf_repository(data_dir).publish(build, now)
    return Exported(built[0], built[1], published)


class NotPublishedError(Exception):
    """The export's settings describe other documents than the ones the server publishes."""


def _published_documents(
    repo: TufRepository,
    published: Published,
    data_dir: Path,
    options: TrustOptions,
    now: datetime.datetime,
) -> Exported:
    """The published documents, if the export's settings reproduce them exactly; else raise
    ``NotPublishedError`` saying which setting differs."""
    root_bytes = repo.current_target(TRUSTED_ROOT)
    config_bytes = repo.current_target(SIGNING_CONFIG)
    if root_bytes is None or config_bytes is None:
        raise NotPublishedError(f"{data_dir}: the TUF repository has no documents")
    have_root, have_config = json.loads(root_bytes), json.loads(config_bytes)
    material = gather(data_dir, now, ca_chain=options.ca_chain, create=False)
    want_root, want_config = _documents(material, options, now, have_root)
    if documents.dumps(want_root) == root_bytes and documents.dumps(want_config) == config_bytes:
        return Exported(have_root, have_config, published)
    raise NotPublishedError(_difference(have_config, want_config))


def _difference(have: Mapping[str, Any], want: Mapping[str, Any]) -> str:
    """Why the export's signing config is not the published one, in the server's terms."""
    have_ca, want_ca = have["caUrls"][0], want["caUrls"][0]
    if have_ca["url"] != want_ca["url"]:
        return (
            f"the server publishes for {have_ca['url']}, not {want_ca['url']}: give the "
            "server's --public-url (or restart the server with the new one)"
        )
    if have_ca.get("operator") != want_ca.get("operator"):
        return (
            f"the server publishes operator {have_ca.get('operator')!r}, not "
            f"{want_ca.get('operator')!r}: give the server's --operator (or restart it with yours)"
        )
    have_oidc = [o["url"] for o in have["oidcUrls"]]
    want_oidc = [o["url"] for o in want["oidcUrls"]]
    if have_oidc != want_oidc:
        return (
            f"the server publishes OIDC URLs {have_oidc}, not {want_oidc}: give the server's "
            "--oidc-url flags (or restart it with yours)"
        )
    return (
        "the data directory's keys or CA chain are not the published ones: give the server's "
        "--ca-chain, or restart the server so that it publishes them"
    )


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
    """Write everything a consumer needs into ``out`` (no private key): what the server has
    published, or, before anything is published, a first publication.

    Unlike the server, an export does not make keys unless ``create_keys`` is set: the data
    directory is the one the server runs with, and a wrong one must fail, not invent keys.
    Raises ``NotPublishedError`` if ``options`` describe other documents than the published ones.
    """
    repo = tuf_repository(data_dir)
    published = repo.published()
    if published is None:
        exported = publish(data_dir, options, now, create_keys=create_keys)
    else:
        exported = _published_documents(repo, published, data_dir, options, now)
    root, config = exported.trusted_root, exported.signing_config
    write_atomic(out / TRUSTED_ROOT, documents.dumps(root))
    write_atomic(out / SIGNING_CONFIG, documents.dumps(config))
    client_config = documents.client_trust_config(root, config)
    write_atomic(out / CLIENT_TRUST_CONFIG, documents.dumps(client_config))
    repo.copy_to(out / "tuf")
    for name, content in snippets(
        root,
        config,
        options.endpoints,
        identity=identity,
        issuer=issuer,
        tuf_root=repo.root_json(),
    ).items():
        write_atomic(out / "snippets" / name, content)
    return exported
