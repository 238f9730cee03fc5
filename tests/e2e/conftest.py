"""End-to-end fixtures: a busy deployment shared by the module's tests, and fresh ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import BUSY_ENTRIES, Stack, fill_log, start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One deployment for the whole session, already busy: a thousand entries by other signers
    before the first test's, and more as the tests run."""
    s = start_stack(tmp_path_factory.mktemp("stack"))
    try:
        assert fill_log(s, BUSY_ENTRIES) == BUSY_ENTRIES + 1  # and the log's genesis entry
        yield s
    finally:
        s.stop()


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[Stack]:
    """A deployment created for one test: its log holds only its genesis entry."""
    s = start_stack(tmp_path / "stack")
    try:
        yield s
    finally:
        s.stop()
