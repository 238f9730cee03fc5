"""Rekor v2 with the real clients: a deployment published with ``--rekor-version 2`` sends
sigstore-python and cosign to its v2 log; each verifies the others' v2 bundles; the first bundle
of a fresh v2 log verifies everywhere; and the Go checksum database's tile client (x/mod's
``sumdb/tlog``, which shares no code with sigstead) reads the tiles and checks an inclusion and a
consistency proof against the served checkpoint."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.gocli import Cosign, token_file
from tests.e2e.stack import (
    IDENTITY,
    Stack,
    python_sign,
    python_verify,
    sigstead,
    sigstore_python,
    start_stack,
)
from tests.e2e.test_sigstore_js import js_verify
from tests.gotools import ToolMissing

pytestmark = pytest.mark.e2e

TILECHECK = Path(__file__).parents[1] / "go" / "tilecheck"


@pytest.fixture(scope="module", params=["ecdsa-p256", "ed25519"])
def v2(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A ``--rekor-version 2`` deployment, once with each checkpoint key type: ECDSA P-256 and
    Ed25519 (the public 2025 log's, whose C2SP key ID is bound to the key name)."""
    s = start_stack(
        tmp_path_factory.mktemp("v2"),
        "--rekor-version",
        "2",
        server_flags=["--rekor-v2-key-type", request.param],
    )
    try:
        yield s
    finally:
        s.stop()


def _entry(bundle: Path) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(bundle.read_text())["verificationMaterial"]["tlogEntries"][0]
    return entry


def _cosign(name: str, stack: Stack, home: Path) -> Cosign:
    from tests.gotools import tool

    c = Cosign(name, tool(name), home, stack)
    c.initialize()
    return c


def _identity(stack: Stack) -> list[str]:
    return ["--certificate-identity", IDENTITY, "--certificate-oidc-issuer", stack.idp.url]


def test_the_signing_config_sends_clients_to_v2_first(v2: Stack) -> None:
    config = json.loads((v2.trust / "signing_config.v0.2.json").read_text())
    assert [s["majorApiVersion"] for s in config["rekorTlogUrls"]] == [2, 1]
    root = json.loads(v2.trusted_root.read_text())
    v1_log, v2_log = root["tlogs"]
    assert "checkpointKeyId" in v2_log
    assert "checkpointKeyId" not in v1_log
    # The checkpoint's key hint is the published key ID's prefix, whatever the key type.
    with urllib.request.urlopen(f"{v2.server.url}/api/v2/checkpoint") as reply:
        signature = reply.read().decode().rpartition("\n\n")[2].split(" ")[2]
    key_id = base64.b64decode(v2_log["checkpointKeyId"]["keyId"])
    assert base64.b64decode(signature)[:4] == key_id[:4]
    assert v2_log["logId"] == v2_log["checkpointKeyId"]


def test_first_bundle_of_a_fresh_v2_log_verifies_in_every_client(v2: Stack, tmp_path: Path) -> None:
    """Entry 0 is the log's genesis entry, so the first client bundle is at index 1 (a bundle
    at index 0 loses its ``logIndex`` in sigstore-js, as on v1)."""
    artifact = tmp_path / "first.txt"
    artifact.write_text("the first v2 bundle")
    bundle = tmp_path / "first.sigstore.json"
    python_sign(v2, tmp_path / "py", artifact, bundle)
    entry = _entry(bundle)
    assert entry["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}
    assert entry["logIndex"] == "1"
    assert "inclusionPromise" not in entry  # no SET on v2: the TSA gives the time
    doc = json.loads(bundle.read_text())
    assert doc["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]

    done = python_verify(v2, tmp_path / "py", artifact, bundle)
    assert done.returncode == 0, done.stderr
    done = js_verify(v2, tmp_path, bundle, artifact)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("cosign-v3", "cosign-v2"):
        cosign = _cosign(name, v2, tmp_path / name)
        verify = ["verify-blob", *cosign.verifying(tuf=True), "--bundle", str(bundle)]
        done = cosign(*verify, "--use-signed-timestamps", *_identity(v2), str(artifact))
        assert done.returncode == 0, (name, done.stderr)
        if cosign.v2:
            # cosign v2 wants the Rekor v1 SET unless told to use the TSA's time.
            done = cosign(*verify, *_identity(v2), str(artifact))
            assert done.returncode != 0
            assert "integrated timestamps: 0 < 1" in done.stderr


@pytest.mark.parametrize("name", ["cosign-v3", "cosign-v2"])
def test_cosign_signs_to_v2_and_sigstore_python_verifies(
    v2: Stack, tmp_path: Path, name: str
) -> None:
    cosign = _cosign(name, v2, tmp_path / "home")
    artifact = tmp_path / "blob"
    artifact.write_bytes(b"signed by " + name.encode())
    bundle = tmp_path / "blob.sigstore.json"
    done = cosign(
        "sign-blob", *cosign.signing(tuf=True), "--identity-token", str(token_file(v2, tmp_path)),
        "--bundle", str(bundle), str(artifact),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert _entry(bundle)["kindVersion"]["version"] == "0.0.2"
    done = python_verify(v2, tmp_path / "py", artifact, bundle)
    assert done.returncode == 0, done.stderr
    done = cosign(
        "verify-blob", *cosign.verifying(tuf=True), "--use-signed-timestamps",
        "--bundle", str(bundle), *_identity(v2), str(artifact),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    tampered = tmp_path / "tampered"
    tampered.write_bytes(artifact.read_bytes() + b"!")
    done = python_verify(v2, tmp_path / "py", tampered, bundle)
    assert done.returncode != 0


def _fill_v2(stack: Stack, entries: int) -> None:
    """Append ``entries`` v2 entries signed by a throwaway key, as other signers would."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.services.log.rekor.test_api_v2 import _key_request

    key = ec.generate_private_key(ec.SECP256R1())
    for i in range(entries):
        body = json.dumps(_key_request(key, b"other %d" % i, "PKIX_ECDSA_P256_SHA_256")).encode()
        request = urllib.request.Request(
            f"{stack.server.url}/api/v2/log/entries",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as reply:
            assert reply.status == 201


def _checkpoint(stack: Stack) -> tuple[int, str]:
    with urllib.request.urlopen(f"{stack.server.url}/api/v2/checkpoint") as reply:
        lines = reply.read().decode().splitlines()
    return int(lines[1]), lines[2]


def test_a_tile_client_nobody_here_wrote_checks_inclusion_and_consistency(
    v2: Stack, tmp_path: Path
) -> None:
    binary = tmp_path / "tilecheck"
    built = subprocess.run(
        ["go", "build", "-o", str(binary), "."],
        cwd=TILECHECK, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if built.returncode != 0:
        raise ToolMissing(f"go build tests/go/tilecheck: {built.stderr}")
    old_size, old_root = _checkpoint(v2)
    # Other signers fill a level-0 tile and start the next, so full, partial and level-1
    # tiles are all read; then a client's entry, whose inclusion is checked.
    _fill_v2(v2, 300)
    artifact = tmp_path / "a"
    artifact.write_text("checked through tiles")
    bundle = tmp_path / "a.sigstore.json"
    python_sign(v2, tmp_path / "py", artifact, bundle)
    index = int(_entry(bundle)["logIndex"])
    assert index > 256
    done = subprocess.run(
        [str(binary), f"{v2.server.url}/api/v2", str(index), str(old_size), old_root],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"entry {index} included" in done.stdout
    # A wrong old root is caught by the same client: the check has teeth.
    wrong = base64.b64encode(b"\x00" * 32).decode()
    done = subprocess.run(
        [str(binary), f"{v2.server.url}/api/v2", str(index), str(old_size), wrong],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "not consistent" in done.stderr


def test_the_auditor_finds_v2_entries_by_digest_and_identity(v2: Stack, tmp_path: Path) -> None:
    """What rekor-tiles dropped: ``sigstead log search --rekor-version 2`` with the exported v2
    key finds a client's v2 entry by the artifact's digest and by the signer's identity, each
    checked against a checkpoint signed by that key."""
    artifact = tmp_path / "audited.txt"
    artifact.write_text("an artifact an auditor looks for")
    bundle = tmp_path / "audited.sigstore.json"
    python_sign(v2, tmp_path / "py", artifact, bundle)
    index = int(_entry(bundle)["logIndex"])
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    key = v2.trust / "snippets" / "pem" / "rekor-v2.pub"
    for query in (["--sha256", digest], ["--email", IDENTITY]):
        found = sigstead(
            "log", "--url", v2.server.url, "--state-dir", str(tmp_path / "state"),
            "--log-key", str(key), "--json", "search", "--rekor-version", "2", *query,
        )  # fmt: skip
        assert found.returncode == 0, found.stderr
        hits = json.loads(found.stdout)
        assert index in [h["index"] for h in hits], hits
        assert all(h["verified"] == ["inclusionProof", "checkpoint"] for h in hits)
    # With the v1 key the v2 checkpoints do not verify: the check has teeth.
    wrong = sigstead(
        "log", "--url", v2.server.url, "--state-dir", str(tmp_path / "other"),
        "--log-key", str(v2.trust / "snippets" / "pem" / "rekor.pub"),
        "search", "--rekor-version", "2", "--sha256", digest,
    )  # fmt: skip
    assert wrong.returncode != 0


def test_sigstore_js_signs_to_v2_from_the_signing_config_and_the_others_verify(
    v2: Stack, tmp_path: Path
) -> None:
    """sigstore-js 4.x picks the v2 log from the signing config (``majorApiVersion`` 2) and a
    TSA timestamp; sigstore-python and cosign verify its bundle."""
    from tests.e2e.test_sigstore_js import _home, _run

    artifact = tmp_path / "js.txt"
    artifact.write_text("signed by sigstore-js on Rekor v2")
    bundle = tmp_path / "js.sigstore.json"
    done = _run(
        ["node", "sign-config.mjs", "--signing-config",
         str(v2.trust / "signing_config.v0.2.json"), "--out", str(bundle), str(artifact)],
        _home(tmp_path),
        SIGSTORE_ID_TOKEN=v2.idp.token(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    entry = _entry(bundle)
    assert entry["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}
    done = python_verify(v2, tmp_path / "py", artifact, bundle)
    assert done.returncode == 0, done.stderr
    cosign = _cosign("cosign-v3", v2, tmp_path / "cosign")
    done = cosign(
        "verify-blob", *cosign.verifying(tuf=True), "--bundle", str(bundle),
        *_identity(v2), str(artifact),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = js_verify(v2, tmp_path, bundle, artifact)
    assert done.returncode == 0, done.stdout + done.stderr


def test_attestations_on_v2_and_the_pairs_that_cannot_verify(v2: Stack, tmp_path: Path) -> None:
    """sigstore-python attests to v2 as a hashedrekord over the DSSE PAE, sigstore-js 4.x as a
    ``dsse`` 0.0.2 entry (which sigstead accepts, as rekor-tiles did until v2.3). Each client
    verifies its own; across clients they cannot (clients.md §5.4), and these tests pin the
    clients' own messages so that a fix upstream shows up here."""
    from tests.e2e.test_sigstore_js import _home, _run, write_statement

    artifact = tmp_path / "app.bin"
    artifact.write_bytes(b"an image to attest on Rekor v2")
    predicate = tmp_path / "provenance.json"
    predicate.write_text(
        json.dumps(
            {
                "buildDefinition": {"buildType": "https://example/b", "externalParameters": {}},
                "runDetails": {"builder": {"id": "https://ci.internal/builders/tekton"}},
            }
        )
    )
    python_bundle = tmp_path / "python.sigstore.json"
    done = sigstore_python(
        tmp_path / "py", "--trust-config", str(v2.client_trust_config), "attest",
        "--predicate", str(predicate), "--predicate-type", "https://slsa.dev/provenance/v1",
        "--identity-token", v2.idp.token(), "--bundle", str(python_bundle), str(artifact),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert _entry(python_bundle)["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}
    assert python_verify(v2, tmp_path / "py", artifact, python_bundle).returncode == 0
    done = js_verify(v2, tmp_path, python_bundle)
    assert done.returncode != 0
    assert "TLOG_BODY_ERROR: digest mismatch" in done.stdout + done.stderr

    statement = tmp_path / "statement.json"
    write_statement(statement, artifact)
    js_bundle = tmp_path / "js.sigstore.json"
    done = _run(
        ["node", "sign-config.mjs", "--attest", "--signing-config",
         str(v2.trust / "signing_config.v0.2.json"), "--out", str(js_bundle), str(statement)],
        _home(tmp_path),
        SIGSTORE_ID_TOKEN=v2.idp.token(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert _entry(js_bundle)["kindVersion"] == {"kind": "dsse", "version": "0.0.2"}
    done = js_verify(v2, tmp_path, js_bundle)
    assert done.returncode == 0, done.stdout + done.stderr
    done = python_verify(v2, tmp_path / "py", artifact, js_bundle)
    assert done.returncode != 0
    assert "Unsupported DSSE log entry type: dsse/0.0.2" in " ".join(done.stderr.split())


def test_fsck_replays_the_v2_log_for_the_operator_and_the_auditor(
    v2: Stack, tmp_path: Path
) -> None:
    """Whatever the checkpoint key type: the operator's replay from the database and the
    auditor's over HTTP from the trusted root both check every log, v2 included."""
    artifact = tmp_path / "replayed.txt"
    artifact.write_text("replayed by fsck")
    python_sign(v2, tmp_path / "py", artifact, tmp_path / "replayed.sigstore.json")
    for args in (
        ["--url", v2.server.url, "--trusted-root", str(v2.trusted_root)],
        ["--data-dir", str(v2.server.data_dir), "--deep"],
    ):
        done = sigstead("fsck", *args, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        reports = [json.loads(line) for line in done.stdout.splitlines()]
        # The v2 log's origin is the bare host (v1's and CT's end in " - <tree ID>").
        host = urllib.parse.urlsplit(v2.server.url).hostname
        (v2_report,) = [r for r in reports if r.get("origin") == host]
        assert v2_report["size"] >= 2, reports
        if "--deep" in args:
            # Every hashedrekord (the genesis entry by the log's own key among them) is
            # re-admitted; sigstore-js's dsse entries carry no envelope to re-verify.
            assert v2_report["verified"] >= 2, reports
