"""Fixtures of the run tests: ``fleet`` starts fedbus processes and cleans up after them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .fleet import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    processes = Fleet(tmp_path)
    yield processes
    processes.kill_all()
