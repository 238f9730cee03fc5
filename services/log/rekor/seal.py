"""The Rekor v1 SET, made once when an entry is integrated and stored beside it (the ``seal``).

A SET signed on every read would sign whatever ``integrated_time`` the database holds at that
moment, so an edit of that column would be served as a freshly and validly signed lie. Signed at
commit and stored, it binds the time the log actually assigned: an edited row then serves a SET
that no longer matches its ``integratedTime`` (every client refuses it), and ``verify_seal`` lets
an auditor check each stored row against the log key.
"""

from __future__ import annotations

import base64

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from services import jcs
from services.jcs import MAX_SAFE_INTEGER
from services.log.checkpoint import CheckpointSigner, LogPublicKey
from services.log.sequencer import NewEntry, Sealer

__all__ = ["SealMismatch", "sealer", "set_payload", "verify_seal"]


class SealMismatch(Exception):
    """A stored entry's seal does not verify for its stored values under the log key."""


def set_payload(leaf: bytes, integrated_time: int, log_id_hex: str, index: int) -> bytes:
    """What a Rekor SET signs: exactly these four fields, JCS-encoded (rekor.md §3).

    Written directly, a third of the cost of encoding the dict (it runs once per entry written,
    and again per entry ``verify_seal`` checks). The bytes are the JCS encoding because the keys
    are in JCS (UTF-16) order, base64 and an ASCII-alphanumeric ``logID`` need no escaping, and
    ``%d`` of an exact ``int`` within the safe range is the number JCS writes. Anything else (a
    ``bool``, an int beyond 2**53 - 1, an odd ``logID``) goes through ``jcs.dumps``, which
    encodes or raises exactly as ``rfc8785.dumps`` would.
    """
    if (
        type(integrated_time) is int
        and type(index) is int
        and -MAX_SAFE_INTEGER <= integrated_time <= MAX_SAFE_INTEGER
        and -MAX_SAFE_INTEGER <= index <= MAX_SAFE_INTEGER
        and log_id_hex.isascii()
        and log_id_hex.isalnum()
    ):
        return b'{"body":"%s","integratedTime":%d,"logID":"%s","logIndex":%d}' % (
            base64.b64encode(leaf),
            integrated_time,
            log_id_hex.encode(),
            index,
        )
    return jcs.dumps(
        {
            "body": base64.b64encode(leaf).decode(),
            "integratedTime": integrated_time,
            "logID": log_id_hex,
            "logIndex": index,
        }
    )


def sealer(signer: CheckpointSigner) -> Sealer:
    """The sequencer hook that signs each Rekor entry's SET as it is integrated."""
    log_id = signer.key_id.hex()

    def seal(entry: NewEntry) -> bytes:
        return signer.sign(set_payload(entry.leaf, entry.integrated_time, log_id, entry.index))

    return seal


def verify_seal(
    seal: bytes,
    leaf: bytes,
    integrated_time: int,
    index: int,
    public_key: LogPublicKey,
    log_id_hex: str,
) -> None:
    """Raise ``SealMismatch`` unless ``seal`` is the log key's SET over these stored values."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise SealMismatch("a Rekor v1 log key is ECDSA: SETs are ECDSA signatures")
    try:
        public_key.verify(
            seal, set_payload(leaf, integrated_time, log_id_hex, index), ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature:
        raise SealMismatch(
            f"entry {index}: the stored SET does not verify for integratedTime {integrated_time}"
        ) from None
