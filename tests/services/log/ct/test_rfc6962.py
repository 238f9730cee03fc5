"""RFC 6962 TLS encodings: round trips, exact layouts, strict parsing."""

from __future__ import annotations

import datetime
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from services.log.ct.rfc6962 import (
    EntryType,
    SignedCertificateTimestamp,
    TimestampedEntry,
    digitally_signed,
    encode_sct_list,
    remove_poison,
    sct_list_extension_value,
    strip_poison,
)

SCT = SignedCertificateTimestamp(
    log_id=bytes(range(32)), timestamp=1_700_000_000_123, signature=b"\x30\x06sig!!", extensions=b""
)


def test_sct_tls_layout_and_round_trip() -> None:
    tls = SCT.to_tls()
    assert tls[0] == 0
    assert tls[1:33] == bytes(range(32))
    assert struct.unpack("!Q", tls[33:41])[0] == 1_700_000_000_123
    assert tls[41:43] == b"\x00\x00"  # empty extensions
    assert tls[43:47] == b"\x04\x03\x00\x07"  # SHA-256, ECDSA, u16 length
    assert SignedCertificateTimestamp.from_tls(tls) == SCT
    with pytest.raises(ValueError, match="trailing"):
        SignedCertificateTimestamp.from_tls(tls + b"\x00")
    for cut in (0, 10, 42, len(tls) - 1):
        with pytest.raises(ValueError, match="truncated"):
            SignedCertificateTimestamp.from_tls(tls[:cut])


def test_add_chain_response_round_trip() -> None:
    doc = SCT.to_add_chain_response()
    assert doc == {
        "sct_version": 0,
        "id": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "timestamp": 1_700_000_000_123,
        "extensions": "",
        "signature": "BAMABzAGc2lnISE=",  # 04 03 0007 || signature
    }
    assert SignedCertificateTimestamp.from_add_chain_response(doc) == SCT
    with pytest.raises(ValueError, match="malformed"):
        SignedCertificateTimestamp.from_add_chain_response({**doc, "timestamp": "1"})


def test_digitally_signed_carries_the_sct_algorithms() -> None:
    assert digitally_signed(b"sig") == b"\x04\x03\x00\x03sig"
    rsa = SignedCertificateTimestamp(
        log_id=bytes(32), timestamp=1, signature=b"sig", signature_algorithm=1
    )
    assert rsa.digitally_signed() == b"\x04\x01\x00\x03sig"
    assert SignedCertificateTimestamp.from_tls(rsa.to_tls()) == rsa


def test_invalid_scts_are_refused() -> None:
    with pytest.raises(ValueError, match="log id"):
        SignedCertificateTimestamp(log_id=b"x", timestamp=1, signature=b"s")
    with pytest.raises(ValueError, match="u64"):
        SignedCertificateTimestamp(log_id=bytes(32), timestamp=-1, signature=b"s")
    with pytest.raises(ValueError, match="v1"):
        SignedCertificateTimestamp(log_id=bytes(32), timestamp=1, signature=b"s", version=1)


def test_signed_input_layout() -> None:
    precert = TimestampedEntry(5, EntryType.PRECERT, b"TBS", b"\xaa" * 32)
    entry = b"\xaa" * 32 + b"\x00\x00\x03TBS"
    assert precert.signed_entry() == entry
    # version 0, signature type certificate_timestamp (0), u64 timestamp, u16 entry type, the
    # entry, u16 extensions: also the MerkleTreeLeaf, which is why the log signs its own leaf.
    expected = b"\x00\x00" + (5).to_bytes(8, "big") + b"\x00\x01" + entry + b"\x00\x00"
    assert precert.sct_signed_input() == expected
    assert precert.merkle_tree_leaf() == expected
    x509_entry = TimestampedEntry(5, EntryType.X509, b"DER")
    assert x509_entry.signed_entry() == b"\x00\x00\x03DER"
    with pytest.raises(ValueError, match="32-byte issuer key hash"):
        TimestampedEntry(5, EntryType.PRECERT, b"TBS", b"short")
    with pytest.raises(ValueError, match="u64"):
        TimestampedEntry(1 << 64, EntryType.X509, b"DER")


def test_sct_list_is_double_wrapped() -> None:
    tls = SCT.to_tls()
    listed = encode_sct_list([SCT])
    assert listed == struct.pack("!HH", len(tls) + 2, len(tls)) + tls
    value = sct_list_extension_value([SCT])
    assert value[0] == 0x04
    assert value[2:] == listed
    big = SignedCertificateTimestamp(log_id=bytes(32), timestamp=1, signature=b"s" * 300)
    big_value = sct_list_extension_value([big])
    assert big_value[:2] == b"\x04\x82"
    assert big_value[4:] == encode_sct_list([big])
    with pytest.raises(ValueError, match="at least one"):
        encode_sct_list([])


def _tbs(extensions: list[tuple[x509.ExtensionType, bool]], san_length: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sigstead test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("https://example.com/" + "a" * san_length)]
            ),
            critical=False,
        )
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256()).tbs_certificate_bytes


POISON = (x509.PrecertPoison(), True)
OTHERS = [
    (x509.BasicConstraints(ca=False, path_length=None), True),
    (x509.KeyUsage(True, False, False, False, False, False, False, False, False), True),
    (x509.ExtendedKeyUsage([x509.ObjectIdentifier("1.3.6.1.5.5.7.3.3")]), False),
]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3), st.sampled_from([0, 100, 300, 70_000]))
def test_remove_poison_is_strip_poison_for_any_layout(at: int, san_length: int) -> None:
    """The CA's fast DER edit gives strip_poison's asn1crypto bytes, wherever the poison
    stands and whatever the length encodings (short, one, two and three length octets)."""
    tbs = _tbs([*OTHERS[:at], POISON, *OTHERS[at:]], san_length)
    assert remove_poison(tbs) == strip_poison(tbs)


@pytest.mark.parametrize(
    ("extensions", "message"),
    [
        (OTHERS, "0 poison extensions"),
        ([(x509.PrecertPoison(), False)], "critical with value NULL"),
    ],
)
def test_remove_poison_refuses_what_strip_poison_refuses(
    extensions: list[tuple[x509.ExtensionType, bool]], message: str
) -> None:
    tbs = _tbs(extensions, 0)
    with pytest.raises(ValueError, match=message):
        strip_poison(tbs)
    with pytest.raises(ValueError, match=message):
        remove_poison(tbs)
