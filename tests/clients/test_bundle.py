"""Repairing bundles of index 0 in a size-1 tree, judged by sigstore-python's own model."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError
from sigstore_models.rekor.v1 import TransparencyLogEntry

from clients.bundle import spell_out_defaults
from clients.merkle import hash_leaf
from clients.rekor import VerificationFailed
from services.log.checkpoint import Checkpoint, CheckpointSigner

_KEY = ec.generate_private_key(ec.SECP256R1())
_BODY = b'{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{}}'


def js_bundle_of_a_lone_entry() -> dict[str, Any]:
    """What sigstore-js writes for entry 0 of a tree of size 1 (proto3 JSON drops defaults)."""
    signer = CheckpointSigner("log.example", _KEY)
    root = hash_leaf(_BODY)
    note = signer.sign_checkpoint(Checkpoint("log.example - 1", 1, root))
    entry = {
        "logId": {"keyId": base64.b64encode(signer.key_id).decode()},
        "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
        "integratedTime": "1800000000",
        "inclusionPromise": {"signedEntryTimestamp": base64.b64encode(b"set").decode()},
        "inclusionProof": {
            "rootHash": base64.b64encode(root).decode(),
            "treeSize": "1",
            "checkpoint": {"envelope": note},
        },
        "canonicalizedBody": base64.b64encode(_BODY).decode(),
    }
    return {"verificationMaterial": {"tlogEntries": [entry]}}


def test_sigstore_pythons_model_refuses_the_bundle_as_written() -> None:
    (entry,) = js_bundle_of_a_lone_entry()["verificationMaterial"]["tlogEntries"]
    with pytest.raises(ValidationError, match="Field required"):
        TransparencyLogEntry.model_validate_json(json.dumps(entry))


def test_defaults_are_spelled_out_and_the_proof_checked() -> None:
    repaired = spell_out_defaults(js_bundle_of_a_lone_entry(), log_key=_KEY.public_key())
    assert repaired.added == [
        "tlogEntries[0].logIndex",
        "tlogEntries[0].inclusionProof.logIndex",
        "tlogEntries[0].inclusionProof.hashes",
    ]
    (entry,) = repaired.document["verificationMaterial"]["tlogEntries"]
    model = TransparencyLogEntry.model_validate_json(json.dumps(entry))
    assert model.log_index == 0
    assert model.inclusion_proof.hashes == []
    # A complete bundle is left as it is.
    again = spell_out_defaults(repaired.document)
    assert again.added == []
    assert again.document == repaired.document


def test_nothing_is_blessed_by_repair() -> None:
    tampered = js_bundle_of_a_lone_entry()
    tampered["verificationMaterial"]["tlogEntries"][0]["canonicalizedBody"] = base64.b64encode(
        b"another body"
    ).decode()
    with pytest.raises(VerificationFailed, match="inclusion proof does not verify"):
        spell_out_defaults(tampered)
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(VerificationFailed, match="no signature by log key"):
        spell_out_defaults(js_bundle_of_a_lone_entry(), log_key=stranger)
    with pytest.raises(VerificationFailed, match="not a Sigstore bundle"):
        spell_out_defaults({"mediaType": "something else"})


def test_the_repair_command(tmp_path: Path) -> None:
    """``sigstead log repair-bundle`` through the real command line, offline."""
    original = tmp_path / "first.sigstore.json"
    original.write_text(json.dumps(js_bundle_of_a_lone_entry()))
    key = tmp_path / "rekor.pub"
    key.write_bytes(
        _KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    fixed = tmp_path / "first.fixed.sigstore.json"
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "log", "--log-key", str(key),
         "repair-bundle", str(original), "--out", str(fixed)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "inclusion proof and checkpoint signature verified" in done.stdout
    (entry,) = json.loads(fixed.read_text())["verificationMaterial"]["tlogEntries"]
    TransparencyLogEntry.model_validate_json(json.dumps(entry))
    tampered = js_bundle_of_a_lone_entry()
    tampered["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["treeSize"] = "2"
    original.write_text(json.dumps(tampered))
    refused = subprocess.run(
        [sys.executable, "-m", "services.cli", "log", "repair-bundle", str(original),
         "--out", str(fixed)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "VERIFICATION FAILED" in refused.stderr
