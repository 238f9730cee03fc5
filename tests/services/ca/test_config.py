"""Fulcio configuration files, YAML and JSON, as the public deployment writes them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from services.ca.config import ConfigError, IssuerType, load_config, parse_config

# The shape of Fulcio's public config/identity/config.yaml (abridged): YAML anchors in a
# ``define`` block, metadata keys Fulcio does not enforce, meta issuers, ci-provider templates.
PUBLIC_YAML = """
define:
  - &github-type "github-workflow"
  - &gitlab-type "gitlab-pipeline"
  - &circleci-type "circleci-job"
oidc-issuers:
  https://accounts.google.com:
    issuer-url: https://accounts.google.com
    client-id: sigstore
    type: email
    contact: tac@sigstore.dev
    description: "Google OIDC auth"
  https://oauth2.sigstore.dev/auth:
    issuer-url: https://oauth2.sigstore.dev/auth
    client-id: sigstore
    type: email
    issuer-claim: $.federated_claims.connector_id
  https://gitlab.com:
    issuer-url: https://gitlab.com
    client-id: sigstore
    type: ci-provider
    ci-provider: *gitlab-type
  https://token.actions.githubusercontent.com:
    issuer-url: https://token.actions.githubusercontent.com
    client-id: sigstore
    type: ci-provider
    ci-provider: *github-type
  https://allow.pub:
    issuer-url: https://allow.pub
    client-id: sigstore
    type: spiffe
    spiffe-trust-domain: allow.pub
meta-issuers:
  https://container.googleapis.com/v1/projects/*/locations/*/clusters/*:
    client-id: sigstore
    type: kubernetes
  https://oidc.eks.*.amazonaws.com/id/*:
    client-id: sigstore
    type: kubernetes
  https://token.actions.githubusercontent.com/*:
    client-id: sigstore
    type: ci-provider
    ci-provider: *github-type
ci-issuer-metadata:
  *github-type:
    default-template-values:
      url: "https://github.com"
      environment: ""
    extension-templates:
      github-workflow-trigger: "event_name"
      build-signer-uri: "{{ .url }}/{{ .job_workflow_ref }}"
      run-invocation-uri: "{{ .url }}/{{ .repository }}/actions/runs/{{ .run_id }}/attempts/{{ .run_attempt }}"
      deployment-environment: "environment"
    subject-alternative-name-template: "{{ .url }}/{{ .job_workflow_ref }}"
  *gitlab-type:
    default-template-values:
      url: "https://gitlab.com"
    extension-templates:
      source-repository-ref: refs/{{if eq .ref_type "branch"}}heads/{{ else }}tags/{{end}}{{ .ref }}
    subject-alternative-name-template: "https://{{ .ci_config_ref_uri }}"
  *circleci-type:
    default-template-values:
      api_url: "https://circleci.com/api/v2"
    extension-templates:
      runner-environment: '{{if eq (index . "oidc.circleci.com/ssh-rerun") "true"}}ssh-rerun{{ else }}""{{end}}'
    subject-alternative-name-template: '{{.api_url}}/projects/{{(index . "oidc.circleci.com/project-id")}}'
"""  # noqa: E501

# Fulcio's JSON form (the docker-compose config.json style): Go field names, MetaIssuers.
PUBLIC_JSON: dict[str, Any] = {
    "OIDCIssuers": {
        "https://dex.example.com/auth": {
            "IssuerURL": "https://dex.example.com/auth",
            "ClientID": "sigstore",
            "Type": "email",
            "IssuerClaim": "$.federated_claims.connector_id",
        },
        "https://kubernetes.default.svc": {
            "IssuerURL": "https://kubernetes.default.svc",
            "ClientID": "sigstore",
            "Type": "kubernetes",
        },
        "https://accounts.example.com": {
            "IssuerURL": "https://accounts.example.com",
            "ClientID": "sigstore",
            "Type": "uri",
            "SubjectDomain": "https://example.com",
        },
        "https://login.example.com": {
            "IssuerURL": "https://login.example.com",
            "ClientID": "sigstore",
            "Type": "username",
            "SubjectDomain": "example.com",
        },
    },
    "MetaIssuers": {
        "https://oidc.eks.*.amazonaws.com/id/*": {"ClientID": "sigstore", "Type": "kubernetes"},
    },
    "CIIssuerMetadata": {
        "github-workflow": {
            "DefaultTemplateValues": {"url": "https://github.com"},
            "ExtensionTemplates": {"BuildSignerURI": "{{ .url }}/{{ .job_workflow_ref }}"},
            "SubjectAlternativeNameTemplate": "{{ .url }}/{{ .job_workflow_ref }}",
        }
    },
}


def test_public_yaml_config() -> None:
    config = parse_config(PUBLIC_YAML)
    assert set(config.oidc_issuers) == {
        "https://accounts.google.com",
        "https://oauth2.sigstore.dev/auth",
        "https://gitlab.com",
        "https://token.actions.githubusercontent.com",
        "https://allow.pub",
    }
    dex = config.oidc_issuers["https://oauth2.sigstore.dev/auth"]
    assert dex.type is IssuerType.EMAIL
    assert dex.issuer_claim == "$.federated_claims.connector_id"
    assert dex.effective_challenge_claim == "email"
    gh = config.oidc_issuers["https://token.actions.githubusercontent.com"]
    assert (gh.type, gh.ci_provider) == (IssuerType.CI_PROVIDER, "github-workflow")
    assert gh.effective_challenge_claim == "sub"
    assert config.oidc_issuers["https://accounts.google.com"].contact == "tac@sigstore.dev"
    assert set(config.ci_issuer_metadata) == {"github-workflow", "gitlab-pipeline", "circleci-job"}
    github = config.ci_issuer_metadata["github-workflow"]
    assert [name for name, _ in github.extension_templates] == [
        "github_workflow_trigger",
        "build_signer_uri",
        "run_invocation_uri",
        "deployment_environment",
    ]
    assert github.default_template_values["url"] == "https://github.com"


@pytest.mark.parametrize(
    ("iss", "pattern"),
    [
        (
            "https://oidc.eks.us-west-2.amazonaws.com/id/B02C93B6A2D30341AD01E1B6D48164CB",
            "https://oidc.eks.*.amazonaws.com/id/*",
        ),
        (
            "https://container.googleapis.com/v1/projects/mattmoor-credit/locations/us-west1-b/clusters/tenant-cluster",
            "https://container.googleapis.com/v1/projects/*/locations/*/clusters/*",
        ),
        ("https://token.actions.githubusercontent.com/octo-enterprise", None),
    ],
)
def test_meta_issuers_match(iss: str, pattern: str | None) -> None:
    config = parse_config(PUBLIC_YAML)
    found = config.find_issuer(iss)
    assert found is not None
    assert found.issuer_url == iss
    if pattern is not None:
        assert found.type is IssuerType.KUBERNETES
    else:
        assert found.ci_provider == "github-workflow"


@pytest.mark.parametrize(
    "iss",
    [
        "https://oidc.eks.us-west-2.amazonaws.com/id/ABC/extra",
        "https://oidc.eks.a.b.amazonaws.com/id/ABC",  # * does not match a dot
        "https://oidc.eks..amazonaws.com/id/ABC",  # * matches at least one character
        "https://oidc.eks.x.amazonaws.com/id/ABC?x=1",
        "https://evil.example/https://oidc.eks.x.amazonaws.com/id/ABC",
        "https://accounts.google.com/",  # exact issuers match exactly
    ],
)
def test_meta_issuers_are_anchored(iss: str) -> None:
    assert parse_config(PUBLIC_YAML).find_issuer(iss) is None


def test_exact_issuers_win_over_meta() -> None:
    config = parse_config(PUBLIC_YAML)
    found = config.find_issuer("https://token.actions.githubusercontent.com")
    assert found is config.oidc_issuers["https://token.actions.githubusercontent.com"]


def test_public_json_config_and_case_insensitive_keys() -> None:
    config = parse_config(json.dumps(PUBLIC_JSON))
    assert config.oidc_issuers["https://login.example.com"].subject_domain == "example.com"
    assert config.find_issuer("https://oidc.eks.eu-west-1.amazonaws.com/id/X1") is not None
    # Go's encoding/json matches field names case-insensitively; Fulcio configs rely on it.
    lower = json.loads(json.dumps(PUBLIC_JSON).replace('"ClientID"', '"clientid"'))
    assert parse_config(json.dumps(lower)) == config


def test_unknown_keys_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    doc = {"OIDCIssuers": {"https://a.example": {"ClientID": "s", "Type": "email", "Colour": 1}}}
    with caplog.at_level(logging.WARNING, logger="services.ca.config"):
        parse_config(json.dumps(doc))
    assert "Colour" in caplog.text


def _one(extra: dict[str, Any], url: str = "https://id.example.com") -> str:
    return json.dumps({"OIDCIssuers": {url: {"ClientID": "sigstore", **extra}}})


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        (_one({"Type": "email"}, "http://id.example.com"), "AllowInsecureHTTP", "plain http"),
        (_one({"Type": "email"}, "ftp://id.example.com"), "", "https://"),
        (_one({"Type": "email", "IssuerURL": "https://other.example.com"}), "IssuerURL", "differs"),
        (_one({"Type": "email", "ClientID": ""}), "ClientID", "required"),
        (_one({"Type": "magic"}), "Type", "unknown issuer type"),
        (_one({"Type": "buildkite-job"}), "Type", "not supported"),
        (
            _one({"Type": "uri", "IssuerClaim": "$.x", "SubjectDomain": "https://example.com"}),
            "IssuerClaim",
            "only email",
        ),
        (_one({"Type": "email", "IssuerClaim": "connector_id"}), "IssuerClaim", "JSONPath"),
        (_one({"Type": "spiffe"}), "SPIFFETrustDomain", "required"),
        (_one({"Type": "spiffe", "SPIFFETrustDomain": "Bad Domain"}), "SPIFFETrustDomain", "valid"),
        (_one({"Type": "uri"}), "SubjectDomain", "required"),
        (_one({"Type": "uri", "SubjectDomain": "example.com"}), "SubjectDomain", "scheme://host"),
        (_one({"Type": "uri", "SubjectDomain": "http://example.com"}), "SubjectDomain", "scheme"),
        (_one({"Type": "uri", "SubjectDomain": "https://evil.com"}), "SubjectDomain", "not under"),
        (
            _one({"Type": "username", "SubjectDomain": "https://example.com"}),
            "SubjectDomain",
            "bare domain",
        ),
        (_one({"Type": "username", "SubjectDomain": "evil.org"}), "SubjectDomain", "not under"),
        (
            _one({"Type": "email", "SubjectDomain": "example.com"}),
            "SubjectDomain",
            "only meaningful",
        ),
        (
            _one(
                {
                    "Type": "uri",
                    "SubjectDomain": "https://example.com",
                    "SkipEmailVerification": True,
                }
            ),
            "SkipEmailVerification",
            "only meaningful",
        ),
        (
            _one({"Type": "email", "SkipEmailVerification": "yes"}),
            "SkipEmailVerification",
            "true or false",
        ),
        (_one({"Type": "ci-provider"}), "CIProvider", "required"),
        (_one({"Type": "ci-provider", "CIProvider": "nope"}), "CIProvider", "no entry"),
        (_one({"Type": "email", "CIProvider": "github-workflow"}), "CIProvider", "only meaningful"),
        (_one({"Type": "email", "JWKSFile": "/nonexistent/jwks.json"}), "JWKSFile", "cannot read"),
        (_one({"Type": "email", "CACert": "not a cert"}), "CACert", "PEM"),
        (
            json.dumps(
                {
                    "MetaIssuers": {
                        "https://*.example.com": {
                            "ClientID": "s",
                            "Type": "spiffe",
                            "SPIFFETrustDomain": "example.com",
                        }
                    }
                }
            ),
            "Type",
            "SPIFFE meta",
        ),
        (
            json.dumps(
                {
                    "MetaIssuers": {
                        "https://*.example.com": {"ClientID": "s", "Type": "email", "JWKSFile": "x"}
                    }
                }
            ),
            "JWKSFile",
            "meta issuer",
        ),
        (
            json.dumps(
                {
                    "MetaIssuers": {
                        "https://*.example.com": {
                            "ClientID": "s",
                            "Type": "email",
                            "IssuerURL": "https://a.example.com",
                        }
                    }
                }
            ),
            "IssuerURL",
            "meta issuer",
        ),
        (json.dumps({"OIDCIssuers": {}}), "OIDCIssuers", "no issuers"),
        (
            json.dumps({"CIIssuerMetadata": {"x": {"SubjectAlternativeNameTemplate": " "}}}),
            "SubjectAlternativeNameTemplate",
            "must not be empty",
        ),
        (
            json.dumps(
                {
                    "CIIssuerMetadata": {
                        "x": {"SubjectAlternativeNameTemplate": "{{range .x}}{{end}}"}
                    }
                }
            ),
            "SubjectAlternativeNameTemplate",
            "range",
        ),
        (
            json.dumps(
                {
                    "CIIssuerMetadata": {
                        "x": {
                            "SubjectAlternativeNameTemplate": "a",
                            "ExtensionTemplates": {"BuildSignerURI": "{{ .a | printf }}"},
                        }
                    }
                }
            ),
            "BuildSignerURI",
            "pipes",
        ),
        ("oidc-issuers: [unclosed", "", "neither JSON nor YAML"),
    ],
)
def test_contradictions_are_refused(doc: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert field in str(info.value)
    assert words in str(info.value)


def test_yaml_errors_use_yaml_names() -> None:
    doc = "oidc-issuers:\n  http://id.example.com:\n    client-id: sigstore\n    type: email\n"
    with pytest.raises(ConfigError, match="allow-insecure-http"):
        parse_config(doc)
    parse_config(doc.replace("type: email", "type: email\n    allow-insecure-http: true"))


def test_load_config_resolves_jwks_next_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text(json.dumps({"keys": [{"kty": "EC"}]}))
    path = tmp_path / "config.yaml"
    path.write_text(
        "oidc-issuers:\n  https://airgap.example.com:\n    client-id: sigstore\n"
        "    type: email\n    jwks-file: keys.json\n"
    )
    issuer = load_config(path).oidc_issuers["https://airgap.example.com"]
    assert issuer.jwks_file == tmp_path / "keys.json"
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load_config(tmp_path / "missing.yaml")
