"""Independent verification of RFC 9162 inclusion and consistency proofs.

Written from RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency) directly, and deliberately
sharing no code with the server's prover (``services/log/merkle.py``), so that one bug cannot
cancel itself out; both are held to the vectors in ``tests/vectors/``. Every check raises
``ProofVerificationError`` naming the values involved and returns None when the proof holds:
there is no boolean to forget to test.

Each verifier runs the RFC's ``fn``/``sn`` walk twice: once without hashing, to learn how many
proof hashes the tree shape calls for and on which side each one goes (so a proof of the wrong
length fails with "proof has 3 hashes, want 4" before any hashing), then once over the hashes.
The walk is the RFC's, so a proof of the right length passes exactly when the RFC's algorithm
would accept it.

Degenerate cases, decided here once:

- inclusion in a tree of size 0: there is no leaf, so any index is out of range;
- inclusion in a tree of size 1 (index 0): the proof is empty and the root is the leaf hash;
- consistency with ``size1 == size2``: the proof must be empty and the roots equal;
- consistency from ``size1 == 0``: every tree extends the empty tree, so the proof must be
  empty, as in transparency-dev/merkle. We are stricter than transparency-dev in one respect:
  ``root1`` must be the root of the empty tree, SHA-256 of the empty string, since a checkpoint
  for size 0 with any other root is a false statement by the log;
- an empty proof for ``0 < size1 < size2``: rejected (RFC 9162 §2.1.4.2 step 1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from clients.errors import ClientError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "ProofVerificationError",
    "hash_leaf",
    "root_from_inclusion_proof",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Every leaf hash, node hash and root is a SHA-256 digest."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the empty tree (RFC 9162 §2.1.1)."""


class ProofVerificationError(ClientError):
    """A Merkle proof did not verify, or its inputs cannot describe a tree."""


def hash_leaf(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash ``SHA-256(0x00 ‖ data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def _hash_children(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _check_hash(what: str, h: bytes) -> None:
    if len(h) != HASH_SIZE:
        raise ProofVerificationError(f"{what} has {len(h)} bytes, want {HASH_SIZE}")


def _check_proof(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        _check_hash(f"proof hash {i}", h)


def _root_mismatch(what: str, calculated: bytes, expected: bytes) -> ProofVerificationError:
    return ProofVerificationError(
        f"{what} mismatch: calculated {calculated.hex()}, expected {expected.hex()}"
    )


def _inclusion_sides(index: int, tree_size: int) -> list[bool]:
    """RFC 9162 §2.1.3.2 steps 2 and 4 without hashing: is proof hash i a *left* sibling?

    The list has one entry per proof hash the RFC's loop consumes before ``sn`` reaches 0, so its
    length is the only acceptable proof length. Requires ``0 <= index < tree_size``.
    """
    fn, sn = index, tree_size - 1
    sides: list[bool] = []
    while sn:
        if fn & 1 or fn == sn:
            sides.append(True)
            # On the tree's right edge a node may have no sibling for several levels: it is
            # promoted unchanged, so skip those levels.
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sides.append(False)
        fn >>= 1
        sn >>= 1
    return sides


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes]
) -> bytes:
    """Return the root that ``proof`` implies for ``leaf_hash`` at ``index`` in ``tree_size``.

    Requires ``0 <= index < tree_size``, 32-byte hashes, and exactly as many proof hashes as the
    tree shape calls for; raises ``ProofVerificationError`` otherwise. The result means nothing
    until it is compared with a trusted root: ``verify_inclusion`` does that.
    """
    if tree_size == 0:
        raise ProofVerificationError(
            f"index {index} out of range for tree size 0: the empty tree has no leaves"
        )
    if not 0 <= index < tree_size:
        raise ProofVerificationError(f"index {index} out of range for tree size {tree_size}")
    _check_hash("leaf hash", leaf_hash)
    _check_proof(proof)
    sides = _inclusion_sides(index, tree_size)
    if len(proof) != len(sides):
        raise ProofVerificationError(
            f"proof has {len(proof)} hashes, want {len(sides)}"
            f" (index {index}, tree size {tree_size})"
        )
    r = leaf_hash
    for p, left in zip(proof, sides, strict=True):
        r = _hash_children(p, r) if left else _hash_children(r, p)
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``tree_size`` leaves and ``root``.

    RFC 9162 §2.1.3.2. Requires ``0 <= index < tree_size`` and 32-byte hashes. For a tree of one
    leaf the proof is empty and ``root`` must equal ``leaf_hash``. Returns None if the proof
    holds; raises ``ProofVerificationError`` naming the values involved otherwise.
    """
    _check_hash("root", root)
    calculated = root_from_inclusion_proof(leaf_hash, index, tree_size, proof)
    if calculated != root:
        raise _root_mismatch("root", calculated, root)


def _consistency_sides(size1: int, size2: int) -> list[bool]:
    """RFC 9162 §2.1.4.2 steps 3, 4 and 6 without hashing, for ``0 < size1 < size2``.

    One entry per proof hash after the seed (``consistency_path[1:]`` in the RFC): True when the
    hash is a left sibling, so it extends both the old and the new root; False when it is a
    right sibling, so it extends only the new root.
    """
    fn, sn = size1 - 1, size2 - 1
    # Climb out of the perfect subtrees that end exactly at size1: the seed is their root.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    sides: list[bool] = []
    while sn:
        if fn & 1 or fn == sn:
            sides.append(True)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sides.append(False)
        fn >>= 1
        sn >>= 1
    return sides


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2`` leaves and ``root2`` extends that of ``size1``, ``root1``.

    RFC 9162 §2.1.4.2. Requires ``0 <= size1 <= size2`` and 32-byte hashes. Equal sizes need an
    empty proof and equal roots; ``size1 == 0`` needs an empty proof and ``root1`` equal to the
    empty tree's root (see the module docstring). Returns None if the proof holds; raises
    ``ProofVerificationError`` naming the values involved otherwise.
    """
    if not 0 <= size1 <= size2:
        raise ProofVerificationError(f"size1 {size1} and size2 {size2} are not 0 <= size1 <= size2")
    _check_hash("root1", root1)
    _check_hash("root2", root2)
    _check_proof(proof)

    if size1 == size2:
        if proof:
            raise ProofVerificationError(
                f"proof has {len(proof)} hashes, want 0 (size1 == size2 == {size1})"
            )
        if root1 != root2:
            raise ProofVerificationError(
                f"root mismatch for equal sizes {size1}: root1 {root1.hex()}, root2 {root2.hex()}"
            )
        if size1 == 0 and root1 != EMPTY_ROOT:
            raise _root_mismatch("empty tree root", EMPTY_ROOT, root1)
        return

    if size1 == 0:
        if proof:
            raise ProofVerificationError(
                f"proof has {len(proof)} hashes, want 0 (consistency from the empty tree)"
            )
        if root1 != EMPTY_ROOT:
            raise _root_mismatch("empty tree root", EMPTY_ROOT, root1)
        return

    if not proof:
        raise ProofVerificationError(f"empty proof for size1 {size1} < size2 {size2}")

    sides = _consistency_sides(size1, size2)
    # When size1 is a power of two the old tree is itself a node of the new one, and its root
    # is the seed; the log leaves it out because the verifier already holds it as root1.
    seeded_by_root1 = size1 & (size1 - 1) == 0
    want = len(sides) if seeded_by_root1 else len(sides) + 1
    if len(proof) != want:
        raise ProofVerificationError(
            f"proof has {len(proof)} hashes, want {want} (size1 {size1}, size2 {size2})"
        )
    path = [root1, *proof] if seeded_by_root1 else list(proof)
    fr = sr = path[0]
    for c, left in zip(path[1:], sides, strict=True):
        if left:
            fr = _hash_children(c, fr)
            sr = _hash_children(c, sr)
        else:
            sr = _hash_children(sr, c)
    if fr != root1:
        raise _root_mismatch("root1", fr, root1)
    if sr != root2:
        raise _root_mismatch("root2", sr, root2)
