"""Go standard-library behaviour that Rekor's canonical bytes and error messages depend on.

Rekor is written in Go, so what it accepts and what it writes into a leaf follows
``encoding/base64.StdEncoding``, ``encoding/pem`` and ``encoding/hex``. Python's equivalents differ
in small ways (PEM parsing leniency, base64 line breaks, error wording), and a difference in what
is *accepted* or *written* changes which entries dedup against each other. These functions
reproduce the Go behaviour; nothing here knows about Rekor types.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

__all__ = [
    "GoDecodeError",
    "PemBlock",
    "b64decode_std",
    "b64encode_std",
    "hex_decode",
    "pem_decode",
    "pem_encode",
]

_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_PEM_START = b"\n-----BEGIN "
_PEM_END = b"\n-----END "
_PEM_END_OF_LINE = b"-----"


class GoDecodeError(ValueError):
    """A decode failed; ``str()`` is the message Go's decoder gives for the same input."""


def b64encode_std(data: bytes) -> str:
    """Encode like ``base64.StdEncoding.EncodeToString``: padded, no line breaks."""
    return base64.b64encode(data).decode("ascii")


def b64decode_std(data: str | bytes) -> bytes:
    """Decode like ``base64.StdEncoding.DecodeString``.

    Go skips ``\\r`` and ``\\n`` anywhere, requires correct padding and rejects anything after
    the padding. The error names the first offending byte offset, as Go's ``CorruptInputError``.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    stripped = raw.replace(b"\r", b"").replace(b"\n", b"")
    try:
        return binascii.a2b_base64(stripped, strict_mode=True)
    except (binascii.Error, ValueError):
        raise GoDecodeError(f"illegal base64 data at input byte {_bad_b64_offset(raw)}") from None


def _bad_b64_offset(raw: bytes) -> int:
    for i, b in enumerate(raw):
        if b not in _B64_ALPHABET and b not in (0x0A, 0x0D):
            return i
    # Only padding/length is wrong: Go reports the offset where the broken quantum ends.
    pad = raw.find(b"=")
    return pad if pad >= 0 else len(raw)


def hex_decode(value: str) -> bytes:
    """Decode like ``hex.DecodeString`` (either case), with Go's ``InvalidByteError`` message."""
    raw = value.encode("utf-8", "surrogatepass")
    for b in raw:
        if b not in b"0123456789abcdefABCDEF":
            ch = chr(b)
            shown = f" '{ch}'" if ch.isprintable() else ""
            raise GoDecodeError(f"encoding/hex: invalid byte: U+{b:04X}{shown}")
    if len(raw) % 2:
        raise GoDecodeError("encoding/hex: odd length hex string")
    return bytes.fromhex(raw.decode("ascii"))


@dataclass(frozen=True, slots=True)
class PemBlock:
    """One decoded PEM block: its type line and DER bytes (headers are dropped, as Rekor does)."""

    type: str
    der: bytes


def pem_encode(block_type: str, der: bytes) -> bytes:
    """Encode like ``pem.EncodeToMemory``: 64-character lines and a trailing newline."""
    b64 = base64.b64encode(der)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    body = b"".join(line + b"\n" for line in lines)
    kind = block_type.encode("ascii")
    return b"-----BEGIN " + kind + b"-----\n" + body + b"-----END " + kind + b"-----\n"


def _get_line(data: bytes) -> tuple[bytes, bytes]:
    i = data.find(b"\n")
    if i < 0:
        i = j = len(data)
    else:
        j = i + 1
        if i > 0 and data[i - 1] == 0x0D:
            i -= 1
    return data[:i].rstrip(b" \t"), data[j:]


def pem_decode(data: bytes) -> tuple[PemBlock | None, bytes]:
    """Decode the first PEM block like Go's ``pem.Decode``; return ``(block, rest)``.

    Go skips text before ``-----BEGIN``, skips blocks that fail to parse and keeps searching,
    accepts ``Key: value`` headers, and ignores spaces and tabs inside the base64 body. When no
    block is found the result is ``(None, data)``.
    """
    rest = data
    while True:
        if rest.startswith(_PEM_START[1:]):
            rest = rest[len(_PEM_START) - 1 :]
        else:
            at = rest.find(_PEM_START)
            if at < 0:
                return None, data
            rest = rest[at + len(_PEM_START) :]

        type_line, rest = _get_line(rest)
        if not type_line.endswith(_PEM_END_OF_LINE):
            continue
        type_line = type_line[: -len(_PEM_END_OF_LINE)]

        has_headers = False
        while True:
            if not rest:
                return None, data
            line, following = _get_line(rest)
            if b":" not in line:
                break
            has_headers = True
            rest = following

        if not has_headers and rest.startswith(_PEM_END[1:]):
            end_index = 0
            end_trailer_index = len(_PEM_END) - 1
        else:
            end_index = rest.find(_PEM_END)
            end_trailer_index = end_index + len(_PEM_END)
        if end_index < 0:
            continue

        end_trailer = rest[end_trailer_index:]
        trailer_len = len(type_line) + len(_PEM_END_OF_LINE)
        if len(end_trailer) < trailer_len:
            continue
        rest_of_end_line = end_trailer[trailer_len:]
        end_trailer = end_trailer[:trailer_len]
        if not end_trailer.startswith(type_line) or not end_trailer.endswith(_PEM_END_OF_LINE):
            continue
        if _get_line(rest_of_end_line)[0]:
            continue

        body = rest[:end_index].replace(b" ", b"").replace(b"\t", b"")
        try:
            der = b64decode_std(body)
        except GoDecodeError:
            continue
        _, rest = _get_line(rest[end_index + len(_PEM_END) - 1 :])
        return PemBlock(type_line.decode("latin-1"), der), rest
