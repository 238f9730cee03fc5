"""Go ``encoding/pem``, ``encoding/base64`` and ``encoding/hex`` behaviour the leaf depends on."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.log.rekor._go import (
    GoDecodeError,
    PemBlock,
    b64decode_std,
    hex_decode,
    pem_decode,
    pem_encode,
)

DER = bytes(range(200))


def test_pem_encode_is_go_layout() -> None:
    pem = pem_encode("PUBLIC KEY", DER)
    lines = pem.decode().split("\n")
    assert lines[0] == "-----BEGIN PUBLIC KEY-----"
    assert all(len(line) == 64 for line in lines[1:4])
    assert lines[-2] == "-----END PUBLIC KEY-----"
    assert pem.endswith(b"-----\n")


@given(st.binary(max_size=300), st.sampled_from(["CERTIFICATE", "PUBLIC KEY", "X"]))
def test_pem_round_trip(der: bytes, kind: str) -> None:
    block, rest = pem_decode(pem_encode(kind, der))
    assert block == PemBlock(kind, der)
    assert rest == b""


def test_pem_decode_skips_leading_text_and_returns_rest() -> None:
    data = b"garbage\n" + pem_encode("A", b"one") + b"tail\n" + pem_encode("B", b"two")
    block, rest = pem_decode(data)
    assert block == PemBlock("A", b"one")
    assert pem_decode(rest)[0] == PemBlock("B", b"two")


def test_pem_decode_skips_a_broken_block_and_finds_the_next() -> None:
    broken = b"-----BEGIN A-----\n!!!!\n-----END A-----\n"
    block, _ = pem_decode(broken + pem_encode("B", b"ok"))
    assert block == PemBlock("B", b"ok")


def test_pem_decode_accepts_headers_crlf_and_spaces() -> None:
    body = base64.b64encode(DER).decode()
    text = (
        "-----BEGIN X-----\r\nProc-Type: 4,ENCRYPTED\r\n\r\n"
        + " ".join([body[:10], body[10:]])
        + "\r\n-----END X-----\r\n"
    )
    assert pem_decode(text.encode())[0] == PemBlock("X", DER)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"no pem here",
        b"-----BEGIN A-----\nAAAA\n-----END B-----\n",  # mismatched type
        b"-----BEGIN A-----\nAAAA\n",  # no end
        b"-----BEGIN A-----\nAAAA\n-----END A----- trailing\n",
    ],
)
def test_pem_decode_finds_nothing(data: bytes) -> None:
    assert pem_decode(data) == (None, data)


def test_b64decode_std_ignores_newlines_and_requires_padding() -> None:
    assert b64decode_std("QUJD\nREVG\r\n") == b"ABCDEF"
    with pytest.raises(GoDecodeError, match="illegal base64 data at input byte"):
        b64decode_std("QUI")
    with pytest.raises(GoDecodeError, match="at input byte 4"):
        b64decode_std("QUJD-A==")
    with pytest.raises(GoDecodeError):
        b64decode_std("QQ==QQ==")


@given(st.binary(max_size=200))
def test_b64decode_std_round_trip(data: bytes) -> None:
    assert b64decode_std(base64.b64encode(data).decode()) == data


def test_hex_decode_messages() -> None:
    assert hex_decode("00aBfF") == b"\x00\xab\xff"
    with pytest.raises(GoDecodeError, match=r"^encoding/hex: invalid byte: U\+0067 'g'$"):
        hex_decode("0g")
    with pytest.raises(GoDecodeError, match=r"^encoding/hex: invalid byte: U\+000A$"):
        hex_decode("0\n")
    with pytest.raises(GoDecodeError, match="odd length"):
        hex_decode("abc")
