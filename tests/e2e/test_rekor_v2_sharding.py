"""Retiring a Rekor v2 log for a new one, as the public good instance shards v2 (one host per
log, the old one frozen and kept readable), with the real clients: a bundle logged on the old
Ed25519 log and one on its ECDSA successor both verify in sigstore-python, sigstore-js and
cosign v3 with the trusted root that lists both, and fsck replays both over HTTP.

The old log's host is ``localhost``, the new one's ``127.0.0.1``: two names of one server, as
``log2025-1.rekor.sigstore.dev`` and its successor are two names a gateway routes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.gocli import Cosign
from tests.e2e.stack import (
    IDENTITY,
    Stack,
    python_sign,
    python_verify,
    sigstead,
    start_stack,
)
from tests.e2e.test_sigstore_js import js_verify
from tests.serverproc import free_port, start_server, stop_server

pytestmark = pytest.mark.e2e


def _entry(bundle: Path) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(bundle.read_text())["verificationMaterial"]["tlogEntries"][0]
    return entry


def _get(url: str) -> str:
    with urllib.request.urlopen(url) as reply:
        return str(reply.read().decode())


def _post_status(url: str) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=b"{}", headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _export(stack: Stack, out: Path) -> Stack:
    done = sigstead(
        "trust", "export", "--data-dir", str(stack.server.data_dir),
        "--public-url", stack.server.url, "--out", str(out),
        "--identity", IDENTITY, "--issuer", stack.idp.url, "--rekor-version", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return Stack(stack.idp, stack.server, out)


def test_a_retired_v2_log_and_its_successor_both_verify_everywhere(tmp_path: Path) -> None:
    from tests.gotools import tool

    port = free_port()
    old_url, new_url = f"http://localhost:{port}", f"http://127.0.0.1:{port}"
    flags = ["--rekor-version", "2", "--rekor-v2-url", old_url]
    stack = start_stack(
        tmp_path / "s", *flags, server_flags=["--rekor-v2-key-type", "ed25519"], port=port
    )
    data, config = stack.server.data_dir, tmp_path / "s" / "oidc.json"
    up = ["--oidc-config", str(config)]
    try:
        a = tmp_path / "a.txt"
        a.write_text("logged on the 2026 log")
        bundle_a = tmp_path / "a.sigstore.json"
        python_sign(stack, tmp_path / "py", a, bundle_a)
        old_root = json.loads(stack.trusted_root.read_text())
        old_log = old_root["tlogs"][1]
        assert old_log["baseUrl"] == old_url
        assert old_log["publicKey"]["keyDetails"] == "PKIX_ED25519"
        assert _entry(bundle_a)["logId"] == old_log["logId"]
        assert _entry(bundle_a)["inclusionProof"]["checkpoint"]["envelope"].startswith(
            "localhost\n"
        )
        refused = sigstead("keys", "retire-v2", "--data-dir", str(data), "--rekor-v2-url", old_url)
        assert refused.returncode != 0
        assert "not frozen" in refused.stderr

        # Freeze: every replica once with --rekor-v2-freeze (here the one `up`).
        stop_server(stack.server)
        server = start_server(data, *up, *flags, "--rekor-v2-freeze", port=port)
        status, text = _post_status(f"{old_url}/api/v2/log/entries")
        assert (status, text) == (
            405,
            "This log has been frozen, please switch to the latest log.\n",
        )
        final = _get(f"{old_url}/api/v2/checkpoint")
        assert final.startswith("localhost\n2\n")
        assert "\nLog frozen \u2014 " in final
        stop_server(server)

        # Retire it and publish its successor under another host.
        done = sigstead("keys", "retire-v2", "--data-dir", str(data), "--rekor-v2-url", old_url)
        assert done.returncode == 0, done.stderr
        done = sigstead(
            "trust", "publish", "--data-dir", str(data), "--public-url", new_url,
            "--rekor-version", "2",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        server = start_server(data, *up, "--rekor-version", "2", port=port)
        stack = _export(Stack(stack.idp, server, stack.trust), tmp_path / "trust-2027")

        root = json.loads(stack.trusted_root.read_text())
        _, new_log, retired = root["tlogs"]
        assert new_log["baseUrl"] == new_url
        assert "end" not in new_log["publicKey"]["validFor"]
        assert retired["logId"] == old_log["logId"]
        assert retired["baseUrl"] == old_url
        assert (
            retired["publicKey"]["validFor"]["start"] == old_log["publicKey"]["validFor"]["start"]
        )
        assert "end" in retired["publicKey"]["validFor"]
        config_doc = json.loads((stack.trust / "signing_config.v0.2.json").read_text())
        assert [s["url"] for s in config_doc["rekorTlogUrls"]] == [new_url, new_url]

        b = tmp_path / "b.txt"
        b.write_text("logged on the 2027 log")
        bundle_b = tmp_path / "b.sigstore.json"
        python_sign(stack, tmp_path / "py", b, bundle_b)
        assert _entry(bundle_b)["logIndex"] == "1"
        assert _entry(bundle_b)["logId"] == new_log["logId"]
        # The old log still answers at its host, frozen; the new one everywhere else.
        assert _get(f"{old_url}/api/v2/checkpoint") == final
        assert _get(f"{new_url}/api/v2/checkpoint").startswith("127.0.0.1\n2\n")
        assert _post_status(f"{old_url}/api/v2/log/entries")[0] == 405

        cosign = Cosign("cosign-v3", tool("cosign-v3"), tmp_path / "cosign", stack)
        for artifact, bundle in ((a, bundle_a), (b, bundle_b)):
            done = python_verify(stack, tmp_path / "py", artifact, bundle)
            assert done.returncode == 0, (bundle.name, done.stderr)
            done = js_verify(stack, tmp_path, bundle, artifact)
            assert done.returncode == 0, (bundle.name, done.stdout + done.stderr)
            done = cosign(
                "verify-blob", *cosign.verifying(tuf=False), "--bundle", str(bundle),
                "--certificate-identity", IDENTITY, "--certificate-oidc-issuer", stack.idp.url,
                str(artifact),
            )  # fmt: skip
            assert done.returncode == 0, (bundle.name, done.stderr)

        # An auditor with the new trusted root replays every log, the retired one at its host.
        done = sigstead(
            "fsck", "--url", new_url, "--trusted-root", str(stack.trusted_root), "--json"
        )
        assert done.returncode == 0, done.stdout + done.stderr
        origins = {
            r["origin"]: r["size"] for r in map(json.loads, done.stdout.splitlines()) if "ok" in r
        }
        assert origins["localhost"] == 2
        assert origins["127.0.0.1"] == 2
    finally:
        stack.stop()
