"""cosign v2 and v3, the real binaries, against a running sigstead: blobs and images, bundles
and the legacy detached signatures, SLSA provenance attestations checked by CUE and Rego
policies, trust from TUF (the air-gapped path) and from exported files, and the failures a
verifier must report."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.gocli import COSIGNS, Cosign, Registry, registry, token_file
from tests.e2e.stack import IDENTITY, Stack, sigstead
from tests.gotools import tool

pytestmark = pytest.mark.e2e

BUILDER = "https://ci.internal/builders/tekton"
PROVENANCE = {
    "buildDefinition": {
        "buildType": "https://tekton.dev/chains/v2/slsa",
        "externalParameters": {"runSpec": {"pipelineRef": {"name": "build"}}},
        "internalParameters": {},
        "resolvedDependencies": [],
    },
    "runDetails": {"builder": {"id": BUILDER}, "metadata": {"invocationID": "run-7"}},
}


@pytest.fixture(scope="module")
def oci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with registry(tmp_path_factory.mktemp("registry")) as r:
        yield r


@pytest.fixture(params=COSIGNS)
def cosign(request: pytest.FixtureRequest, stack: Stack, tmp_path: Path) -> Cosign:
    c = Cosign(request.param, tool(request.param), tmp_path / "home", stack)
    c.initialize()
    return c


def identity(stack: Stack, who: str = IDENTITY, issuer: str | None = None) -> list[str]:
    return [
        "--certificate-identity",
        who,
        "--certificate-oidc-issuer",
        issuer or stack.idp.url,
    ]


@pytest.mark.parametrize("tuf", [True, False], ids=["tuf", "exported-files"])
def test_sign_blob_then_verify_blob(cosign: Cosign, tmp_path: Path, tuf: bool) -> None:
    blob = tmp_path / "release.tgz"
    blob.write_bytes(b"release " + tmp_path.name.encode())
    bundle = tmp_path / "release.sigstore.json"
    token = token_file(cosign.stack, tmp_path)
    done = cosign(
        "sign-blob", *cosign.signing(tuf=tuf), "--identity-token", str(token),
        "--bundle", str(bundle), str(blob),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(bundle.read_text())
    assert doc["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    entry = doc["verificationMaterial"]["tlogEntries"][0]
    assert int(entry["logIndex"]) > 0, "index 0 is the log's genesis entry"
    # The signing config sends cosign to our TSA too.
    assert doc["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]

    verify = ["verify-blob", *cosign.verifying(tuf=tuf), "--bundle", str(bundle)]
    done = cosign(*verify, *identity(cosign.stack), str(blob))
    assert done.returncode == 0, done.stderr
    assert "Verified OK" in done.stderr

    tampered = tmp_path / "tampered.tgz"
    tampered.write_bytes(blob.read_bytes() + b"!")
    done = cosign(*verify, *identity(cosign.stack), str(tampered))
    assert done.returncode != 0
    assert "invalid signature" in done.stderr.lower() or "mismatch" in done.stderr.lower()

    done = cosign(*verify, *identity(cosign.stack, "mallory@example.com"), str(blob))
    assert done.returncode != 0
    assert 'expected SAN value "mallory@example.com", got "alice@example.com"' in done.stderr

    done = cosign(*verify, *identity(cosign.stack, issuer="https://other.example.com"), str(blob))
    assert done.returncode != 0
    assert "expected issuer value" in done.stderr, done.stderr


def test_signature_from_another_deployment_fails(
    cosign: Cosign, fresh_stack: Stack, tmp_path: Path
) -> None:
    """A bundle made against another sigstead (its own CA, log and TSA) does not verify with
    this one's trust, even for the same identity."""
    other = Cosign(cosign.name, cosign.binary, tmp_path / "other-home", fresh_stack)
    other.initialize()
    blob = tmp_path / "blob"
    blob.write_bytes(b"signed elsewhere")
    bundle = tmp_path / "blob.sigstore.json"
    done = other(
        "sign-blob", *other.signing(tuf=True), "--identity-token",
        str(token_file(fresh_stack, tmp_path)), "--bundle", str(bundle), str(blob),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = cosign(
        "verify-blob", *cosign.verifying(tuf=True), "--bundle", str(bundle),
        *identity(cosign.stack, issuer=fresh_stack.idp.url), str(blob),
    )  # fmt: skip
    assert done.returncode != 0
    # sigstore-go checks the log entry first: the other log's key is not in this trusted root.
    assert "not enough verified log entries from transparency log: 0 < 1" in done.stderr


def test_legacy_detached_signature(cosign: Cosign, tmp_path: Path) -> None:
    """The pre-bundle path older tooling uses: a detached signature and certificate, the entry
    found again in Rekor by the verifier (``--rekor-url``), and the Fulcio URL given by flag."""
    url = cosign.stack.server.url
    blob = tmp_path / "blob"
    blob.write_bytes(b"legacy " + tmp_path.name.encode())
    sig, cert = tmp_path / "blob.sig", tmp_path / "blob.crt"
    # cosign v3 makes bundles from a signing config by default and insists on --bundle; the
    # legacy files are written beside it once both defaults are switched off.
    bundle = tmp_path / "blob.sigstore.json"
    legacy = (
        []
        if cosign.v2
        else ["--new-bundle-format=false", "--use-signing-config=false", "--bundle", str(bundle)]
    )
    done = cosign(
        "sign-blob", *legacy, "--fulcio-url", url, "--rekor-url", url,
        "--identity-token", str(token_file(cosign.stack, tmp_path)),
        "--output-signature", str(sig), "--output-certificate", str(cert), str(blob),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = cosign(
        "verify-blob", "--rekor-url", url, "--signature", str(sig), "--certificate", str(cert),
        *identity(cosign.stack), str(blob),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Verified OK" in done.stderr


def test_image_sign_verify_and_slsa_provenance(
    cosign: Cosign, oci: Registry, tmp_path: Path
) -> None:
    stack = cosign.stack
    image = oci.push_random_image(f"app-{cosign.name}", tmp_path)
    token = str(token_file(stack, tmp_path))
    done = cosign("sign", *cosign.signing(tuf=True), "--identity-token", token, image)
    assert done.returncode == 0, done.stderr
    done = cosign("verify", *cosign.verifying(tuf=True), *identity(stack), image)
    assert done.returncode == 0, done.stderr
    claims = json.loads(done.stdout)
    assert claims[0]["critical"]["image"]["docker-manifest-digest"] == image.split("@")[1]

    done = cosign("verify", *cosign.verifying(tuf=True), *identity(stack, "eve@x.org"), image)
    assert done.returncode != 0
    unsigned = oci.push_random_image(f"unsigned-{cosign.name}", tmp_path)
    done = cosign("verify", *cosign.verifying(tuf=True), *identity(stack), unsigned)
    assert done.returncode != 0
    assert (
        "no valid bundles exist in registry" in done.stderr or "no signatures found" in done.stderr
    )

    predicate = tmp_path / "provenance.json"
    predicate.write_text(json.dumps(PROVENANCE))
    done = cosign(
        "attest", *cosign.signing(tuf=True), "--identity-token", token,
        "--type", "slsaprovenance1", "--predicate", str(predicate), image,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    for expected, ok in ((BUILDER, True), ("https://evil.example/builder", False)):
        cue = tmp_path / "builder.cue"
        cue.write_text(f"predicate: runDetails: builder: id: {json.dumps(expected)}\n")
        rego = tmp_path / "builder.rego"
        rego.write_text(
            "package signature\n\ndefault allow = false\n\nallow {\n"
            f"  input.predicate.runDetails.builder.id == {json.dumps(expected)}\n}}\n"
        )
        for policy in (cue, rego):
            done = cosign(
                "verify-attestation", *cosign.verifying(tuf=True), "--type", "slsaprovenance1",
                "--policy", str(policy), *identity(stack), image,
            )  # fmt: skip
            assert (done.returncode == 0) is ok, (policy.suffix, expected, done.stderr)
            if not ok:
                assert "validation errors occurred" in done.stderr, done.stderr

    # The auditor's query from the seeds: every entry for the image, by its digest.
    digest = image.split("@sha256:")[1]
    found = sigstead(
        "log", "--url", stack.server.url, "--state-dir", str(tmp_path / "state"),
        "--log-key", str(stack.trust / "snippets" / "pem" / "rekor.pub"), "--json",
        "search", "--sha256", digest,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    # The image signature and the attestation (whose in-toto subject is the image).
    assert len(json.loads(found.stdout)) >= 2, found.stdout


def test_exported_cosign_snippet(cosign: Cosign, tmp_path: Path) -> None:
    """``snippets/cosign.sh`` from the export signs and verifies with this cosign."""
    blob = tmp_path / "blob"
    blob.write_bytes(b"snippet " + hashlib.sha256(tmp_path.name.encode()).hexdigest().encode())
    token = token_file(cosign.stack, tmp_path)
    script = cosign.stack.trust / "snippets" / "cosign.sh"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "cosign").symlink_to(cosign.binary)
    done = cosign.run_shell(
        f". {script} && sigstead_sign_blob {blob} && sigstead_verify_blob {blob}",
        path=bindir,
        SIGSTEAD_ID_TOKEN=str(token),
    )
    assert done.returncode == 0, done.stdout + done.stderr
