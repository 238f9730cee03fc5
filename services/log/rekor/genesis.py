"""The genesis entry at index 0 of a Rekor v1 log (why every log has one: ``sequencer.Genesis``).

It is an ordinary ``hashedrekord`` 0.0.1 entry, so every Rekor client and auditor can read it,
and everything in it is checkable from public data alone:

- the artifact is the statement ``"sigstead genesis\\n<origin>\\n"``, whose origin is the first
  line of every checkpoint the log signs (``<host> - <treeID>``);
- the signature is the log's own key's (the key of ``GET /api/v1/log/publicKey``, the
  checkpoints and the SETs) over that statement, so nobody but the log could have written it.

The statement's ``sigstead genesis`` prefix can never begin a checkpoint body (which starts with
the origin) nor a SET payload (``{"body":…``), so the signature cannot be replayed as either.
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from services.log.checkpoint import CheckpointSigner, LogPublicKey
from services.log.rekor.kinds import canonicalize_proposed_value
from services.log.sequencer import Genesis

__all__ = ["GenesisMismatch", "genesis_entry", "statement", "verify_genesis"]


class GenesisMismatch(Exception):
    """Entry 0 is not this log's genesis entry."""


def statement(origin: str) -> bytes:
    """The bytes the genesis entry's digest and signature cover."""
    return f"sigstead genesis\n{origin}\n".encode()


def _proposed(signer: CheckpointSigner, origin: str) -> dict[str, object]:
    text = statement(origin)
    pem = signer.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(text).hexdigest()}},
            "signature": {
                "content": base64.b64encode(signer.sign(text)).decode(),
                "publicKey": {"content": base64.b64encode(pem).decode()},
            },
        },
    }


def genesis_entry(signer: CheckpointSigner, origin: str) -> Genesis:
    """Build the genesis leaf, through the same validation as a client's entry."""
    entry = canonicalize_proposed_value(_proposed(signer, origin))
    return Genesis(entry.leaf, entry.search_keys)


def verify_genesis(leaf: bytes, public_key: LogPublicKey, origin: str) -> None:
    """Raise ``GenesisMismatch`` unless ``leaf`` is the genesis entry of the log named."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise GenesisMismatch("a Rekor v1 log key is ECDSA (its SETs must verify in cosign)")
    try:
        body = json.loads(leaf)
        spec = body["spec"]
        digest = spec["data"]["hash"]
        signature = base64.b64decode(spec["signature"]["content"], validate=True)
        pem = base64.b64decode(spec["signature"]["publicKey"]["content"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise GenesisMismatch(f"entry 0 is not a hashedrekord entry: {exc!r}") from None
    if (body.get("kind"), body.get("apiVersion")) != ("hashedrekord", "0.0.1"):
        raise GenesisMismatch("entry 0 is not a hashedrekord 0.0.1 entry")
    want_pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if pem != want_pem:
        raise GenesisMismatch("entry 0 is not signed by the log's key")
    expected = hashlib.sha256(statement(origin)).digest()
    if digest != {"algorithm": "sha256", "value": expected.hex()}:
        raise GenesisMismatch(f"entry 0 does not cover the genesis statement of {origin!r}")
    try:
        public_key.verify(signature, expected, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature:
        raise GenesisMismatch("entry 0's signature does not verify") from None
