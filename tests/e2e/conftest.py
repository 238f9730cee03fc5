"""End-to-end fixtures: a busy deployment shared by the module's tests, and fresh ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One deployment for the whole session: its log fills up as the tests run (a busy log)."""
    s = start_stack(tmp_path_factory.mktemp("stack"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[Stack]:
    """A deployment created for one test: its log starts empty."""
    s = start_stack(tmp_path / "stack")
    try:
        yield s
    finally:
        s.stop()
