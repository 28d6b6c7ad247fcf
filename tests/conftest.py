"""Shared fixtures. Tests that use ../shared/data are marked ``realdata`` and skip without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SITEWATCH_SHARED_DATA", REPO.parent / "shared" / "data"))

# Tests share a few cores with servers, Dask workers and each other: spinning OpenMP threads then
# starve each other (torch tests measured 7x slower on 2 loaded cores). Read when torch loads, so
# it is set here, before any test module imports torch; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real imagery, not ours to redistribute); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real imagery not found at {SHARED_DATA} (set SITEWATCH_SHARED_DATA)")
    return SHARED_DATA
