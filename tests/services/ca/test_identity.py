"""Every issuer type end to end: live token -> verified claims -> principal -> certificate.

The certificates are parsed back with cryptography and checked with sigstore-python's identity
policies, which read the Fulcio extensions the way verifiers in the field do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sigstore.errors import VerificationError
from sigstore.verify import policy

from services.ca import keys
from services.ca.certificate import build_final_certificate, build_precertificate
from services.ca.config import FulcioConfig
from services.ca.errors import IdentityMappingError, InvalidIdentityToken
from services.ca.identity import Principal, der_utf8_string, principal_from_claims
from services.ca.oidc import TokenVerifier
from tests.services.ca.checks import pyca_verify_chain, sign_precert, sigstore_verify_sct
from tests.services.ca.conftest import NOW, config_json
from tests.services.ca.oidc_issuer import RSA_KEY, IssuerServer, claims_for, sign

ARC = "1.3.6.1.4.1.57264.1"
LEAF_KEY = ec.generate_private_key(ec.SECP256R1())

GITHUB_CLAIMS: dict[str, Any] = {
    "sub": "repo:octo/hello:ref:refs/heads/main",
    "ref": "refs/heads/main",
    "sha": "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
    "repository": "octo/hello",
    "repository_id": "101",
    "repository_owner": "octo",
    "repository_owner_id": "202",
    "repository_visibility": "public",
    "run_id": "303",
    "run_number": "7",
    "run_attempt": "1",
    "runner_environment": "github-hosted",
    "actor": "octocat",
    "workflow": "Release",
    "event_name": "push",
    "workflow_ref": "octo/hello/.github/workflows/release.yml@refs/heads/main",
    "workflow_sha": "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
    "job_workflow_ref": "octo/build/.github/workflows/reusable.yml@refs/tags/v1",
    "job_workflow_sha": "ffffffffffffffffffffffffffffffffffffffff",
    "environment": "production",
}

GITLAB_CLAIMS: dict[str, Any] = {
    "sub": "project_path:grp/proj:ref_type:branch:ref:main",
    "project_id": "11",
    "project_path": "grp/proj",
    "namespace_id": "22",
    "namespace_path": "grp",
    "pipeline_id": "33",
    "pipeline_source": "push",
    "job_id": "44",
    "ref": "main",
    "ref_type": "branch",
    "sha": "0123456789abcdef0123456789abcdef01234567",
    "runner_id": 55,
    "runner_environment": "gitlab-hosted",
    "ci_config_ref_uri": "gitlab.example.com/grp/proj//.gitlab-ci.yml@refs/heads/main",
    "ci_config_sha": "0123456789abcdef0123456789abcdef01234567",
    "project_visibility": "private",
}

# The public GitHub ci-provider metadata (fulcio.md §3.3), in JSON form.
GITHUB_CI = {
    "DefaultTemplateValues": {"url": "https://github.com", "environment": ""},
    "ExtensionTemplates": {
        "GithubWorkflowTrigger": "event_name",
        "GithubWorkflowSHA": "sha",
        "GithubWorkflowName": "workflow",
        "GithubWorkflowRepository": "repository",
        "GithubWorkflowRef": "ref",
        "BuildSignerURI": "{{ .url }}/{{ .job_workflow_ref }}",
        "BuildSignerDigest": "job_workflow_sha",
        "RunnerEnvironment": "runner_environment",
        "SourceRepositoryURI": "{{ .url }}/{{ .repository }}",
        "SourceRepositoryDigest": "sha",
        "SourceRepositoryRef": "ref",
        "SourceRepositoryIdentifier": "repository_id",
        "SourceRepositoryOwnerURI": "{{ .url }}/{{ .repository_owner }}",
        "SourceRepositoryOwnerIdentifier": "repository_owner_id",
        "BuildConfigURI": "{{ .url }}/{{ .workflow_ref }}",
        "BuildConfigDigest": "workflow_sha",
        "BuildTrigger": "event_name",
        "RunInvocationURI": (
            "{{ .url }}/{{ .repository }}/actions/runs/{{ .run_id }}/attempts/{{ .run_attempt }}"
        ),
        "SourceRepositoryVisibilityAtSigning": "repository_visibility",
        "DeploymentEnvironment": "environment",
    },
    "SubjectAlternativeNameTemplate": "{{ .url }}/{{ .job_workflow_ref }}",
}


@dataclass
class Pipeline:
    """Issue certificates for tokens of the named issuer, like the signingCert handler will."""

    server: IssuerServer
    config: FulcioConfig
    verifier: TokenVerifier
    ca: keys.CAKeyMaterial

    def url(self, name: str) -> str:
        return self.server.issuers[name].url

    async def principal(self, name: str, **claims: Any) -> Principal:
        issuer = self.server.issuers[name]
        token = sign(claims_for(issuer, NOW, **claims), RSA_KEY, "k", "RS256")
        return principal_from_claims(await self.verifier.verify(token, NOW), self.config)

    async def certificate(self, name: str, **claims: Any) -> x509.Certificate:
        principal = await self.principal(name, **claims)
        precert = build_precertificate(
            ca=self.ca, public_key=LEAF_KEY.public_key(), principal=principal, now=NOW
        )
        ms = int(NOW.timestamp() * 1000)
        final = build_final_certificate(precert, ca=self.ca, sct=sign_precert(precert, self.ca, ms))
        sigstore_verify_sct(final, self.ca)
        assert pyca_verify_chain(final, self.ca, NOW) == [final, *self.ca.chain]
        return final


@pytest.fixture
async def pipeline(idp: IssuerServer, ca_p384: keys.CAKeyMaterial) -> AsyncIterator[Pipeline]:
    """One live issuer per type, all signing with the same RSA key."""
    names = ["mail", "dex", "k8s", "spiffe", "uri", "user", "gh", "gl", "ghci", "broken-ci"]
    urls = {n: idp.add(n, k=RSA_KEY).url for n in names}
    config = config_json(
        {
            urls["mail"]: {"Type": "email"},
            urls["dex"]: {"Type": "email", "IssuerClaim": "$.federated_claims.connector_id"},
            urls["k8s"]: {"Type": "kubernetes"},
            urls["spiffe"]: {"Type": "spiffe", "SPIFFETrustDomain": "example.org"},
            urls["uri"]: {"Type": "uri", "SubjectDomain": "http://127.0.0.1"},
            urls["user"]: {"Type": "username", "SubjectDomain": "127.0.0.1"},
            urls["gh"]: {"Type": "github-workflow"},
            urls["gl"]: {"Type": "gitlab-pipeline"},
            urls["ghci"]: {"Type": "ci-provider", "CIProvider": "github-workflow"},
            urls["broken-ci"]: {"Type": "ci-provider", "CIProvider": "needs-claim"},
        },
        ci={
            "github-workflow": GITHUB_CI,
            "needs-claim": {
                "SubjectAlternativeNameTemplate": "https://ci.example.com/{{ .pipeline }}",
            },
        },
    )
    async with TokenVerifier(config) as verifier:
        yield Pipeline(idp, config, verifier, ca_p384)


def fulcio_extensions(cert: x509.Certificate) -> dict[int, bytes]:
    """Fulcio extensions by arc number, raw extnValue contents."""
    out: dict[int, bytes] = {}
    for ext in cert.extensions:
        if ext.oid.dotted_string.startswith(ARC + "."):
            assert not ext.critical
            assert isinstance(ext.value, x509.UnrecognizedExtension)
            out[int(ext.oid.dotted_string.rsplit(".", 1)[1])] = ext.value.value
    return out


def san(cert: x509.Certificate) -> list[x509.GeneralName]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert ext.critical
    return list(ext.value)


async def test_email(pipeline: Pipeline) -> None:
    iss = pipeline.url("mail")
    cert = await pipeline.certificate("mail", email="dev@example.com", email_verified=True)
    assert san(cert) == [x509.RFC822Name("dev@example.com")]
    assert fulcio_extensions(cert) == {
        1: iss.encode(),
        8: der_utf8_string(iss),
        24: der_utf8_string("subject-1"),
    }
    policy.Identity(identity="dev@example.com", issuer=iss).verify(cert)
    policy.OIDCIssuerV2(iss).verify(cert)
    with pytest.raises(VerificationError):
        policy.Identity(identity="dev@example.com", issuer="https://other.example").verify(cert)


async def test_email_with_issuer_claim(pipeline: Pipeline) -> None:
    cert = await pipeline.certificate(
        "dex",
        email="dev@example.com",
        email_verified=True,
        federated_claims={"connector_id": "https://github.com/login/oauth", "user_id": "1"},
    )
    exts = fulcio_extensions(cert)
    assert exts[1] == b"https://github.com/login/oauth"
    assert exts[8] == der_utf8_string("https://github.com/login/oauth")
    policy.Identity(identity="dev@example.com", issuer="https://github.com/login/oauth").verify(
        cert
    )
    with pytest.raises(InvalidIdentityToken):
        await pipeline.principal("dex", email="dev@example.com", email_verified=True)


async def test_email_must_be_an_address(pipeline: Pipeline) -> None:
    with pytest.raises(InvalidIdentityToken):
        await pipeline.principal("mail", email="not-an-address", email_verified=True)


async def test_kubernetes(pipeline: Pipeline) -> None:
    iss = pipeline.url("k8s")
    k8s = {"namespace": "prod", "serviceaccount": {"name": "builder", "uid": "u"}}
    cert = await pipeline.certificate(
        "k8s", sub="system:serviceaccount:prod:builder", **{"kubernetes.io": k8s}
    )
    want = "https://kubernetes.io/namespaces/prod/serviceaccounts/builder"
    assert san(cert) == [x509.UniformResourceIdentifier(want)]
    assert set(fulcio_extensions(cert)) == {1, 8, 24}
    policy.Identity(identity=want, issuer=iss).verify(cert)
    with pytest.raises(InvalidIdentityToken):
        await pipeline.principal("k8s", **{"kubernetes.io": {"namespace": "prod"}})


async def test_spiffe(pipeline: Pipeline) -> None:
    sub = "spiffe://example.org/ns/prod/sa/builder"
    cert = await pipeline.certificate("spiffe", sub=sub)
    assert san(cert) == [x509.UniformResourceIdentifier(sub)]
    policy.Identity(identity=sub, issuer=pipeline.url("spiffe")).verify(cert)
    for bad in ("spiffe://other.org/x", "https://example.org/x", "spiffe://example.org/../x"):
        with pytest.raises(InvalidIdentityToken):
            await pipeline.principal("spiffe", sub=bad)


async def test_uri(pipeline: Pipeline) -> None:
    sub = "http://127.0.0.1/users/alice"
    cert = await pipeline.certificate("uri", sub=sub)
    assert san(cert) == [x509.UniformResourceIdentifier(sub)]
    policy.Identity(identity=sub, issuer=pipeline.url("uri")).verify(cert)
    for bad in ("https://127.0.0.1/x", "http://127.0.0.2/x", "alice@example.com"):
        with pytest.raises(InvalidIdentityToken):
            await pipeline.principal("uri", sub=bad)


async def test_username(pipeline: Pipeline) -> None:
    cert = await pipeline.certificate("user", sub="alice")
    names = san(cert)
    assert len(names) == 1
    assert isinstance(names[0], x509.OtherName)
    assert names[0].type_id.dotted_string == f"{ARC}.7"
    assert names[0].value == der_utf8_string("alice!127.0.0.1")
    # fulcio.md §4.3: SEQUENCE { [0] { OID 1.7, [0] EXPLICIT UTF8String } }, critical.
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    inner = b"\x06\x0a+\x06\x01\x04\x01\x83\xbf0\x01\x07\xa0\x11" + der_utf8_string(
        "alice!127.0.0.1"
    )
    assert (
        ext.value.public_bytes()
        == b"\x30" + bytes([len(inner) + 2]) + b"\xa0" + bytes([len(inner)]) + inner
    )
    policy.OIDCIssuer(pipeline.url("user")).verify(cert)
    for bad in ("a!b", "alice@example.com"):
        with pytest.raises(InvalidIdentityToken):
            await pipeline.principal("user", sub=bad)


def _github_expectations(iss: str) -> dict[int, bytes]:
    c = GITHUB_CLAIMS
    raw = {
        1: iss,
        2: c["event_name"],
        3: c["sha"],
        4: c["workflow"],
        5: c["repository"],
        6: c["ref"],
    }
    utf8 = {
        8: iss,
        9: f"https://github.com/{c['job_workflow_ref']}",
        10: c["job_workflow_sha"],
        11: c["runner_environment"],
        12: "https://github.com/octo/hello",
        13: c["sha"],
        14: c["ref"],
        15: c["repository_id"],
        16: "https://github.com/octo",
        17: c["repository_owner_id"],
        18: f"https://github.com/{c['workflow_ref']}",
        19: c["workflow_sha"],
        20: c["event_name"],
        21: "https://github.com/octo/hello/actions/runs/303/attempts/1",
        22: c["repository_visibility"],
        23: c["environment"],
        24: c["sub"],
    }
    return {k: v.encode() for k, v in raw.items()} | {
        k: der_utf8_string(v) for k, v in utf8.items()
    }


@pytest.mark.parametrize("name", ["gh", "ghci"], ids=["github-workflow", "ci-provider"])
async def test_github_workflow(pipeline: Pipeline, name: str) -> None:
    iss = pipeline.url(name)
    cert = await pipeline.certificate(name, **GITHUB_CLAIMS)
    signer = f"https://github.com/{GITHUB_CLAIMS['job_workflow_ref']}"
    assert san(cert) == [x509.UniformResourceIdentifier(signer)]
    exts = fulcio_extensions(cert)
    assert exts == _github_expectations(iss)
    assert list(exts) == sorted(exts)  # Fulcio's order: 1.1-1.6, then 1.8 upwards
    policy.AllOf(
        [
            policy.Identity(identity=signer, issuer=iss),
            policy.GitHubWorkflowTrigger("push"),
            policy.GitHubWorkflowSHA(GITHUB_CLAIMS["sha"]),
            policy.GitHubWorkflowName("Release"),
            policy.GitHubWorkflowRepository("octo/hello"),
            policy.GitHubWorkflowRef("refs/heads/main"),
            policy.OIDCBuildSignerURI(signer),
            policy.OIDCBuildSignerDigest(GITHUB_CLAIMS["job_workflow_sha"]),
            policy.OIDCRunnerEnvironment("github-hosted"),
            policy.OIDCSourceRepositoryURI("https://github.com/octo/hello"),
            policy.OIDCSourceRepositoryDigest(GITHUB_CLAIMS["sha"]),
            policy.OIDCSourceRepositoryRef("refs/heads/main"),
            policy.OIDCSourceRepositoryIdentifier("101"),
            policy.OIDCSourceRepositoryOwnerURI("https://github.com/octo"),
            policy.OIDCSourceRepositoryOwnerIdentifier("202"),
            policy.OIDCBuildConfigURI(f"https://github.com/{GITHUB_CLAIMS['workflow_ref']}"),
            policy.OIDCBuildConfigDigest(GITHUB_CLAIMS["workflow_sha"]),
            policy.OIDCBuildTrigger("push"),
            policy.OIDCSourceRepositoryVisibility("public"),
        ]
    ).verify(cert)
    with pytest.raises(VerificationError):
        policy.GitHubWorkflowTrigger("pull_request").verify(cert)


async def test_github_without_environment(pipeline: Pipeline) -> None:
    for name in ("gh", "ghci"):
        cert = await pipeline.certificate(name, **{**GITHUB_CLAIMS, "environment": None})
        assert 23 not in fulcio_extensions(cert)


async def test_github_workflow_requires_its_claims(pipeline: Pipeline) -> None:
    with pytest.raises(InvalidIdentityToken):
        await pipeline.principal("gh", **{**GITHUB_CLAIMS, "run_attempt": None})
    # The template path reports which claim is missing; Fulcio sends that text to the client.
    with pytest.raises(IdentityMappingError) as info:
        await pipeline.principal("ghci", **{**GITHUB_CLAIMS, "run_attempt": None})
    assert "run_attempt" in str(info.value)
    with pytest.raises(IdentityMappingError) as info:
        await pipeline.principal("broken-ci")
    assert "pipeline" in str(info.value)


async def test_gitlab_pipeline(pipeline: Pipeline) -> None:
    iss = pipeline.url("gl")
    cert = await pipeline.certificate("gl", **GITLAB_CLAIMS)
    config_uri = f"https://{GITLAB_CLAIMS['ci_config_ref_uri']}"
    assert san(cert) == [x509.UniformResourceIdentifier(config_uri)]
    exts = fulcio_extensions(cert)
    assert set(exts) == {1, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 24}
    assert exts[14] == der_utf8_string("refs/heads/main")
    assert exts[12] == der_utf8_string(f"{iss}/grp/proj")
    assert exts[21] == der_utf8_string(f"{iss}/grp/proj/-/jobs/44")
    assert exts[18] == exts[9] == der_utf8_string(config_uri)
    policy.Identity(identity=config_uri, issuer=iss).verify(cert)
    policy.OIDCSourceRepositoryRef("refs/heads/main").verify(cert)
    tag = await pipeline.principal("gl", **{**GITLAB_CLAIMS, "ref_type": "tag", "ref": "v1"})
    assert tag.extensions.source_repository_ref == "refs/tags/v1"
    for bad in ({"ref_type": "commit"}, {"runner_id": None}, {"runner_id": "55"}):
        with pytest.raises(InvalidIdentityToken):
            await pipeline.principal("gl", **{**GITLAB_CLAIMS, **bad})


async def test_proof_messages(pipeline: Pipeline) -> None:
    mail = await pipeline.principal("mail", email="dev@example.com", email_verified=True)
    assert mail.name == "dev@example.com"
    assert mail.proof_messages == ("dev@example.com", "subject-1")
    gh = await pipeline.principal("gh", **{**GITHUB_CLAIMS, "email": "bot@example.com"})
    assert gh.name == GITHUB_CLAIMS["sub"]
    assert gh.proof_messages == (GITHUB_CLAIMS["sub"], "bot@example.com")
