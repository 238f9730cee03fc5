"""``gather`` reads public material only, so the trust service can run without private keys."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import pytest

from services.ca import keys as ca_keys
from services.trust.material import (
    MissingKeysError,
    describe,
    ensure_keys,
    gather,
    public_files,
)
from services.tsa import keys as tsa_keys

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _public_copy(data: Path, to: Path) -> None:
    """Only what ``public_files`` names, times kept: what compose.yaml mounts into ``trust``."""
    for path in public_files(data):
        target = to / path.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def test_public_files_alone_describe_the_same_keys(tmp_path: Path) -> None:
    data, public = tmp_path / "data", tmp_path / "public"
    ensure_keys(data, NOW)
    full = gather(data, NOW, create=False)
    _public_copy(data, public)
    assert not [p for p in public.rglob("*") if p.is_file() and b"PRIVATE" in p.read_bytes()]
    alone = gather(public, NOW, create=False)
    assert alone == full
    assert describe(alone) == describe(full)
    # Creation times survive: they are the private keys' (published as validFor.start).
    assert alone.rekor.created.timestamp() == int((data / "keys" / "rekor.pem").stat().st_mtime)
    assert sorted(p.relative_to(public) for p in public.rglob("*") if p.is_file()) == sorted(
        p.relative_to(data) for p in public_files(data)
    ), "gather wrote nothing"


def test_a_data_directory_from_before_public_halves_is_told_to_run_keys_init(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    ensure_keys(data, NOW)
    (data / "keys" / "rekor.pub").unlink()
    (data / "keys" / "ctlog.pub").unlink()
    with pytest.raises(MissingKeysError) as err:
        gather(data, NOW, create=False)
    assert str(err.value) == (
        f"{data} holds no keys/rekor.pub, keys/ctlog.pub: run `sigstead keys init --data-dir "
        f"{data}` once (it writes the public halves of the keys it holds and creates none of "
        "these)"
    )
    before = (data / "keys" / "rekor.pem").read_bytes()
    ensure_keys(data, NOW)  # what `keys init` runs
    assert (data / "keys" / "rekor.pem").read_bytes() == before
    assert gather(data, NOW, create=False).rekor.created.timestamp() == int(
        (data / "keys" / "rekor.pem").stat().st_mtime
    )


def test_the_root_keys_can_be_taken_offline(tmp_path: Path) -> None:
    """No service, and no later ``keys init``, reads or remakes the CA and TSA root keys: they
    sign nothing once the CA's intermediate and the TSA's leaf exist (docs/deploy.md)."""
    data, offline = tmp_path / "data", tmp_path / "offline"
    ensure_keys(data, NOW)
    before = gather(data, NOW, create=False)
    offline.mkdir()
    for root_key in (data / "ca" / ca_keys.ROOT_KEY_FILE, data / "tsa" / tsa_keys.ROOT_KEY_FILE):
        root_key.rename(offline / root_key.name)
    ensure_keys(data, NOW)  # what `keys init` runs on every compose start
    assert not (data / "ca" / ca_keys.ROOT_KEY_FILE).exists()
    assert not (data / "tsa" / tsa_keys.ROOT_KEY_FILE).exists()
    assert gather(data, NOW, create=False) == before
    # What `serve ca` and `serve tsa` load.
    assert ca_keys.load_or_create(data, NOW).chain == before.ca_chain
    assert tuple(tsa_keys.load_or_create(data / "tsa", NOW)[1]) == before.tsa_chain
