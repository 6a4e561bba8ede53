"""Shared test helpers: where the reference histories of ../shared/data live."""

from __future__ import annotations

from pathlib import Path

import pytest


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the repository, or ``None`` where it is absent
    (a clone without the shared folder): tests that need it skip."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder; skips the test when it is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is absent: no reference histories to read")
    return path
