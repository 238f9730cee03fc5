"""Ed25519ph verification against RFC 8032 and against pycryptodome's independent signer."""

from __future__ import annotations

import hashlib

import pytest
from Crypto.Hash import SHA512
from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa
from hypothesis import given, settings
from hypothesis import strategies as st

from services.log.rekor.ed25519ph import InvalidEd25519phSignature, verify_ed25519ph

# RFC 8032 §7.3, "TEST abc" (Ed25519ph).
RFC_PUBLIC = bytes.fromhex("ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf")
RFC_SIGNATURE = bytes.fromhex(
    "98a70222f0b8121aa9d30f813d683f809e462b469c7ff87639499bb94e6dae41"
    "31f85042463c2a355a2003d062adf5aaa10b8c61e636062aaad11c2a26083406"
)
ABC = hashlib.sha512(b"abc").digest()
L = 2**252 + 27742317777372353535851937790883648493


def test_rfc8032_vector_verifies() -> None:
    verify_ed25519ph(RFC_PUBLIC, RFC_SIGNATURE, ABC)


def test_rfc8032_vector_with_other_message_fails() -> None:
    with pytest.raises(InvalidEd25519phSignature, match=r"^ed25519: invalid signature$"):
        verify_ed25519ph(RFC_PUBLIC, RFC_SIGNATURE, hashlib.sha512(b"abd").digest())


@pytest.mark.parametrize("position", [0, 31, 32, 40, 62])
def test_single_bit_flip_in_signature_fails(position: int) -> None:
    flipped = bytearray(RFC_SIGNATURE)
    flipped[position] ^= 0x01
    with pytest.raises(InvalidEd25519phSignature):
        verify_ed25519ph(RFC_PUBLIC, bytes(flipped), ABC)


def test_non_canonical_s_is_rejected() -> None:
    # S + L satisfies the same group equation; only the S < L rule can reject it (S + L is
    # below 2^253, so the top-bits check does not).
    s = int.from_bytes(RFC_SIGNATURE[32:], "little") + L
    assert s < 2**253
    forged = RFC_SIGNATURE[:32] + s.to_bytes(32, "little")
    with pytest.raises(InvalidEd25519phSignature):
        verify_ed25519ph(RFC_PUBLIC, forged, ABC)


def test_pure_ed25519_signature_of_the_digest_is_not_accepted() -> None:
    key = ECC.generate(curve="Ed25519")
    pure = eddsa.new(key, "rfc8032").sign(ABC)
    with pytest.raises(InvalidEd25519phSignature):
        verify_ed25519ph(key.public_key().export_key(format="raw"), pure, ABC)


@pytest.mark.parametrize(
    ("public", "signature", "prehash"),
    [(b"\x00" * 31, RFC_SIGNATURE, ABC), (RFC_PUBLIC, RFC_SIGNATURE[:63], ABC),
     (RFC_PUBLIC, RFC_SIGNATURE, ABC[:32])],
)  # fmt: skip
def test_wrong_lengths_are_rejected(public: bytes, signature: bytes, prehash: bytes) -> None:
    with pytest.raises(InvalidEd25519phSignature):
        verify_ed25519ph(public, signature, prehash)


def test_public_key_not_on_the_curve_is_rejected() -> None:
    # y = 2 has no x on edwards25519.
    with pytest.raises(InvalidEd25519phSignature, match="invalid public key"):
        verify_ed25519ph((2).to_bytes(32, "little"), RFC_SIGNATURE, ABC)


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=200), st.binary(max_size=20))
def test_agrees_with_pycryptodome(seed: bytes, message: bytes, other: bytes) -> None:
    key = eddsa.import_private_key(seed)
    public = key.public_key().export_key(format="raw")
    signature = eddsa.new(key, "rfc8032").sign(SHA512.new(message))
    verify_ed25519ph(public, signature, hashlib.sha512(message).digest())
    if other != message:
        with pytest.raises(InvalidEd25519phSignature):
            verify_ed25519ph(public, signature, hashlib.sha512(other).digest())


def test_pure_ed25519_signature_over_the_digest_is_not_ed25519ph() -> None:
    """The prehash shim must make PyCryptodome use Ed25519ph, never pure Ed25519."""
    from Crypto.Hash import SHA512
    from Crypto.PublicKey import ECC
    from Crypto.Signature import eddsa

    key = ECC.generate(curve="Ed25519")
    digest = SHA512.new(b"sigstead").digest()
    pure = eddsa.new(key, "rfc8032").sign(digest)
    ph = eddsa.new(key, "rfc8032").sign(SHA512.new(b"sigstead"))
    raw = key.public_key().export_key(format="raw")
    verify_ed25519ph(raw, ph, digest)
    with pytest.raises(InvalidEd25519phSignature):
        verify_ed25519ph(raw, pure, digest)
