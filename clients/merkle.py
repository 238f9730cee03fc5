"""Independent verification of RFC 9162 inclusion and consistency proofs.

Written from RFC 9162 §2.1.3.2 and §2.1.4.2 directly and deliberately sharing no code with the
server's prover (``services/log/merkle.py``), so that one bug cannot cancel itself out; both are
held to the vectors in ``tests/vectors/``. Every check raises ``ProofVerificationError`` naming the
values involved, and returns None when the proof holds: there is no boolean to forget.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["ProofVerificationError", "verify_consistency", "verify_inclusion"]

_HASH_SIZE = 32


class ProofVerificationError(Exception):
    """A Merkle proof did not verify, or its inputs cannot describe a tree."""


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _check_hashes(what: str, hashes: Sequence[bytes]) -> None:
    for i, h in enumerate(hashes):
        if len(h) != _HASH_SIZE:
            raise ProofVerificationError(f"{what} {i} has {len(h)} bytes, want {_HASH_SIZE}")


def _root_mismatch(calculated: bytes, expected: bytes) -> ProofVerificationError:
    return ProofVerificationError(
        f"root mismatch: calculated {calculated.hex()}, expected {expected.hex()}"
    )


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``tree_size`` with ``root``.

    Requires ``0 <= index < tree_size``. RFC 9162 §2.1.3.2.
    """
    if not 0 <= index < tree_size:
        raise ProofVerificationError(f"index {index} out of range for tree size {tree_size}")
    _check_hashes("proof hash", proof)
    _check_hashes("hash", [leaf_hash, root])
    fn, sn = index, tree_size - 1
    r = leaf_hash
    for i, p in enumerate(proof):
        if sn == 0:
            raise ProofVerificationError(
                f"proof has {len(proof)} hashes, more than the {i} the path needs"
            )
        if fn & 1 or fn == sn:
            r = _node(p, r)
            # Skip the levels where this node has no right sibling (the right edge).
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofVerificationError(f"proof has {len(proof)} hashes, too few for the path")
    if r != root:
        raise _root_mismatch(r, root)


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2`` with ``root2`` extends the one of ``size1`` with ``root1``.

    RFC 9162 §2.1.4.2. Degenerate cases are explicit: equal sizes need an empty proof and equal
    roots; a consistency proof *from* the empty tree is meaningless (every tree extends it), so
    ``size1 == 0`` is accepted only with an empty proof, as transparency-dev/merkle does.
    """
    if not 0 <= size1 <= size2:
        raise ProofVerificationError(f"size1 {size1} and size2 {size2} are not 0 <= size1 <= size2")
    _check_hashes("proof hash", proof)
    _check_hashes("root", [root1, root2])
    if size1 == size2:
        if proof:
            raise ProofVerificationError(
                f"sizes are equal ({size1}) but the proof has {len(proof)} hashes, want 0"
            )
        if root1 != root2:
            raise _root_mismatch(root1, root2)
        return
    if size1 == 0:
        if proof:
            raise ProofVerificationError(
                f"a proof from the empty tree must be empty, got {len(proof)} hashes"
            )
        return
    if not proof:
        raise ProofVerificationError(f"empty proof for sizes {size1} < {size2}")
    path = list(proof)
    # When size1 is a power of two its root is itself a node of the larger tree, and the
    # proof leaves it out: the verifier already knows it as root1.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofVerificationError(f"proof has {len(proof)} hashes, too many")
        if fn & 1 or fn == sn:
            fr = _node(c, fr)
            sr = _node(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofVerificationError(f"proof has {len(proof)} hashes, too few")
    if fr != root1:
        raise _root_mismatch(fr, root1)
    if sr != root2:
        raise _root_mismatch(sr, root2)
