"""Shared fixtures: the real public annotation files in ../shared/realdata (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT_REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
REALDATA = Path(os.environ.get("STAD_REALDATA", _DEFAULT_REALDATA))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """Folder of real public annotation files (see its SOURCES.md); skips the test when missing."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} not found (set STAD_REALDATA to the shared/realdata folder)")
    return REALDATA
