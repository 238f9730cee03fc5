"""Key files: created 0600, refused when readable by others, never replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from services.keys import (
    KeyFileError,
    load_or_create_ec_key,
    load_public_ec_key,
    write_private_key,
    write_public_key,
)


def test_created_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "log.pem"
    key = load_or_create_ec_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    again = load_or_create_ec_key(path)
    assert again.private_numbers() == key.private_numbers()


def test_refuses_group_readable_key(tmp_path: Path) -> None:
    path = tmp_path / "log.pem"
    load_or_create_ec_key(path)
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match="too open"):
        load_or_create_ec_key(path)


def test_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "log.pem"
    load_or_create_ec_key(path)
    with pytest.raises(FileExistsError):
        write_private_key(path, ec.generate_private_key(ec.SECP256R1()))


def test_wrong_key_type(tmp_path: Path) -> None:
    path = tmp_path / "ed.pem"
    write_private_key(path, ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(KeyFileError, match="not an EC private key"):
        load_or_create_ec_key(path)


def test_public_half_keeps_the_private_key_time_and_is_never_replaced(tmp_path: Path) -> None:
    private, public = tmp_path / "log.pem", tmp_path / "log.pub"
    key = load_or_create_ec_key(private)
    os.utime(private, (1_600_000_000, 1_600_000_000))
    write_public_key(public, key.public_key(), like=private)
    assert public.stat().st_mtime == 1_600_000_000
    assert b"PRIVATE" not in public.read_bytes()
    assert load_public_ec_key(public).public_numbers() == key.public_key().public_numbers()
    write_public_key(public, key.public_key(), like=private)  # the same key: nothing to do
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(KeyFileError, match=r"log.pub: not the public key of .*log.pem"):
        write_public_key(public, other, like=private)
    assert load_public_ec_key(public).public_numbers() == key.public_key().public_numbers()


def test_public_key_refusals(tmp_path: Path) -> None:
    path = tmp_path / "x.pub"
    path.write_text("not a key")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_ec_key(path)
    write_public_key(
        path.with_name("ed.pub"), ed25519.Ed25519PrivateKey.generate().public_key(), like=path
    )
    with pytest.raises(KeyFileError, match="not an EC public key"):
        load_public_ec_key(path.with_name("ed.pub"))
