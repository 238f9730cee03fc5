"""Fulcio's own issuer configuration (``config.json`` / ``config.yaml``), read as Fulcio reads it.

Format (fulcio.md §3.1): JSON is tried first, then YAML. JSON uses the Go field names and, like
Go's ``encoding/json``, matches them case-insensitively; YAML uses the kebab-case names and is
exact. Keys Fulcio does not know are ignored by Fulcio; we log them at WARNING so a typo is
visible, and the YAML ``define:`` block that the public config uses for anchors is skipped.

Our additions, per issuer: ``JWKSFile``/``jwks-file`` (an offline JWKS for air-gapped sites: no
discovery, no network) and ``AllowInsecureHTTP``/``allow-insecure-http`` (an ``http://`` issuer is
refused unless its entry says so).

Validation is Fulcio's (``validateConfig``) plus refusals of combinations that cannot mean what the
operator wrote; every message names the offending field in the file's own spelling.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509

from services.ca.template import Template, TemplateError, parse_template
from services.errors import OperatorError

__all__ = [
    "EXTENSION_FIELDS",
    "CIIssuerMetadata",
    "ConfigError",
    "FulcioConfig",
    "IssuerType",
    "MetaIssuer",
    "OIDCIssuer",
    "load_config",
    "parse_config",
]

_logger = logging.getLogger(__name__)


class ConfigError(OperatorError, ValueError):
    """The configuration is unusable; the message names the field and the rule."""


class IssuerType(enum.StrEnum):
    """Fulcio issuer types this CA can map to certificates (fulcio.md §3.3)."""

    EMAIL = "email"
    GITHUB_WORKFLOW = "github-workflow"
    GITLAB_PIPELINE = "gitlab-pipeline"
    KUBERNETES = "kubernetes"
    SPIFFE = "spiffe"
    URI = "uri"
    USERNAME = "username"
    CI_PROVIDER = "ci-provider"


# Types Fulcio knows but this CA does not implement; they are refused at load time.
_UNSUPPORTED_TYPES = {
    "buildkite-job": "use type ci-provider with ci-provider buildkite-job and its CIIssuerMetadata",
    "codefresh-workflow": "use type ci-provider with a codefresh CIIssuerMetadata entry",
    "chainguard-identity": "Chainguard's own identity tokens are not supported",
}

# The Fulcio certificate extensions a ci-provider template may fill, in Fulcio's struct order:
# (our field name, JSON key = Go field name, YAML key).  ``Issuer`` is absent on purpose: Fulcio
# always takes it from the token.
EXTENSION_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("github_workflow_trigger", "GithubWorkflowTrigger", "github-workflow-trigger"),
    ("github_workflow_sha", "GithubWorkflowSHA", "github-workflow-sha"),
    ("github_workflow_name", "GithubWorkflowName", "github-workflow-name"),
    ("github_workflow_repository", "GithubWorkflowRepository", "github-workflow-repository"),
    ("github_workflow_ref", "GithubWorkflowRef", "github-workflow-ref"),
    ("build_signer_uri", "BuildSignerURI", "build-signer-uri"),
    ("build_signer_digest", "BuildSignerDigest", "build-signer-digest"),
    ("runner_environment", "RunnerEnvironment", "runner-environment"),
    ("source_repository_uri", "SourceRepositoryURI", "source-repository-uri"),
    ("source_repository_digest", "SourceRepositoryDigest", "source-repository-digest"),
    ("source_repository_ref", "SourceRepositoryRef", "source-repository-ref"),
    ("source_repository_identifier", "SourceRepositoryIdentifier", "source-repository-identifier"),
    ("source_repository_owner_uri", "SourceRepositoryOwnerURI", "source-repository-owner-uri"),
    (
        "source_repository_owner_identifier",
        "SourceRepositoryOwnerIdentifier",
        "source-repository-owner-identifier",
    ),
    ("build_config_uri", "BuildConfigURI", "build-config-uri"),
    ("build_config_digest", "BuildConfigDigest", "build-config-digest"),
    ("build_trigger", "BuildTrigger", "build-trigger"),
    ("run_invocation_uri", "RunInvocationURI", "run-invocation-uri"),
    (
        "source_repository_visibility_at_signing",
        "SourceRepositoryVisibilityAtSigning",
        "source-repository-visibility-at-signing",
    ),
    ("deployment_environment", "DeploymentEnvironment", "deployment-environment"),
)


@dataclass(frozen=True, slots=True)
class OIDCIssuer:
    """One issuer entry; for a meta issuer matched by a token, ``issuer_url`` is its ``iss``."""

    issuer_url: str
    client_id: str
    type: IssuerType
    ci_provider: str = ""
    issuer_claim: str = ""
    subject_domain: str = ""
    spiffe_trust_domain: str = ""
    challenge_claim: str = ""
    ca_cert: str = ""
    skip_email_verification: bool = False
    jwks_file: Path | None = None
    allow_insecure_http: bool = False
    description: str = ""
    contact: str = ""
    environment: str = ""

    @property
    def effective_challenge_claim(self) -> str:
        """The claim clients sign for proof of possession (advisory, as in Fulcio's API)."""
        if self.challenge_claim:
            return self.challenge_claim
        return "email" if self.type is IssuerType.EMAIL else "sub"

    def ssl_context(self) -> ssl.SSLContext | None:
        """System roots plus ``CACert`` for discovery/JWKS TLS, or None for the defaults."""
        if not self.ca_cert:
            return None
        context = ssl.create_default_context()
        context.load_verify_locations(cadata=self.ca_cert)
        return context


@dataclass(frozen=True, slots=True)
class MetaIssuer:
    """A wildcard issuer: each ``*`` matches ``[-_a-zA-Z0-9]+``; the whole URL is anchored."""

    pattern: str
    template: OIDCIssuer
    regex: re.Pattern[str] = field(compare=False)

    def match(self, iss: str) -> OIDCIssuer | None:
        """The concrete issuer for ``iss`` if it matches this pattern."""
        if self.regex.fullmatch(iss) is None:
            return None
        return replace(self.template, issuer_url=iss)


@dataclass(frozen=True, slots=True)
class CIIssuerMetadata:
    """Templates for one ``ci-provider`` (fulcio.md §3.1)."""

    default_template_values: Mapping[str, str]
    extension_templates: tuple[tuple[str, Template], ...]
    subject_alternative_name_template: Template


@dataclass(frozen=True, slots=True)
class FulcioConfig:
    """The whole configuration; lookups follow Fulcio (exact issuers first, then meta issuers)."""

    oidc_issuers: Mapping[str, OIDCIssuer]
    meta_issuers: tuple[MetaIssuer, ...] = ()
    ci_issuer_metadata: Mapping[str, CIIssuerMetadata] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def find_issuer(self, iss: str) -> OIDCIssuer | None:
        """The issuer configuration for a token's (unverified) ``iss``, or None."""
        exact = self.oidc_issuers.get(iss)
        if exact is not None:
            return exact
        for meta in self.meta_issuers:
            found = meta.match(iss)
            if found is not None:
                return found
        return None


# --- parsing ---------------------------------------------------------------------------------

# (attribute, JSON key, YAML key, kind) for issuer entries.
_ISSUER_FIELDS: tuple[tuple[str, str, str, type], ...] = (
    ("issuer_url", "IssuerURL", "issuer-url", str),
    ("client_id", "ClientID", "client-id", str),
    ("type", "Type", "type", str),
    ("ci_provider", "CIProvider", "ci-provider", str),
    ("issuer_claim", "IssuerClaim", "issuer-claim", str),
    ("subject_domain", "SubjectDomain", "subject-domain", str),
    ("spiffe_trust_domain", "SPIFFETrustDomain", "spiffe-trust-domain", str),
    ("challenge_claim", "ChallengeClaim", "challenge-claim", str),
    ("ca_cert", "CACert", "ca-cert", str),
    ("skip_email_verification", "SkipEmailVerification", "skip-email-verification", bool),
    ("jwks_file", "JWKSFile", "jwks-file", str),
    ("allow_insecure_http", "AllowInsecureHTTP", "allow-insecure-http", bool),
    ("description", "Description", "description", str),
    ("contact", "Contact", "contact", str),
    ("environment", "Environment", "environment", str),
)

_TOP_FIELDS = (
    ("oidc_issuers", "OIDCIssuers", "oidc-issuers"),
    ("meta_issuers", "MetaIssuers", "meta-issuers"),
    ("ci_issuer_metadata", "CIIssuerMetadata", "ci-issuer-metadata"),
)

_CI_FIELDS = (
    ("default_template_values", "DefaultTemplateValues", "default-template-values"),
    ("extension_templates", "ExtensionTemplates", "extension-templates"),
    (
        "subject_alternative_name_template",
        "SubjectAlternativeNameTemplate",
        "subject-alternative-name-template",
    ),
)
# Older Fulcio releases called ExtensionTemplates "ClaimsTemplates" in JSON.
_JSON_ALIASES = {"claimstemplates": "extension_templates"}

_SPIFFE_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")


class _Reader:
    """Maps a decoded document's keys onto our attribute names, in the document's own spelling."""

    def __init__(self, is_json: bool, base_dir: Path) -> None:
        self.is_json = is_json
        self.base_dir = base_dir

    def fields(
        self,
        where: str,
        raw: Any,
        spec: tuple[tuple[str, str, str], ...],
        *,
        ignore: frozenset[str] = frozenset(),
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Return ({attribute: value}, {attribute: key as written}) for a mapping."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where or 'configuration'}: want a mapping, got {_kind(raw)}")
        by_key: dict[str, str] = {}
        for attr, json_key, yaml_key in spec:
            by_key[json_key.lower() if self.is_json else yaml_key] = attr
        if self.is_json:
            by_key.update(_JSON_ALIASES)
        values: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        for key, value in raw.items():
            lookup = str(key).lower() if self.is_json else str(key)
            found = by_key.get(lookup)
            if found is None:
                if str(key) not in ignore:
                    _logger.warning("%s: ignoring unknown key %r", where or "configuration", key)
                continue
            if found in values:
                raise ConfigError(f"{where}.{key}: given twice (as {spelled[found]} and {key})")
            values[found] = value
            spelled[found] = str(key)
        return values, spelled

    def name(self, attr: str, spec: tuple[tuple[str, str, str], ...] | None = None) -> str:
        """The key for ``attr`` in this document's spelling (for error messages)."""
        for a, json_key, yaml_key, *_ in spec or _ISSUER_FIELDS:
            if a == attr:
                return json_key if self.is_json else yaml_key
        return attr


def _kind(value: Any) -> str:
    return type(value).__name__ if value is not None else "nothing"


def _url_ok(where: str, reader: _Reader, url: str, allow_http: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https":
        pass
    elif parts.scheme == "http":
        if not allow_http:
            raise ConfigError(
                f"{where}: {url} is plain http; set {reader.name('allow_insecure_http')} "
                "on this issuer to accept it"
            )
    else:
        raise ConfigError(f"{where}: issuer URL {url!r} must be https:// (or http:// if allowed)")
    if not parts.hostname:
        raise ConfigError(f"{where}: issuer URL {url!r} has no host")


def _last_two_labels(host: str) -> list[str]:
    return host.lower().rstrip(".").split(".")[-2:]


def _domain_matches(where: str, what: str, domain_host: str, issuer_host: str) -> None:
    # Fulcio: both hosts need at least two labels, and the last two must agree, i.e. whoever
    # configured the issuer also controls the subject domain.
    d, i = _last_two_labels(domain_host), _last_two_labels(issuer_host)
    if len(d) < 2 or len(i) < 2:
        raise ConfigError(f"{where}: {what} and the issuer host need at least two DNS labels")
    if d != i:
        raise ConfigError(
            f"{where}: {what} {domain_host!r} is not under the issuer's domain {issuer_host!r}"
        )


def _issuer(reader: _Reader, where: str, key: str, raw: Any, *, meta: bool) -> OIDCIssuer:
    values, spelled = reader.fields(where, raw, tuple((a, j, y) for a, j, y, _ in _ISSUER_FIELDS))
    for attr, _, _, kind in _ISSUER_FIELDS:
        if attr in values:
            value = values[attr]
            if kind is bool and not isinstance(value, bool):
                raise ConfigError(f"{where}.{spelled[attr]}: want true or false, got {value!r}")
            if kind is str and not isinstance(value, str):
                raise ConfigError(f"{where}.{spelled[attr]}: want a string, got {_kind(value)}")

    def f(attr: str) -> str:
        return f"{where}.{spelled.get(attr, reader.name(attr))}"

    url = str(values.get("issuer_url", ""))
    if meta:
        if url:
            raise ConfigError(
                f"{f('issuer_url')}: a meta issuer has no fixed URL (the token's iss is used)"
            )
        url = key
    elif not url:
        url = key
    elif url != key:
        raise ConfigError(f"{f('issuer_url')}: {url!r} differs from its map key {key!r}")

    type_name = str(values.get("type", ""))
    if type_name in _UNSUPPORTED_TYPES:
        raise ConfigError(
            f"{f('type')}: {type_name} is not supported; {_UNSUPPORTED_TYPES[type_name]}"
        )
    try:
        issuer_type = IssuerType(type_name)
    except ValueError:
        known = ", ".join(t.value for t in IssuerType)
        raise ConfigError(
            f"{f('type')}: unknown issuer type {type_name!r} (known: {known})"
        ) from None

    client_id = str(values.get("client_id", ""))
    if not client_id:
        raise ConfigError(f"{f('client_id')}: required (the audience tokens must carry)")

    allow_http = bool(values.get("allow_insecure_http", False))
    _url_ok(where, reader, url.replace("*", "x"), allow_http)

    jwks_file: Path | None = None
    if values.get("jwks_file"):
        if meta:
            raise ConfigError(
                f"{f('jwks_file')}: a meta issuer matches many issuers; one offline key set "
                "cannot belong to all of them"
            )
        jwks_file = Path(values["jwks_file"])
        if not jwks_file.is_absolute():
            jwks_file = reader.base_dir / jwks_file
        _check_jwks_file(f("jwks_file"), jwks_file)

    issuer = OIDCIssuer(
        issuer_url=url,
        client_id=client_id,
        type=issuer_type,
        ci_provider=str(values.get("ci_provider", "")),
        issuer_claim=str(values.get("issuer_claim", "")),
        subject_domain=str(values.get("subject_domain", "")),
        spiffe_trust_domain=str(values.get("spiffe_trust_domain", "")),
        challenge_claim=str(values.get("challenge_claim", "")),
        ca_cert=str(values.get("ca_cert", "")),
        skip_email_verification=bool(values.get("skip_email_verification", False)),
        jwks_file=jwks_file,
        allow_insecure_http=allow_http,
        description=str(values.get("description", "")),
        contact=str(values.get("contact", "")),
        environment=str(values.get("environment", "")),
    )
    _validate_issuer(issuer, f, meta=meta)
    return issuer


def _check_jwks_file(where: str, path: Path) -> None:
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{where}: {path} is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise ConfigError(f'{where}: {path} is not a JWKS with a non-empty "keys" list')


def _validate_issuer(issuer: OIDCIssuer, f: Any, *, meta: bool) -> None:
    t = issuer.type
    if issuer.issuer_claim and t is not IssuerType.EMAIL:
        raise ConfigError(f"{f('issuer_claim')}: only email issuers can map the issuer claim")
    if issuer.issuer_claim and not re.fullmatch(
        r"\$(\.[^.\[\]]+|\[\"[^\"]+\"\])+", issuer.issuer_claim
    ):
        raise ConfigError(
            f"{f('issuer_claim')}: {issuer.issuer_claim!r} is not a JSONPath of the form $.a.b"
        )
    if issuer.skip_email_verification and t is not IssuerType.EMAIL:
        raise ConfigError(f"{f('skip_email_verification')}: only meaningful for email issuers")
    if issuer.ci_provider and t is not IssuerType.CI_PROVIDER:
        raise ConfigError(f"{f('ci_provider')}: only meaningful for type ci-provider")
    if t is IssuerType.CI_PROVIDER and not issuer.ci_provider:
        raise ConfigError(f"{f('ci_provider')}: required for type ci-provider")
    if issuer.spiffe_trust_domain and t is not IssuerType.SPIFFE:
        raise ConfigError(f"{f('spiffe_trust_domain')}: only meaningful for type spiffe")
    if issuer.subject_domain and t not in (IssuerType.URI, IssuerType.USERNAME):
        raise ConfigError(f"{f('subject_domain')}: only meaningful for types uri and username")
    if issuer.ca_cert:
        try:
            x509.load_pem_x509_certificates(issuer.ca_cert.encode())
        except ValueError:
            raise ConfigError(f"{f('ca_cert')}: not a PEM certificate") from None

    if t is IssuerType.SPIFFE:
        if meta:
            raise ConfigError(f"{f('type')}: SPIFFE meta issuers are not supported")
        if not issuer.spiffe_trust_domain:
            raise ConfigError(f"{f('spiffe_trust_domain')}: required for type spiffe")
        if not _SPIFFE_TRUST_DOMAIN.fullmatch(issuer.spiffe_trust_domain):
            raise ConfigError(f"{f('spiffe_trust_domain')}: not a valid SPIFFE trust domain")

    issuer_host = urlsplit(issuer.issuer_url).hostname or ""
    if t is IssuerType.URI:
        if not issuer.subject_domain:
            raise ConfigError(f"{f('subject_domain')}: required for type uri")
        domain = urlsplit(issuer.subject_domain)
        if not domain.scheme or not domain.hostname:
            raise ConfigError(f"{f('subject_domain')}: for uri it must be scheme://host")
        if domain.scheme != urlsplit(issuer.issuer_url).scheme:
            raise ConfigError(
                f"{f('subject_domain')}: scheme {domain.scheme!r} differs from the issuer's"
            )
        if not meta:
            _domain_matches(f("subject_domain"), "subject domain", domain.hostname, issuer_host)
    if t is IssuerType.USERNAME:
        if not issuer.subject_domain:
            raise ConfigError(f"{f('subject_domain')}: required for type username")
        if "://" in issuer.subject_domain or "/" in issuer.subject_domain:
            raise ConfigError(f"{f('subject_domain')}: for username it must be a bare domain")
        if not meta:
            _domain_matches(
                f("subject_domain"), "subject domain", issuer.subject_domain, issuer_host
            )


def _meta_regex(pattern: str) -> re.Pattern[str]:
    # Quote everything, then let each * match one URL part; anchored (GHSA-59jp-pj84-45mr).
    return re.compile(re.escape(pattern).replace(re.escape("*"), "[-_a-zA-Z0-9]+"))


def _ci_metadata(reader: _Reader, where: str, raw: Any) -> CIIssuerMetadata:
    values, spelled = reader.fields(where, raw, _CI_FIELDS)
    defaults_raw = values.get("default_template_values") or {}
    if not isinstance(defaults_raw, Mapping):
        raise ConfigError(f"{where}.{spelled['default_template_values']}: want a mapping")
    defaults: dict[str, str] = {}
    for k, v in defaults_raw.items():
        if not isinstance(v, str):
            raise ConfigError(f"{where}.{spelled['default_template_values']}.{k}: want a string")
        defaults[str(k)] = v

    ext_name = spelled.get("extension_templates", reader.name("extension_templates", _CI_FIELDS))
    ext_where = f"{where}.{ext_name}"
    ext_raw = values.get("extension_templates") or {}
    ext_values, ext_spelled = reader.fields(
        ext_where, ext_raw, EXTENSION_FIELDS, ignore=frozenset({"issuer", "Issuer"})
    )
    templates: list[tuple[str, Template]] = []
    for attr, _, _ in EXTENSION_FIELDS:
        source = ext_values.get(attr)
        if source is None:
            continue
        if not isinstance(source, str):
            raise ConfigError(f"{ext_where}.{ext_spelled[attr]}: want a string")
        if not source.strip():
            continue
        try:
            templates.append((attr, parse_template(source)))
        except TemplateError as exc:
            raise ConfigError(f"{ext_where}.{ext_spelled[attr]}: {exc}") from None

    san_name = spelled.get(
        "subject_alternative_name_template",
        reader.name("subject_alternative_name_template", _CI_FIELDS),
    )
    san_source = values.get("subject_alternative_name_template", "")
    if not isinstance(san_source, str) or not san_source.strip():
        raise ConfigError(f"{where}.{san_name}: required and must not be empty")
    try:
        san = parse_template(san_source)
    except TemplateError as exc:
        raise ConfigError(f"{where}.{san_name}: {exc}") from None
    return CIIssuerMetadata(MappingProxyType(defaults), tuple(templates), san)


def parse_config(text: str | bytes, *, base_dir: Path | None = None) -> FulcioConfig:
    """Parse a Fulcio configuration document (JSON first, then YAML) and validate it.

    ``base_dir`` resolves relative ``JWKSFile`` paths (defaults to the working directory).
    """
    base = base_dir or Path.cwd()
    try:
        doc = json.loads(text)
        reader = _Reader(is_json=True, base_dir=base)
    except ValueError:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = "" if mark is None else f" (line {mark.line + 1}, column {mark.column + 1})"
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"neither JSON nor YAML: {problem}{where}") from None
        reader = _Reader(is_json=False, base_dir=base)
    if doc is None:
        doc = {}
    top, spelled = reader.fields("", doc, _TOP_FIELDS, ignore=frozenset({"define"}))

    def top_name(attr: str) -> str:
        return spelled.get(attr, reader.name(attr, _TOP_FIELDS))

    ci: dict[str, CIIssuerMetadata] = {}
    ci_raw = top.get("ci_issuer_metadata") or {}
    if not isinstance(ci_raw, Mapping):
        raise ConfigError(f"{top_name('ci_issuer_metadata')}: want a mapping")
    for name, raw in ci_raw.items():
        ci[str(name)] = _ci_metadata(reader, f'{top_name("ci_issuer_metadata")}["{name}"]', raw)

    exact: dict[str, OIDCIssuer] = {}
    metas: list[MetaIssuer] = []
    for attr, is_meta in (("oidc_issuers", False), ("meta_issuers", True)):
        group = top.get(attr) or {}
        if not isinstance(group, Mapping):
            raise ConfigError(f"{top_name(attr)}: want a mapping")
        for key, raw in group.items():
            where = f'{top_name(attr)}["{key}"]'
            issuer = _issuer(reader, where, str(key), raw, meta=is_meta)
            if issuer.type is IssuerType.CI_PROVIDER and issuer.ci_provider not in ci:
                raise ConfigError(
                    f"{where}.{reader.name('ci_provider')}: {issuer.ci_provider!r} has no entry "
                    f"in {top_name('ci_issuer_metadata')}"
                )
            if is_meta:
                metas.append(MetaIssuer(str(key), issuer, _meta_regex(str(key))))
            else:
                exact[str(key)] = issuer
    if not exact and not metas:
        raise ConfigError(
            f"no issuers configured: {top_name('oidc_issuers')} and {top_name('meta_issuers')} "
            "are both empty"
        )
    return FulcioConfig(MappingProxyType(exact), tuple(metas), MappingProxyType(ci))


def load_config(path: Path) -> FulcioConfig:
    """Read and parse a Fulcio configuration file; relative JWKS paths resolve next to it."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        return parse_config(text, base_dir=path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
