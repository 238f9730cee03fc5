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
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from services.trust import documents
from services.trust.material import gather
from services.trust.snippets import snippets
from services.trust.tuf import Published, TufRepository

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


class NotPublishedError(Exception):
    """The export's settings describe other documents than the ones the server publishes."""


def _published_documents(data_dir: Path, options: TrustOptions, now: datetime.datetime) -> Exported:
    """The published documents, if the export's settings reproduce them exactly; else raise
    ``NotPublishedError`` saying which setting differs."""
    repo = tuf_repository(data_dir)
    published = repo.published()
    root_bytes = repo.current_target(TRUSTED_ROOT)
    config_bytes = repo.current_target(SIGNING_CONFIG)
    if published is None or root_bytes is None or config_bytes is None:
        raise NotPublishedError(f"{data_dir}: the TUF repository has no documents")
    have_root, have_config = json.loads(root_bytes), json.loads(config_bytes)
    material = gather(data_dir, now, ca_chain=options.ca_chain, create=False)
    want_root = documents.trusted_root(material, options.endpoints, now, have_root)
    want_config = documents.signing_config(material, options.endpoints, options.oidc_urls)
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
    """Write everything a consumer needs into ``out`` (no private key): what the server has
    published, or, before anything is published, a first publication.

    Unlike the server, an export does not make keys unless ``create_keys`` is set: the data
    directory is the one the server runs with, and a wrong one must fail, not invent keys.
    Raises ``NotPublishedError`` if ``options`` describe other documents than the published ones.
    """
    if tuf_repository(data_dir).published() is None:
        exported = publish(data_dir, options, now, create_keys=create_keys)
    else:
        exported = _published_documents(data_dir, options, now)
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
