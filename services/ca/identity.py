"""From verified claims to certificate identity: the SAN, the Fulcio extensions, the PoP challenge.

One ``Principal`` per issuer type, as Fulcio's ``pkg/identity/<type>/principal.go`` (fulcio.md §3.3,
§4.2). Claim checks that fail raise ``InvalidIdentityToken`` (Fulcio rejects those while
authenticating); template rendering that fails for ``ci-provider`` raises ``IdentityMappingError``,
whose text Fulcio returns to the client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from services.ca.config import FulcioConfig, IssuerType
from services.ca.errors import IdentityMappingError, InvalidIdentityToken
from services.ca.oidc import Claims
from services.ca.template import Template, TemplateError

__all__ = [
    "FULCIO_OID_ARC",
    "OID_ISSUER",
    "OID_ISSUER_V2",
    "OID_OTHERNAME",
    "OID_TOKEN_SUBJECT",
    "Extensions",
    "Principal",
    "der_utf8_string",
    "principal_from_claims",
]

FULCIO_OID_ARC = "1.3.6.1.4.1.57264.1"


def _oid(n: int) -> x509.ObjectIdentifier:
    return x509.ObjectIdentifier(f"{FULCIO_OID_ARC}.{n}")


OID_ISSUER = _oid(1)
OID_OTHERNAME = _oid(7)
OID_ISSUER_V2 = _oid(8)
OID_TOKEN_SUBJECT = _oid(24)

# field name -> (OID arc number, raw encoding?). Declaration order of ``Extensions`` is the order
# Fulcio writes them: 1.1, 1.2-1.6, 1.8, 1.9-1.23, 1.24.
_EXTENSION_OIDS: Mapping[str, tuple[int, bool]] = {
    "github_workflow_trigger": (2, True),
    "github_workflow_sha": (3, True),
    "github_workflow_name": (4, True),
    "github_workflow_repository": (5, True),
    "github_workflow_ref": (6, True),
    "build_signer_uri": (9, False),
    "build_signer_digest": (10, False),
    "runner_environment": (11, False),
    "source_repository_uri": (12, False),
    "source_repository_digest": (13, False),
    "source_repository_ref": (14, False),
    "source_repository_identifier": (15, False),
    "source_repository_owner_uri": (16, False),
    "source_repository_owner_identifier": (17, False),
    "build_config_uri": (18, False),
    "build_config_digest": (19, False),
    "build_trigger": (20, False),
    "run_invocation_uri": (21, False),
    "source_repository_visibility_at_signing": (22, False),
    "deployment_environment": (23, False),
    "token_subject": (24, False),
}


def der_utf8_string(value: str) -> bytes:
    """DER ``UTF8String`` (tag 0x0C) of ``value``: the encoding of extensions 1.8 and up."""
    data = value.encode()
    n = len(data)
    if n < 0x80:
        length = bytes([n])
    else:
        octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(octets)]) + octets
    return b"\x0c" + length + data


@dataclass(frozen=True, slots=True)
class Extensions:
    """Fulcio's certificate extensions (``pkg/certificate/extensions.go``), empty means absent."""

    issuer: str
    github_workflow_trigger: str = ""
    github_workflow_sha: str = ""
    github_workflow_name: str = ""
    github_workflow_repository: str = ""
    github_workflow_ref: str = ""
    build_signer_uri: str = ""
    build_signer_digest: str = ""
    runner_environment: str = ""
    source_repository_uri: str = ""
    source_repository_digest: str = ""
    source_repository_ref: str = ""
    source_repository_identifier: str = ""
    source_repository_owner_uri: str = ""
    source_repository_owner_identifier: str = ""
    build_config_uri: str = ""
    build_config_digest: str = ""
    build_trigger: str = ""
    run_invocation_uri: str = ""
    source_repository_visibility_at_signing: str = ""
    deployment_environment: str = ""
    token_subject: str = ""

    def render(self) -> tuple[x509.UnrecognizedExtension, ...]:
        """The extensions in Fulcio's order; 1.1-1.6 raw UTF-8, 1.8 and up DER UTF8String."""
        if not self.issuer:
            raise IdentityMappingError("extensions must have a non-empty issuer url")
        raw = [x509.UnrecognizedExtension(OID_ISSUER, self.issuer.encode())]
        der = [x509.UnrecognizedExtension(OID_ISSUER_V2, der_utf8_string(self.issuer))]
        for f in fields(self):
            if f.name == "issuer":
                continue
            value = getattr(self, f.name)
            if not value:
                continue
            arc, is_raw = _EXTENSION_OIDS[f.name]
            if is_raw:
                raw.append(x509.UnrecognizedExtension(_oid(arc), value.encode()))
            else:
                der.append(x509.UnrecognizedExtension(_oid(arc), der_utf8_string(value)))
        return (*raw, *der)


@dataclass(frozen=True, slots=True)
class Principal:
    """What a verified token becomes in the certificate.

    ``name`` is Fulcio's ``Name()``, the message Fulcio requires the proof of possession to sign.
    ``proof_messages`` are all messages accepted: ``name`` first, then ``sub`` and ``email``,
    because clients disagree on which one they sign (cosign#3777, sigstore-go#282, fulcio#1726).
    """

    name: str
    san: x509.GeneralName
    extensions: Extensions
    proof_messages: tuple[str, ...]

    @property
    def san_value(self) -> str:
        """The SAN as sigstore policies compare it (email, URI, or ``user!domain``)."""
        if isinstance(self.san, x509.OtherName):
            return _parse_der_utf8(self.san.value)
        value = self.san.value
        assert isinstance(value, str)
        return value


def _parse_der_utf8(data: bytes) -> str:
    # Only ever called on values der_utf8_string produced.
    if data[1] < 0x80:
        return data[2:].decode()
    return data[2 + (data[1] & 0x7F) :].decode()


# --- claim helpers ---------------------------------------------------------------------------

_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_SPIFFE_ID = re.compile(r"spiffe://([a-z0-9._-]+)((?:/[A-Za-z0-9._-]+)*)")
_JSONPATH_STEP = re.compile(r"\.([^.\[\]]+)|\[\"([^\"]+)\"\]")


def _required(claims: Claims, *names: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        value = claims.values.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidIdentityToken(f"missing {name} claim in ID token")
        out[name] = value
    return out


def _is_email(value: str) -> bool:
    return value.isascii() and _EMAIL.fullmatch(value) is not None


def _json_path(values: Mapping[str, Any], path: str) -> Any:
    node: Any = values
    for m in _JSONPATH_STEP.finditer(path, 1):
        key = m.group(1) or m.group(2)
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _uri_san(value: str) -> x509.UniformResourceIdentifier:
    # A SAN is an IA5String: Fulcio fails at signing (500) on non-ASCII; we refuse up front.
    if not value.isascii() or any(c.isspace() or ord(c) < 0x20 for c in value):
        raise IdentityMappingError(f"subject alternative name {value!r} is not a valid URI")
    parts = urlsplit(value)
    if not parts.scheme or not (parts.netloc or parts.path):
        raise IdentityMappingError(f"subject alternative name {value!r} is not a valid URI")
    return x509.UniformResourceIdentifier(value)


def _join(base: str, *elements: str) -> str:
    """Go's ``url.JoinPath`` for the simple cases Fulcio uses: one slash between elements."""
    out = base.rstrip("/")
    for e in elements:
        out += "/" + e.strip("/")
    return out


def _messages(name: str, claims: Claims) -> tuple[str, ...]:
    seen: list[str] = []
    for m in (name, claims.subject, claims.string("email")):
        if m and m not in seen:
            seen.append(m)
    return tuple(seen)


def _go_string(value: Any) -> str:
    """A claim value as Fulcio's ci-provider stringifies it (fulcio.md §3.1)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if value is None:
        return "<nil>"
    if isinstance(value, list):
        return "[" + " ".join(_go_string(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = sorted(value.items())
        return "map[" + " ".join(f"{k}:{_go_string(v)}" for k, v in items) + "]"
    return str(value)


# --- per-type principals ---------------------------------------------------------------------


def _email(claims: Claims) -> Principal:
    email = claims.string("email")
    if not _is_email(email):
        raise InvalidIdentityToken(f"email claim {email!r} is not a valid email address")
    issuer = claims.iss
    if claims.issuer.issuer_claim:
        mapped = _json_path(claims.values, claims.issuer.issuer_claim)
        if not isinstance(mapped, str) or not mapped:
            raise InvalidIdentityToken(
                f"issuer claim {claims.issuer.issuer_claim} is missing or not a string"
            )
        issuer = mapped
    return Principal(
        name=email,
        san=x509.RFC822Name(email),
        extensions=Extensions(issuer=issuer, token_subject=claims.subject),
        proof_messages=_messages(email, claims),
    )


def _kubernetes(claims: Claims) -> Principal:
    k8s = claims.values.get("kubernetes.io")
    namespace = k8s.get("namespace") if isinstance(k8s, Mapping) else None
    sa = k8s.get("serviceaccount") if isinstance(k8s, Mapping) else None
    sa_name = sa.get("name") if isinstance(sa, Mapping) else None
    if (
        not isinstance(namespace, str)
        or not isinstance(sa_name, str)
        or not namespace
        or not sa_name
    ):
        raise InvalidIdentityToken("missing kubernetes.io namespace or serviceaccount name claim")
    if "/" in namespace or "/" in sa_name:
        raise InvalidIdentityToken("kubernetes namespace or serviceaccount name contains '/'")
    uri = f"https://kubernetes.io/namespaces/{namespace}/serviceaccounts/{sa_name}"
    return Principal(
        name=claims.subject,
        san=_uri_san(uri),
        extensions=Extensions(issuer=claims.iss, token_subject=claims.subject),
        proof_messages=_messages(claims.subject, claims),
    )


def _spiffe(claims: Claims) -> Principal:
    sub = claims.subject
    m = _SPIFFE_ID.fullmatch(sub)
    if m is None or any(seg in (".", "..") for seg in m.group(2).split("/")[1:]):
        raise InvalidIdentityToken(f"sub {sub!r} is not a SPIFFE ID")
    if m.group(1) != claims.issuer.spiffe_trust_domain:
        raise InvalidIdentityToken(
            f"SPIFFE ID {sub!r} is not in trust domain {claims.issuer.spiffe_trust_domain!r}"
        )
    return Principal(
        name=sub,
        san=_uri_san(sub),
        extensions=Extensions(issuer=claims.iss, token_subject=sub),
        proof_messages=_messages(sub, claims),
    )


def _uri(claims: Claims) -> Principal:
    sub = claims.subject
    if not sub or _is_email(sub):
        raise InvalidIdentityToken("uri subject must be a URI, not empty or an email address")
    subject, domain = urlsplit(sub), urlsplit(claims.issuer.subject_domain)
    if subject.scheme != domain.scheme:
        raise InvalidIdentityToken(f"subject {sub!r} scheme differs from {domain.scheme!r}")
    if subject.hostname != domain.hostname:
        raise InvalidIdentityToken(f"subject {sub!r} host differs from {domain.hostname!r}")
    try:
        san = _uri_san(sub)
    except IdentityMappingError as exc:
        raise InvalidIdentityToken(exc.detail) from None
    return Principal(
        name=sub,
        san=san,
        extensions=Extensions(issuer=claims.iss, token_subject=sub),
        proof_messages=_messages(sub, claims),
    )


def _username(claims: Claims) -> Principal:
    sub = claims.subject
    if not sub or "!" in sub or _is_email(sub):
        raise InvalidIdentityToken("username subject must be non-empty, without '!', not an email")
    value = f"{sub}!{claims.issuer.subject_domain}"
    return Principal(
        name=sub,
        san=x509.OtherName(OID_OTHERNAME, der_utf8_string(value)),
        extensions=Extensions(issuer=claims.iss, token_subject=sub),
        proof_messages=_messages(sub, claims),
    )


_GITHUB_CLAIMS = (
    "job_workflow_ref",
    "sha",
    "event_name",
    "repository",
    "workflow",
    "ref",
    "job_workflow_sha",
    "runner_environment",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "repository_visibility",
    "workflow_ref",
    "workflow_sha",
    "run_id",
    "run_attempt",
)


def _github_workflow(claims: Claims) -> Principal:
    c = _required(claims, *_GITHUB_CLAIMS)
    base = "https://github.com"
    signer = _join(base, c["job_workflow_ref"])
    extensions = Extensions(
        issuer=claims.iss,
        github_workflow_trigger=c["event_name"],
        github_workflow_sha=c["sha"],
        github_workflow_name=c["workflow"],
        github_workflow_repository=c["repository"],
        github_workflow_ref=c["ref"],
        build_signer_uri=signer,
        build_signer_digest=c["job_workflow_sha"],
        runner_environment=c["runner_environment"],
        source_repository_uri=_join(base, c["repository"]),
        source_repository_digest=c["sha"],
        source_repository_ref=c["ref"],
        source_repository_identifier=c["repository_id"],
        source_repository_owner_uri=_join(base, c["repository_owner"]),
        source_repository_owner_identifier=c["repository_owner_id"],
        build_config_uri=_join(base, c["workflow_ref"]),
        build_config_digest=c["workflow_sha"],
        build_trigger=c["event_name"],
        run_invocation_uri=_join(
            base, c["repository"], "actions/runs", c["run_id"], "attempts", c["run_attempt"]
        ),
        source_repository_visibility_at_signing=c["repository_visibility"],
        deployment_environment=claims.string("environment"),
        token_subject=claims.subject,
    )
    return Principal(
        name=claims.subject,
        san=_uri_san(signer),
        extensions=extensions,
        proof_messages=_messages(claims.subject, claims),
    )


def _gitlab_pipeline(claims: Claims) -> Principal:
    c = _required(
        claims,
        "project_path",
        "pipeline_source",
        "pipeline_id",
        "ci_config_ref_uri",
        "job_id",
        "ref",
        "ref_type",
        "namespace_path",
        "namespace_id",
        "project_id",
        "sha",
        "runner_environment",
    )
    runner_id = claims.values.get("runner_id")
    if isinstance(runner_id, bool) or not isinstance(runner_id, int) or runner_id == 0:
        raise InvalidIdentityToken("missing runner_id claim in ID token")
    if c["ref_type"] == "branch":
        ref = "refs/heads/" + c["ref"]
    elif c["ref_type"] == "tag":
        ref = "refs/tags/" + c["ref"]
    else:
        raise InvalidIdentityToken(f"unexpected ref_type: {c['ref_type']}")
    # The instance URL is the issuer (legacy Fulcio hard-codes https://gitlab.com, which is wrong
    # for a self-hosted GitLab and identical for gitlab.com).
    base = claims.iss.rstrip("/")
    base_parts = urlsplit(base)
    # ci_config_ref_uri has no scheme ("gitlab.com/group/project//.gitlab-ci.yml@refs/heads/main"):
    # https, or the issuer's scheme when it is on the issuer's host.
    config_host = c["ci_config_ref_uri"].split("/", 1)[0]
    scheme = base_parts.scheme if config_host == base_parts.netloc else "https"
    config_uri = f"{scheme}://{c['ci_config_ref_uri']}"
    extensions = Extensions(
        issuer=claims.iss,
        build_signer_uri=config_uri,
        build_signer_digest=claims.string("ci_config_sha"),
        runner_environment=c["runner_environment"],
        source_repository_uri=_join(base, c["project_path"]),
        source_repository_digest=c["sha"],
        source_repository_ref=ref,
        source_repository_identifier=c["project_id"],
        source_repository_owner_uri=_join(base, c["namespace_path"]),
        source_repository_owner_identifier=c["namespace_id"],
        build_config_uri=config_uri,
        build_config_digest=claims.string("ci_config_sha"),
        build_trigger=c["pipeline_source"],
        run_invocation_uri=_join(base, c["project_path"], "-/jobs", c["job_id"]),
        source_repository_visibility_at_signing=claims.string("project_visibility"),
        deployment_environment=claims.string("environment"),
        token_subject=claims.subject,
    )
    return Principal(
        name=claims.subject,
        san=_uri_san(config_uri),
        extensions=extensions,
        proof_messages=_messages(claims.subject, claims),
    )


def _ci_provider(claims: Claims, config: FulcioConfig) -> Principal:
    metadata = config.ci_issuer_metadata.get(claims.issuer.ci_provider)
    if metadata is None:
        # Config loading guarantees the entry; reaching this means a hand-built config.
        raise IdentityMappingError(
            f"metadata not found for ci provider {claims.issuer.ci_provider}"
        )
    data = dict(metadata.default_template_values)
    data.update((str(k), _go_string(v)) for k, v in claims.values.items())

    def apply(template: Template, what: str) -> str:
        # Fulcio: a value with "{{" is a template; anything else names a claim (or default).
        try:
            if "{{" in template.source:
                return template.render(data)
            if template.source not in data:
                raise TemplateError(
                    f"value <{template.source}> not present in either claims or defaults. "
                    f"Issuer: {claims.iss}"
                )
            return data[template.source]
        except TemplateError as exc:
            raise IdentityMappingError(f"{what}: {exc}") from None

    san = apply(metadata.subject_alternative_name_template, "subject alternative name")
    rendered = {attr: apply(t, attr) for attr, t in metadata.extension_templates}
    extensions = Extensions(
        issuer=claims.iss,
        token_subject=claims.subject,
        **{k: v for k, v in rendered.items() if v},
    )
    return Principal(
        name=claims.subject,
        san=_uri_san(san),
        extensions=extensions,
        proof_messages=_messages(claims.subject, claims),
    )


def principal_from_claims(claims: Claims, config: FulcioConfig) -> Principal:
    """Map a verified token to its certificate identity according to its issuer's type."""
    t = claims.issuer.type
    if t is IssuerType.EMAIL:
        return _email(claims)
    if t is IssuerType.KUBERNETES:
        return _kubernetes(claims)
    if t is IssuerType.SPIFFE:
        return _spiffe(claims)
    if t is IssuerType.URI:
        return _uri(claims)
    if t is IssuerType.USERNAME:
        return _username(claims)
    if t is IssuerType.GITHUB_WORKFLOW:
        return _github_workflow(claims)
    if t is IssuerType.GITLAB_PIPELINE:
        return _gitlab_pipeline(claims)
    return _ci_provider(claims, config)
