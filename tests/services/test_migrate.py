"""Migrations: replicas that start together on an empty database must all come up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.db import Database, sqlite_url
from services.migrate import check_at_head
from tests.serverproc import start_server, stop_server

# Without the migration lock, one of two processes failed in about half the trials.
TRIALS = 5
PROCESSES = 3


def _at_head(url: str) -> None:
    async def check() -> None:
        db = Database(url)
        try:
            await check_at_head(db)
        finally:
            await db.dispose()

    asyncio.run(check())


def _upgrade_together(url: str) -> list[subprocess.CompletedProcess[str]]:
    """``sigstead db upgrade`` in PROCESSES processes started at once on one database."""
    env = {**os.environ, "SIGSTEAD_DATABASE_URL": url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "services.cli", "db", "upgrade"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


@pytest.mark.postgres
def test_concurrent_upgrades_of_an_empty_postgres_database_all_succeed(
    empty_postgres: Iterator[str],
) -> None:
    for trial in range(TRIALS):
        url = next(empty_postgres)
        for done in _upgrade_together(url):
            assert done.returncode == 0, f"trial {trial}: {done.stderr}"
        _at_head(url)


def test_concurrent_upgrades_of_a_new_sqlite_file_all_succeed(tmp_path: Path) -> None:
    # BEGIN IMMEDIATE serialises SQLite's writers; fewer trials check it stays so.
    for trial in range(3):
        url = sqlite_url(tmp_path / f"trial-{trial}.db")
        for done in _upgrade_together(url):
            assert done.returncode == 0, f"trial {trial}: {done.stderr}"
        _at_head(url)


@pytest.mark.postgres
def test_log_replicas_starting_together_on_an_empty_database_all_serve(
    empty_postgres: Iterator[str], tmp_path: Path
) -> None:
    """compose.yaml's replicas, without its one-shot ``migrate``: each migrates on start."""
    for trial in range(3):
        url = next(empty_postgres)
        data = tmp_path / f"trial-{trial}"
        replicas = [
            start_server(data, "--database-url", url, command=("serve", "log"), wait=False)
            for _ in range(2)
        ]
        try:
            for replica in replicas:
                replica.wait_healthy()
        finally:
            for replica in replicas:
                if replica.process.poll() is None:
                    assert stop_server(replica) == 0
