"""Claims on a data directory: one owner (``up``) or many sharers (``serve``), one publisher,
each named when it refuses another, none outliving its process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services import datadir
from services.datadir import DataDirError, InUseError, claim, claimed, owners


def test_an_owner_excludes_everyone_and_is_named(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with claimed(data, command="up", url="http://a:1", exclusive=True, publisher=True):
        assert data.stat().st_mode & 0o777 == 0o700
        (owner,) = owners(data)
        assert (owner.command, owner.pid, owner.url) == ("up", os.getpid(), "http://a:1")
        with pytest.raises(InUseError) as err:
            claim(data, command="up", url="http://b:2", exclusive=True, publisher=True)
        assert str(err.value) == (
            f"{data} is in use by `sigstead up` (pid {os.getpid()} on {owner.host}, "
            f"http://a:1, since {owner.since}): stop it first, or give another --data-dir"
        )
        with pytest.raises(InUseError, match="`sigstead up` owns its data directory alone"):
            claim(data, command="serve log", exclusive=False, publisher=False)
    # Released: the record is gone and the next owner gets in.
    assert owners(data) == []
    claim(data, command="up", exclusive=True, publisher=True).release()


def test_sharers_share_but_one_publishes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log_1 = claim(data, command="serve log", exclusive=False, publisher=False)
    log_2 = claim(data, command="serve log", exclusive=False, publisher=False)
    trust = claim(data, command="serve trust", url="http://t", exclusive=False, publisher=True)
    try:
        assert sorted(o.command for o in owners(data)) == ["serve log", "serve log", "serve trust"]
        with pytest.raises(InUseError, match=r"is published by `sigstead serve trust` \(pid"):
            claim(data, command="trust publish", exclusive=False, publisher=True)
        with pytest.raises(InUseError) as err:
            claim(data, command="up", exclusive=True, publisher=True)
        assert str(err.value).count("`sigstead serve log` (pid") == 2
        assert str(err.value).count("`sigstead serve trust` (pid") == 1
    finally:
        for held in (log_1, log_2, trust):
            held.release()


def test_a_claim_dies_with_its_process(tmp_path: Path) -> None:
    """However the process ends (here: SIGKILL), the kernel drops its locks; the record it
    leaves is recognised as a dead process's and removed."""
    data = tmp_path / "data"
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from services.datadir import claim
        data = Path({str(data)!r})
        held = claim(data, command="up", url="http://x", exclusive=True, publisher=True)
        print("claimed", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "claimed"
        with pytest.raises(InUseError, match=f"pid {proc.pid} on"):
            claim(data, command="up", exclusive=True, publisher=True)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(list((data / datadir.OWNERS_DIR).glob("*.json"))) == 1  # left behind
    claim(data, command="up", exclusive=True, publisher=True).release()
    assert list((data / datadir.OWNERS_DIR).glob("*.json")) == []


def test_check_refuses_what_cannot_be_a_data_directory(tmp_path: Path) -> None:
    datadir.check(tmp_path / "new")  # missing, with a parent: it will be created
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(DataDirError, match="is a file, not a directory"):
        datadir.check(tmp_path / "file")
    with pytest.raises(DataDirError, match="part of the path is a file"):
        datadir.check(tmp_path / "file" / "data")
    with pytest.raises(DataDirError, match="missing does not exist"):
        datadir.check(tmp_path / "missing" / "data")
