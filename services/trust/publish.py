"""Publishing the trust documents: into the TUF repository, and exported for consumers.

One process publishes a data directory's documents (it holds the publisher claim, see
``services.datadir``): the running server, at start-up and every few minutes, with its own
settings. Those settings (public URL, services, operator, sign-in URLs) are what clients that
follow the TUF repository act on, so a start whose settings differ from the published ones is
refused (``check_publication``); moving clients is an explicit operator action, ``sigstead trust
publish``. ``sigstead trust export`` writes out what is published, byte for byte, after checking
that its own settings would produce the same documents. Only before anything is published (a data
directory prepared before the first start) does the export publish itself.
"""

from __future__ import annotations

import base64
import datetime
import json
import shlex
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.errors import OperatorError
from services.settings import PUBLISHABLE
from services.trust import documents
from services.trust.material import TrustMaterial, gather
from services.trust.snippets import snippets
from services.trust.tuf import Published, TufRepository, write_atomic

__all__ = [
    "SIGNING_CONFIG",
    "TRUSTED_ROOT",
    "Difference",
    "Exported",
    "NotPublishedError",
    "Publication",
    "PublicationMismatch",
    "TrustOptions",
    "TrustSettingsError",
    "check_publication",
    "describe_services",
    "difference",
    "export",
    "parse_services",
    "publish",
    "published_settings",
]

TRUSTED_ROOT = "trusted_root.json"
SIGNING_CONFIG = "signing_config.v0.2.json"
CLIENT_TRUST_CONFIG = "client_trust_config.json"


class TrustSettingsError(OperatorError, ValueError):
    """The publication settings contradict each other (an OIDC URL without a CA, …)."""


SERVICE_NAMES = {"log": "Rekor log", "ca": "CA with its CT log", "tsa": "TSA"}


def describe_services(services: Collection[str]) -> str:
    """``Rekor log, CA with its CT log, TSA``: the services, in a fixed order, for people."""
    return ", ".join(SERVICE_NAMES[name] for name in PUBLISHABLE if name in services)


def parse_services(text: str) -> frozenset[str]:
    """``log,ca,tsa`` (the ``--services`` flag) as a set; the log is always one of them."""
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(names - set(PUBLISHABLE))
    if unknown:
        raise TrustSettingsError(
            f"--services: unknown {', '.join(unknown)}; choose from {','.join(PUBLISHABLE)}"
        )
    if "log" not in names:
        raise TrustSettingsError("--services must include log: every sigstead runs its log")
    return names


@dataclass(frozen=True, slots=True)
class TrustOptions:
    """What the documents say beyond the keys: where the services answer and who runs them."""

    public_url: str
    operator: str | None = None
    oidc_urls: Sequence[str] = ()
    # Set when the CA key is not in the data directory (operator files, PKCS#11).
    ca_chain: Sequence[x509.Certificate] | None = field(default=None, repr=False)
    # What clients are sent to: only services that run (a listed CA that answers 404 fails
    # signing later, with an error that names neither).
    services: frozenset[str] = frozenset(PUBLISHABLE)
    # The highest Rekor API version clients are sent to sign with (``--rekor-version``).
    rekor_version: int = 1
    # The Rekor v2 log's own URL (``--rekor-v2-url``; None: the public URL).
    rekor_v2_url: str | None = None

    def __post_init__(self) -> None:
        parse_services(",".join(self.services))
        if self.rekor_version not in (1, 2):
            raise TrustSettingsError(f"--rekor-version is 1 or 2, not {self.rekor_version}")
        self.endpoints  # noqa: B018 -- raises PublicURLError on an unusable URL
        if self.oidc_urls and "ca" not in self.services:
            raise TrustSettingsError(
                "--oidc-url names where clients sign in for the CA, and no CA is published"
            )

    @property
    def endpoints(self) -> documents.Endpoints:
        """The service URLs derived from the public URL."""
        return documents.Endpoints(self.public_url, self.operator, self.rekor_v2_url)

    @property
    def publication(self) -> Publication:
        """The settings these options publish."""
        endpoints = self.endpoints
        return Publication(
            endpoints.base,
            endpoints.operator,
            tuple(self.oidc_urls),
            self.services,
            self.rekor_version,
            # Only a signing config that lists the v2 log says where it is.
            endpoints.rekor_v2 if self.rekor_version == 2 else None,
        )

    def republish_command(self, data_dir: Path) -> str:
        """The ``sigstead trust publish`` command that publishes these options."""
        words = ["sigstead", "trust", "publish", "--data-dir", str(data_dir)]
        words += ["--public-url", self.public_url]
        words += ["--operator", self.operator] if self.operator else []
        for url in self.oidc_urls:
            words += ["--oidc-url", url]
        words += ["--services", ",".join(n for n in PUBLISHABLE if n in self.services)]
        words += ["--rekor-version", "2"] if self.rekor_version == 2 else []
        words += ["--rekor-v2-url", self.rekor_v2_url] if self.rekor_v2_url else []
        return " ".join(shlex.quote(word) for word in words)


@dataclass(frozen=True, slots=True)
class Publication:
    """What a signing config tells clients beyond keys: the settings a publisher must keep."""

    url: str
    operator: str
    oidc_urls: tuple[str, ...]
    services: frozenset[str]
    rekor_version: int = 1
    rekor_v2_url: str | None = None

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Publication:
        """The settings a published signing config was made with."""
        by_version = {int(r["majorApiVersion"]): r for r in config["rekorTlogUrls"]}
        rekor = by_version[1]
        listed = {"log": True, "ca": bool(config["caUrls"]), "tsa": bool(config["tsaUrls"])}
        return cls(
            rekor["url"],
            rekor["operator"],
            tuple(o["url"] for o in config["oidcUrls"]),
            frozenset(name for name, here in listed.items() if here),
            max(by_version),
            by_version[2]["url"] if 2 in by_version else None,
        )


@dataclass(frozen=True, slots=True)
class Difference:
    """The first setting in which two publications differ, and the flag that sets it."""

    what: str
    flag: str
    published: str
    wanted: str


def difference(have: Publication, want: Publication) -> Difference | None:
    """Where ``want`` departs from ``have``, or None if it does not."""
    if have.url != want.url:
        return Difference("public URL", "--public-url", have.url, want.url)
    if have.services != want.services:
        return Difference(
            "services",
            "--services",
            describe_services(have.services),
            describe_services(want.services),
        )
    if have.operator != want.operator:
        return Difference("operator", "--operator", repr(have.operator), repr(want.operator))
    if have.rekor_version != want.rekor_version:
        return Difference(
            "Rekor version for signing",
            "--rekor-version",
            str(have.rekor_version),
            str(want.rekor_version),
        )
    if have.rekor_v2_url != want.rekor_v2_url:
        return Difference(
            "Rekor v2 log URL",
            "--rekor-v2-url",
            str(have.rekor_v2_url),
            str(want.rekor_v2_url),
        )
    if have.oidc_urls != want.oidc_urls:
        return Difference(
            "sign-in URLs",
            "--oidc-url",
            " ".join(have.oidc_urls) or "none",
            " ".join(want.oidc_urls) or "none",
        )
    return None


def tuf_repository(data_dir: Path) -> TufRepository:
    """The data directory's TUF repository (served at ``/tuf/``)."""
    return TufRepository(data_dir / "tuf")


@dataclass(frozen=True, slots=True)
class Exported:
    """The published documents and repository versions."""

    trusted_root: documents.Document
    signing_config: documents.Document
    published: Published

    @property
    def services(self) -> frozenset[str]:
        """The services the signing config sends clients to."""
        return Publication.of(self.signing_config).services


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
        documents.signing_config(
            material, endpoints, options.oidc_urls, rekor_version=options.rekor_version
        ),
    )


def _gather(
    data_dir: Path, options: TrustOptions, now: datetime.datetime, *, create: bool
) -> TrustMaterial:
    return gather(
        data_dir, now, ca_chain=options.ca_chain, create=create, services=options.services
    )


def publish(
    data_dir: Path, options: TrustOptions, now: datetime.datetime, *, create_keys: bool = True
) -> Exported:
    """Bring the TUF repository in line with the data directory's keys; return the documents.

    ``create_keys`` makes missing keys, as the server's first start does; without it a missing
    key raises ``MissingKeysError``. Whoever calls this is the publisher: it holds the data
    directory's publisher claim (``services.datadir``), and has checked (``check_publication``)
    that it does not move clients elsewhere unless that is what the operator asked for.
    """
    material = _gather(data_dir, options, now, create=create_keys)
    built: list[documents.Document] = []

    def build(current: Callable[[str], bytes | None]) -> Mapping[str, bytes]:
        previous_bytes = current(TRUSTED_ROOT)
        previous = json.loads(previous_bytes) if previous_bytes is not None else None
        built[:] = _documents(material, options, now, previous)
        return {TRUSTED_ROOT: documents.dumps(built[0]), SIGNING_CONFIG: documents.dumps(built[1])}

    published = tuf_repository(data_dir).publish(build, now)
    return Exported(built[0], built[1], published)


def published_settings(data_dir: Path) -> Publication | None:
    """The settings of what ``data_dir`` publishes, or None before its first publication."""
    repo = tuf_repository(data_dir)
    if repo.published() is None:
        return None  # checked first: reading a target creates the repository's directory
    config = repo.current_target(SIGNING_CONFIG)
    return None if config is None else Publication.of(json.loads(config))


class PublicationMismatch(OperatorError):
    """A start would publish other settings than the published ones, moving clients."""


def check_publication(data_dir: Path, options: TrustOptions, *, changed_by: str) -> None:
    """Raise ``PublicationMismatch`` if publishing ``options`` would change what clients are
    told (URL, services, operator, sign-in URLs); nothing published yet is no change.

    Clients that follow the TUF repository go wherever it sends them, so a start under a new
    URL must never move them as a side effect: that is ``sigstead trust publish``'s job.
    ``changed_by`` names the flag that sets the services for this caller (``--services`` or
    ``--oidc-config``).
    """
    have = published_settings(data_dir)
    if have is None:
        return
    diff = difference(have, options.publication)
    if diff is None:
        return
    flag = changed_by if diff.flag == "--services" else diff.flag
    raise PublicationMismatch(
        f"{data_dir} publishes {diff.what} {diff.published}; this start would publish "
        f"{diff.wanted} ({flag}) and move every client that follows its TUF repository. Start "
        f"with the published settings, or, to move clients, stop every server on {data_dir} "
        f"and run: {options.republish_command(data_dir)}"
    )


class NotPublishedError(OperatorError):
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
    diff = difference(Publication.of(have_config), options.publication)
    if diff is not None:
        raise NotPublishedError(
            f"the server publishes {diff.what} {diff.published}, not {diff.wanted}: give the "
            f"server's {diff.flag} (moving clients is `sigstead trust publish`)"
        )
    material = _gather(data_dir, options, now, create=False)
    want_root, want_config = _documents(material, options, now, have_root)
    if documents.dumps(want_root) == root_bytes and documents.dumps(want_config) == config_bytes:
        return Exported(have_root, have_config, published)
    raise NotPublishedError(
        "the data directory's keys or CA chain are not the published ones: give the server's "
        "--ca-chain, or restart the server so that it publishes them"
    )


def _pem_snippets(root: Mapping[str, Any]) -> dict[str, bytes]:
    """The current log and TSA keys as PEM: what a deployment without a CA has to hand out."""
    rekor = serialization.load_der_public_key(
        base64.b64decode(root["tlogs"][0]["publicKey"]["rawBytes"])
    )
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    files = {"pem/rekor.pub": rekor.public_bytes(serialization.Encoding.PEM, spki)}
    tsas = [t for t in root["timestampAuthorities"] if "end" not in t["validFor"]]
    if tsas:
        files["pem/tsa-chain.pem"] = b"".join(
            x509.load_der_x509_certificate(base64.b64decode(c["rawBytes"])).public_bytes(
                serialization.Encoding.PEM
            )
            for c in tsas[0]["certChain"]["certificates"]
        )
    return files


def export(
    data_dir: Path,
    options: TrustOptions,
    out: Path,
    now: datetime.datetime,
    *,
    identity: str | None = None,
    issuer: str | None = None,
    images: str | None = None,
    builder: str | None = None,
    create_keys: bool = False,
) -> Exported:
    """Write everything a consumer needs into ``out`` (no private key): what the server has
    published, or, before anything is published, a first publication.

    Unlike the server, an export does not make keys unless ``create_keys`` is set: the data
    directory is the one the server runs with, and a wrong one must fail, not invent keys.
    Raises ``NotPublishedError`` if ``options`` describe other documents than the published ones.
    The caller holds the publisher claim if nothing is published yet (the export publishes).
    """
    if out.exists() and not out.is_dir():
        raise NotPublishedError(f"--out {out} is a file; give a directory to write into")
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
    if "ca" in exported.services:
        tuf_files = {
            path.relative_to(out / "tuf").as_posix(): path.read_bytes()
            for path in sorted((out / "tuf").rglob("*"))
            if path.is_file()
        }
        timestamp = json.loads(tuf_files["timestamp.json"])
        files = snippets(
            root,
            config,
            options.endpoints,
            tuf_root=repo.root_json(),
            tuf_files=tuf_files,
            tuf_expires=str(timestamp["signed"]["expires"]),
            identity=identity,
            issuer=issuer,
            images=images,
            builder=builder,
        )
    else:
        # The policy snippets all verify keyless signatures, which need the CA.
        files = _pem_snippets(root)
    for name, content in files.items():
        write_atomic(out / "snippets" / name, content)
    return exported
