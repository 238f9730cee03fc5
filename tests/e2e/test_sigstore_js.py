"""sigstore-js (library ``sigstore`` 4.1.1, ``@sigstore/cli`` 0.8.1) against a running sigstead.

The JS clients live in ``tests/js`` (``npm ci`` there installs the pinned versions). They get their
certificate from our CA, the SCT from our CT log, the timestamp from our TSA and the entry from
our Rekor, and verify with the exported ``trusted_root.json`` (``@sigstore/verify`` directly) or
through the TUF repository sigstead serves at ``/tuf/`` (the library's and the CLI's own TUF
client). Bundles also cross over to and from sigstore-python.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import BUSY_ENTRIES, IDENTITY, Stack, client_env, python_sign, python_verify

pytestmark = pytest.mark.e2e

JS_DIR = Path(__file__).resolve().parents[1] / "js"
NODE_MODULES = JS_DIR / "node_modules"
JS_CLI = NODE_MODULES / ".bin" / "sigstore"

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


@pytest.fixture(scope="module", autouse=True)
def _js_clients_installed() -> None:
    """Fail, never skip, when the JS clients are not installed."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: these tests need Node.js 20 or later")
    for package in ("sigstore", "@sigstore/cli", "@sigstore/verify", "@sigstore/bundle"):
        if not (NODE_MODULES / package / "package.json").is_file():
            pytest.fail(f"{package} is not installed in {JS_DIR}: run `cd tests/js && npm ci`")


def _run(cmd: list[str], home: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env=client_env(home, **extra),
        check=False,
    )


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return home


# --- the sigstore-js library (tests/js/sign.mjs, tests/js/verify.mjs) ---------------------------


def js_sign(stack: Stack, tmp_path: Path, mode: str, payload: Path, bundle: Path) -> None:
    """``sign`` (hashedrekord) or ``attest`` (DSSE) with the library; the TSA URL is the base."""
    url = stack.server.url
    done = _run(
        [
            "node",
            "sign.mjs",
            mode,
            "--fulcio",
            url,
            "--rekor",
            url,
            "--tsa",
            url,
            "--out",
            str(bundle),
            str(payload),
        ],
        _home(tmp_path),
        SIGSTORE_ID_TOKEN=stack.idp.token(),
    )
    assert done.returncode == 0, done.stderr


def js_verify(
    stack: Stack,
    tmp_path: Path,
    bundle: Path,
    data: Path | None = None,
    *,
    tuf: bool = False,
    identity: str = IDENTITY,
    issuer: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Verify with ``@sigstore/verify`` and the exported trusted root, or, with ``tuf``, with the
    library's ``verify`` whose trust comes through sigstead's ``/tuf/``."""
    if tuf:
        trust = [
            "--tuf-mirror-url",
            stack.tuf_url,
            "--tuf-root-path",
            str(stack.trust / "tuf" / "root.json"),
            "--tuf-cache-path",
            str(tmp_path / "js-tuf-cache"),
        ]
    else:
        trust = ["--trusted-root", str(stack.trusted_root)]
    cmd = ["node", "verify.mjs", *trust, "--bundle", str(bundle)]
    cmd += ["--identity", identity, "--issuer", issuer or stack.idp.url]
    if data is not None:
        cmd += ["--data", str(data)]
    return _run(cmd, _home(tmp_path))


# --- @sigstore/cli ---------------------------------------------------------------------------


def cli_attest(stack: Stack, tmp_path: Path, statement: Path, bundle: Path) -> str:
    url = stack.server.url
    done = _run(
        [
            str(JS_CLI),
            "attest",
            str(statement),
            "--fulcio-url",
            url,
            "--rekor-url",
            url,
            # 3.x appends /api/v1/timestamp to this URL.
            "--tsa-server-url",
            url,
            "-o",
            str(bundle),
        ],
        _home(tmp_path),
        CI="true",
        SIGSTORE_ID_TOKEN=stack.idp.token(),
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def cli_verify(
    stack: Stack,
    tmp_path: Path,
    bundle: Path,
    blob: Path | None = None,
    *,
    identity: str = IDENTITY,
) -> subprocess.CompletedProcess[str]:
    """``sigstore verify``: its only source of custom trust is a TUF repository, here ours."""
    cmd = [
        str(JS_CLI),
        "verify",
        str(bundle),
        "--tuf-mirror-url",
        stack.tuf_url,
        "--tuf-root-path",
        str(stack.trust / "tuf" / "root.json"),
        "--tuf-cache-path",
        str(tmp_path / "cli-tuf-cache"),
        "--certificate-issuer",
        stack.idp.url,
        "--certificate-identity-email",
        identity,
    ]
    if blob is not None:
        cmd += ["--blob-file", str(blob)]
    return _run(cmd, _home(tmp_path))


# --- helpers ---------------------------------------------------------------------------------


def tlog_entry(bundle: Path) -> dict[str, Any]:
    entries: list[dict[str, Any]] = json.loads(bundle.read_text())["verificationMaterial"][
        "tlogEntries"
    ]
    assert len(entries) == 1
    return entries[0]


def write_statement(path: Path, subject: Path) -> None:
    """An in-toto statement whose subject is ``subject``'s digest."""
    digest = hashlib.sha256(subject.read_bytes()).hexdigest()
    path.write_text(
        json.dumps(
            {
                "_type": STATEMENT_TYPE,
                "subject": [{"name": subject.name, "digest": {"sha256": digest}}],
                "predicateType": "https://slsa.dev/provenance/v1",
                "predicate": {
                    "buildDefinition": {
                        "buildType": "https://sigstead.test/ci/v1",
                        "externalParameters": {"ref": "main"},
                    },
                    "runDetails": {"builder": {"id": "https://ci.internal/runner"}},
                },
            }
        )
    )


def assert_deployment(deployment: str, entry: dict[str, Any]) -> None:
    """The entry is the first of a fresh log, or one deep in the busy log."""
    if deployment == "fresh_stack":
        # The first client entry: index 0 is the log's genesis entry, so no client bundle ever
        # has the proto3 defaults (index 0, no proof hashes) that sigstore-js leaves out.
        assert entry["logIndex"] == entry["inclusionProof"]["logIndex"] == "1"
        assert entry["inclusionProof"]["treeSize"] == "2"
        assert len(entry["inclusionProof"]["hashes"]) == 1
    else:
        assert int(entry["logIndex"]) >= BUSY_ENTRIES
        # At least the 1024-leaf subtree on the left and a neighbour on the right edge.
        assert len(entry["inclusionProof"]["hashes"]) >= 2


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def fails(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, f"expected a failure\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


# --- tests -----------------------------------------------------------------------------------


def test_library_sign_then_verify_with_trusted_root_and_through_tuf(
    stack: Stack, tmp_path: Path
) -> None:
    artifact = tmp_path / "release.tar.gz"
    artifact.write_bytes(b"release contents for sigstore-js\n")
    bundle = tmp_path / "release.sigstore.json"
    js_sign(stack, tmp_path, "sign", artifact, bundle)

    doc = json.loads(bundle.read_text())
    assert doc["messageSignature"]["messageDigest"]["algorithm"] == "SHA2_256"
    entry = tlog_entry(bundle)
    assert entry["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.1"}
    assert entry["inclusionPromise"]["signedEntryTimestamp"]
    assert entry["inclusionProof"]["checkpoint"]["envelope"]
    tokens = doc["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
    assert len(tokens) == 1

    assert f"OK trusted-root {IDENTITY}" in ok(js_verify(stack, tmp_path, bundle, artifact))
    assert f"OK tuf {IDENTITY}" in ok(js_verify(stack, tmp_path, bundle, artifact, tuf=True))


def test_library_rejects_tampered_artifact_wrong_identity_and_issuer(
    stack: Stack, tmp_path: Path
) -> None:
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"original")
    bundle = tmp_path / "a.sigstore.json"
    js_sign(stack, tmp_path, "sign", artifact, bundle)
    ok(js_verify(stack, tmp_path, bundle, artifact))

    tampered = tmp_path / "b.bin"
    tampered.write_bytes(b"originaL")
    for tuf in (False, True):
        out = fails(js_verify(stack, tmp_path, bundle, tampered, tuf=tuf))
        assert "SIGNATURE_ERROR: signature verification failed" in out

    for tuf in (False, True):
        out = fails(js_verify(stack, tmp_path, bundle, artifact, tuf=tuf, identity="mallory@x.y"))
        assert "UNTRUSTED_SIGNER_ERROR" in out
        assert f"expected mallory@x.y, got {IDENTITY}" in out

    out = fails(js_verify(stack, tmp_path, bundle, artifact, issuer="https://accounts.google.com"))
    assert "UNTRUSTED_SIGNER_ERROR" in out
    assert f"expected issuer=https://accounts.google.com, got issuer={stack.idp.url}" in out


def test_library_attest_dsse_then_verify(stack: Stack, tmp_path: Path) -> None:
    image = tmp_path / "image.tar"
    image.write_bytes(b"an image's bytes\n")
    statement = tmp_path / "statement.json"
    write_statement(statement, image)
    bundle = tmp_path / "image.intoto.sigstore.json"
    js_sign(stack, tmp_path, "attest", statement, bundle)

    doc = json.loads(bundle.read_text())
    assert doc["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"
    assert tlog_entry(bundle)["kindVersion"] == {"kind": "dsse", "version": "0.0.1"}
    assert f"OK trusted-root {IDENTITY}" in ok(js_verify(stack, tmp_path, bundle))
    assert f"OK tuf {IDENTITY}" in ok(js_verify(stack, tmp_path, bundle, tuf=True))
    fails(js_verify(stack, tmp_path, bundle, identity="mallory@x.y"))
    # sigstore-python takes the dsse 0.0.1 entry, for the statement's subject and nothing else.
    assert f"OK: {image}" in ok(python_verify(stack, tmp_path, image, bundle))
    other = tmp_path / "other.tar"
    other.write_bytes(b"another image\n")
    assert f"FAIL: {other}" in fails(python_verify(stack, tmp_path, other, bundle))


def test_cli_attest_then_cli_verify_through_tuf(stack: Stack, tmp_path: Path) -> None:
    image = tmp_path / "image.tar"
    image.write_bytes(b"an image built by CI\n")
    statement = tmp_path / "statement.json"
    write_statement(statement, image)
    bundle = tmp_path / "cli.sigstore.json"
    printed = cli_attest(stack, tmp_path, statement, bundle)

    entry = tlog_entry(bundle)
    assert entry["kindVersion"] == {"kind": "intoto", "version": "0.0.2"}
    assert f"{stack.server.url}/api/v1/log/entries?logIndex={entry['logIndex']}" in printed
    doc = json.loads(bundle.read_text())
    assert len(doc["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]) == 1

    assert "Verification succeeded" in ok(cli_verify(stack, tmp_path, bundle))
    out = fails(cli_verify(stack, tmp_path, bundle, identity="mallory@x.y"))
    assert f"expected mallory@x.y, got {IDENTITY}" in out
    # The library's verifier takes an intoto 0.0.2 entry too.
    ok(js_verify(stack, tmp_path, bundle))


@pytest.mark.parametrize("deployment", ["fresh_stack", "stack"])
def test_python_signed_bundle_verifies_in_js(
    deployment: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """sigstore-python signs; @sigstore/verify (trusted root) and @sigstore/cli verify (TUF)
    accept the bundle. On a fresh deployment this is the log's first entry (index 0)."""
    stack: Stack = request.getfixturevalue(deployment)
    artifact = tmp_path / "from-python.txt"
    artifact.write_text("signed by sigstore-python\n")
    bundle = tmp_path / "from-python.sigstore.json"
    python_sign(stack, tmp_path, artifact, bundle)
    assert_deployment(deployment, tlog_entry(bundle))

    ok(js_verify(stack, tmp_path, bundle, artifact))
    assert "Verification succeeded" in ok(cli_verify(stack, tmp_path, bundle, artifact))
    tampered = tmp_path / "tampered.txt"
    tampered.write_text("signed by sigstore-pythoN\n")
    assert "signature verification failed" in fails(cli_verify(stack, tmp_path, bundle, tampered))


@pytest.mark.parametrize("deployment", ["fresh_stack", "stack"])
def test_js_signed_bundle_verifies_in_python(
    deployment: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The sigstore-js library signs (hashedrekord); sigstore-python verifies the bundle exactly
    as sigstore-js wrote it, on a fresh deployment (the first client entry of the log) too."""
    stack: Stack = request.getfixturevalue(deployment)
    artifact = tmp_path / "from-js.txt"
    artifact.write_text("signed by sigstore-js\n")
    bundle = tmp_path / "from-js.sigstore.json"
    js_sign(stack, tmp_path, "sign", artifact, bundle)
    assert_deployment(deployment, tlog_entry(bundle))

    assert f"OK: {artifact}" in ok(python_verify(stack, tmp_path, artifact, bundle))
    tampered = tmp_path / "tampered.txt"
    tampered.write_text("signed by sigstore-jS\n")
    assert f"FAIL: {tampered}" in fails(python_verify(stack, tmp_path, tampered, bundle))


def test_cli_intoto_attestation_is_not_accepted_by_python(stack: Stack, tmp_path: Path) -> None:
    """A documented client limitation (clients.md §5.4), not a sigstead bug: sigstore-python
    does not take the ``intoto`` 0.0.2 entries @sigstore/cli makes."""
    image = tmp_path / "image.tar"
    image.write_bytes(b"an image\n")
    statement = tmp_path / "statement.json"
    write_statement(statement, image)
    bundle = tmp_path / "cli.sigstore.json"
    cli_attest(stack, tmp_path, statement, bundle)
    out = fails(python_verify(stack, tmp_path, image, bundle))
    assert "Integrated time only supported for dsse/hashedrekord 0.0.1" in out
