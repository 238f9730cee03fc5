"""sigstore-python's own command line, signing and verifying against a running sigstead.

Nothing here talks to sigstead except the real client: it gets its certificate from our CA, its
SCT from our CT log, its timestamp from our TSA and its entry from our Rekor, and verifies with
the trust material ``sigstead trust export`` wrote, or through the TUF repository at ``/tuf/``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, python_sign, python_verify, sigstead, sigstore_python

pytestmark = pytest.mark.e2e

SLSA_PREDICATE = {
    "buildDefinition": {
        "buildType": "https://sigstead.test/ci/v1",
        "externalParameters": {"repository": "https://git.internal/app", "ref": "main"},
        "internalParameters": {},
        "resolvedDependencies": [],
    },
    "runDetails": {
        "builder": {"id": "https://ci.internal/runner"},
        "metadata": {"invocationId": "run-42"},
    },
}


def test_sign_then_verify_identity(stack: Stack, tmp_path: Path) -> None:
    artifact = tmp_path / "release.tar.gz"
    artifact.write_bytes(b"release contents\n")
    bundle = tmp_path / "release.sigstore.json"
    python_sign(stack, tmp_path, artifact, bundle)
    done = python_verify(stack, tmp_path, artifact, bundle)
    assert done.returncode == 0, done.stderr
    assert f"OK: {artifact}" in done.stderr + done.stdout

    doc = json.loads(bundle.read_text())
    entry = doc["verificationMaterial"]["tlogEntries"][0]
    # The bundle carries the SET, a proof with checkpoint, and our TSA's token.
    assert entry["inclusionPromise"]["signedEntryTimestamp"]
    assert entry["inclusionProof"]["checkpoint"]["envelope"].startswith("127.0.0.1 - ")
    tokens = doc["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
    assert len(tokens) == 1


def test_tampered_artifact_wrong_identity_and_issuer_fail(stack: Stack, tmp_path: Path) -> None:
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"original")
    bundle = tmp_path / "a.sigstore.json"
    python_sign(stack, tmp_path, artifact, bundle)

    tampered = tmp_path / "b.bin"
    tampered.write_bytes(b"originaL")
    done = python_verify(stack, tmp_path, tampered, bundle)
    assert done.returncode != 0
    assert "FAIL" in done.stderr + done.stdout

    done = python_verify(stack, tmp_path, artifact, bundle, identity="mallory@example.com")
    assert done.returncode != 0
    assert "mallory@example.com" in done.stderr + done.stdout

    done = python_verify(stack, tmp_path, artifact, bundle, issuer="https://accounts.google.com")
    assert done.returncode != 0
    assert "accounts.google.com" in done.stderr + done.stdout


def test_attest_slsa_provenance_then_verify(stack: Stack, tmp_path: Path) -> None:
    image = tmp_path / "image.tar"
    # Unique bytes: the shared log also holds other tests' attestations.
    image.write_bytes(f"an image's bytes {uuid.uuid4()}\n".encode())
    predicate = tmp_path / "provenance.json"
    predicate.write_text(json.dumps(SLSA_PREDICATE))
    bundle = tmp_path / "image.intoto.sigstore.json"
    done = sigstore_python(
        tmp_path,
        "--trust-config",
        str(stack.client_trust_config),
        "attest",
        "--predicate",
        str(predicate),
        "--predicate-type",
        "https://slsa.dev/provenance/v1",
        "--identity-token",
        stack.idp.token(),
        "--bundle",
        str(bundle),
        str(image),
    )
    assert done.returncode == 0, done.stderr
    envelope = json.loads(bundle.read_text())["dsseEnvelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"

    done = python_verify(stack, tmp_path, image, bundle)
    assert done.returncode == 0, done.stderr
    # The attestation is bound to the image's digest: another file does not verify.
    other = tmp_path / "other.tar"
    other.write_bytes(b"another image\n")
    assert python_verify(stack, tmp_path, other, bundle).returncode != 0

    # An auditor holding only the exported Rekor key finds the provenance by the image digest;
    # the CLI verifies the SET, the inclusion proof and the checkpoint of what it prints.
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    found = sigstead(
        "log",
        "--url",
        stack.server.url,
        "--log-key",
        str(stack.trust / "snippets" / "pem" / "rekor.pub"),
        "--state-dir",
        str(tmp_path / "auditor"),
        "--json",
        "search",
        "--sha256",
        digest,
    )
    assert found.returncode == 0, found.stderr
    entry = json.loads(bundle.read_text())["verificationMaterial"]["tlogEntries"][0]
    (hit,) = json.loads(found.stdout)
    assert hit["index"] == int(entry["logIndex"])
    assert {"signedEntryTimestamp", "inclusionProof", "checkpoint"} <= set(hit["verified"])


def test_trust_through_the_tuf_repository_sigstead_serves(
    fresh_stack: Stack, tmp_path: Path
) -> None:
    """``sigstore --instance URL``: trust comes only from sigstead's ``/tuf/`` and root.json."""
    root = fresh_stack.trust / "tuf" / "root.json"
    done = sigstore_python(tmp_path, "--instance", fresh_stack.tuf_url, "trust-instance", str(root))
    assert done.returncode == 0, done.stderr

    artifact = tmp_path / "first.txt"
    artifact.write_text("the first entry of a new log\n")
    bundle = tmp_path / "first.sigstore.json"
    python_sign(fresh_stack, tmp_path, artifact, bundle, tuf=True)
    entry = json.loads(bundle.read_text())["verificationMaterial"]["tlogEntries"][0]
    assert entry["logIndex"] == "1"  # the first client entry: index 0 is the log's genesis

    done = python_verify(fresh_stack, tmp_path, artifact, bundle, tuf=True)
    assert done.returncode == 0, done.stderr
    assert f"OK: {artifact}" in done.stderr
