"""A CA generated with ``--ca-key-type ecdsa-p256`` (the fast option, docs/sizing.md) issues
certificates the real clients accept: sigstore-python signs with one, and sigstore-python,
sigstore-js and cosign v3 verify the bundle with the exported trusted root."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.gocli import Cosign
from tests.e2e.stack import IDENTITY, python_sign, python_verify, start_stack
from tests.e2e.test_sigstore_js import js_verify

pytestmark = pytest.mark.e2e


def test_a_p256_ca_is_accepted_by_every_client(tmp_path: Path) -> None:
    from tests.gotools import tool

    stack = start_stack(tmp_path / "s", server_flags=["--ca-key-type", "ecdsa-p256"])
    try:
        root = json.loads(stack.trusted_root.read_text())
        (ca,) = root["certificateAuthorities"]
        for entry in ca["certChain"]["certificates"]:
            cert = x509.load_der_x509_certificate(base64.b64decode(entry["rawBytes"]))
            key = cert.public_key()
            assert isinstance(key, ec.EllipticCurvePublicKey)
            assert key.curve.name == "secp256r1"
        artifact = tmp_path / "a.txt"
        artifact.write_text("certified by a P-256 CA")
        bundle = tmp_path / "a.sigstore.json"
        python_sign(stack, tmp_path / "py", artifact, bundle)
        done = python_verify(stack, tmp_path / "py", artifact, bundle)
        assert done.returncode == 0, done.stderr
        done = js_verify(stack, tmp_path, bundle, artifact)
        assert done.returncode == 0, done.stdout + done.stderr
        cosign = Cosign("cosign-v3", tool("cosign-v3"), tmp_path / "cosign", stack)
        done = cosign(
            "verify-blob", *cosign.verifying(tuf=False), "--bundle", str(bundle),
            "--certificate-identity", IDENTITY, "--certificate-oidc-issuer", stack.idp.url,
            str(artifact),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    finally:
        stack.stop()
