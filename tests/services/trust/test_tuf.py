"""The TUF repository, checked by python-tuf's own client (``ngclient.Updater``)."""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from services.trust import tuf as tuf_module
from services.trust.tuf import TufError, TufRepository

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


class FileFetcher(FetcherInterface):
    """The client's transport over ``file://`` URLs: the repository as a static mirror."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = Path(url.removeprefix("file://"))
        if not path.is_file():
            raise DownloadHTTPError(f"{url} not found", 404)
        return iter([path.read_bytes()])


def fetch(repo: TufRepository, client_dir: Path, name: str, root: bytes | None = None) -> bytes:
    """What a TUF client that trusts ``root`` (default: version 1) gets for target ``name``."""
    client_dir.mkdir(exist_ok=True)
    base = f"file://{repo.repository}"
    bootstrap = root or (repo.repository / "1.root.json").read_bytes()
    updater = Updater(
        metadata_dir=str(client_dir),
        metadata_base_url=base,
        target_dir=str(client_dir),
        target_base_url=f"{base}/targets/",
        fetcher=FileFetcher(),
        bootstrap=bootstrap,
    )
    updater.refresh()
    info = updater.get_targetinfo(name)
    assert info is not None, f"{name} is not a target"
    return Path(updater.download_target(info)).read_bytes()


Build = Callable[[Callable[[str], bytes | None]], Mapping[str, bytes]]


def targets(**docs: bytes) -> Build:
    """A build function publishing exactly ``docs``."""
    return lambda _current: docs


def test_first_publication_verifies_in_the_tuf_client(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf")
    done = repo.publish(targets(**{"trusted_root.json": b"root v1"}), NOW)
    assert done.changed == ("root", "targets", "snapshot", "timestamp")
    # The root counts from 1; the online roles take the clock as their first version.
    clock = int(NOW.timestamp())
    assert (done.root, done.targets, done.snapshot, done.timestamp) == (1, clock, clock, clock)
    assert fetch(repo, tmp_path / "client", "trusted_root.json") == b"root v1"
    # Consistent snapshots: the target is stored under its hash, metadata under its version.
    assert json.loads(repo.root_json())["signed"]["consistent_snapshot"] is True
    (stored,) = (repo.repository / "targets").iterdir()
    assert stored.name.endswith(".trusted_root.json")
    for key in (repo.keys).iterdir():
        assert key.stat().st_mode & 0o777 == 0o600


def test_republishing_the_same_targets_writes_nothing(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf")
    repo.publish(targets(a=b"1"), NOW)
    before = {p: p.stat().st_mtime_ns for p in repo.repository.rglob("*")}
    done = repo.publish(targets(a=b"1"), NOW + datetime.timedelta(hours=1))
    assert done.changed == ()
    assert {p: p.stat().st_mtime_ns for p in repo.repository.rglob("*")} == before


def test_changed_targets_reach_a_client_that_saw_the_old_ones(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf")
    repo.publish(targets(a=b"old"), NOW)
    assert fetch(repo, tmp_path / "client", "a") == b"old"
    done = repo.publish(targets(a=b"new", b=b"added"), NOW)
    clock = int(NOW.timestamp())
    assert (done.targets, done.snapshot, done.timestamp) == (clock + 1, clock + 1, clock + 1)
    assert fetch(repo, tmp_path / "client", "a") == b"new"
    assert fetch(repo, tmp_path / "client", "b") == b"added"
    assert repo.current_target("a") == b"new"


@pytest.mark.parametrize(
    ("later", "resigned"),
    [
        (datetime.timedelta(hours=11), ()),
        (datetime.timedelta(hours=13), ("timestamp",)),
        (datetime.timedelta(days=4), ("snapshot", "timestamp")),
        (datetime.timedelta(days=46), ("targets", "snapshot", "timestamp")),
        (datetime.timedelta(days=183), ("root", "targets", "snapshot", "timestamp")),
    ],
)
def test_roles_are_resigned_with_half_their_period_left(
    tmp_path: Path, later: datetime.timedelta, resigned: tuple[str, ...]
) -> None:
    repo = TufRepository(tmp_path / "tuf")
    repo.publish(targets(a=b"x"), NOW)
    done = repo.publish(targets(a=b"x"), NOW + later)
    assert done.changed == resigned
    # A client holding only root v1 still follows the chain to the new metadata.
    assert fetch(repo, tmp_path / "client", "a") == b"x"


def test_a_repository_restored_from_a_backup_is_still_newer_than_what_clients_saw(
    tmp_path: Path,
) -> None:
    """Versions never go back: a client that followed the repository after the backup was taken
    takes the restored repository's first publication (python-tuf refuses rollbacks)."""
    repo = TufRepository(tmp_path / "tuf")
    repo.publish(targets(a=b"at backup time"), NOW)
    shutil.copytree(tmp_path / "tuf", tmp_path / "backup")
    for hours in (13, 26, 39):  # the live repository re-signs its timestamp several times
        repo.publish(targets(a=b"after the backup"), NOW + datetime.timedelta(hours=hours))
    client = tmp_path / "client"
    assert fetch(repo, client, "a") == b"after the backup"
    seen = json.loads((client / "timestamp.json").read_bytes())["signed"]["version"]

    shutil.rmtree(tmp_path / "tuf")
    shutil.copytree(tmp_path / "backup", tmp_path / "tuf")
    restored = TufRepository(tmp_path / "tuf")
    done = restored.publish(targets(a=b"restored"), NOW + datetime.timedelta(hours=40))
    assert done.timestamp > seen
    assert fetch(restored, client, "a") == b"restored"


def test_root_key_offline_keeps_serving_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = TufRepository(tmp_path / "tuf")
    repo.publish(targets(a=b"x"), NOW)
    offline = tmp_path / "vault" / "root.pem"
    offline.parent.mkdir()
    shutil.move(repo.keys / "root.pem", offline)
    done = repo.publish(targets(a=b"y"), NOW + datetime.timedelta(days=200))
    assert "root" not in done.changed
    assert done.root == 1
    assert "keys/root.pem is offline" in caplog.text
    assert fetch(repo, tmp_path / "client", "a") == b"y"


def test_an_online_key_that_the_root_does_not_list_is_refused(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf")
    repo.publish(targets(a=b"x"), NOW)
    (repo.keys / "timestamp.pem").unlink()
    other = TufRepository(tmp_path / "other")
    other.publish(targets(a=b"x"), NOW)
    shutil.copy2(other.keys / "timestamp.pem", repo.keys / "timestamp.pem")
    with pytest.raises(TufError, match="timestamp"):
        repo.publish(targets(a=b"x"), NOW)


def test_a_crash_before_the_timestamp_leaves_the_old_publication(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = TufRepository(tmp_path / "tuf")
    repo.publish(targets(a=b"old"), NOW)
    real = tuf_module.write_atomic

    def crash_at_commit(path: Path, data: bytes) -> None:
        if path.name == "timestamp.json":
            raise OSError("power lost")
        real(path, data)

    monkeypatch.setattr(tuf_module, "write_atomic", crash_at_commit)
    with pytest.raises(OSError, match="power lost"):
        repo.publish(targets(a=b"new"), NOW)
    assert fetch(repo, tmp_path / "client", "a") == b"old"
    monkeypatch.setattr(tuf_module, "write_atomic", real)
    # Recovery is just the next publication; the orphaned targets version is superseded, not
    # reused.
    done = repo.publish(targets(a=b"new"), NOW)
    assert done.timestamp == int(NOW.timestamp()) + 1
    assert fetch(repo, tmp_path / "client", "a") == b"new"


def test_copy_has_no_keys_and_no_temporaries(tmp_path: Path) -> None:
    repo = TufRepository(tmp_path / "tuf")
    repo.publish(targets(a=b"x"), NOW)
    (repo.repository / ".timestamp.json.tmp").write_bytes(b"partial")
    out = tmp_path / "mirror"
    repo.copy_to(out)
    names = {p.name for p in out.rglob("*")}
    assert "timestamp.json" in names
    assert not any(n.endswith(".pem") or n.startswith(".") for n in names)
    assert os.listdir(out / "targets")
