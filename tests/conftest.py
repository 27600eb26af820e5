"""Shared fixtures: the real data folder (``../shared/data`` beside the checkout, or $SIGNVER_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = Path(os.environ.get("SIGNVER_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not (root / "cedar" / "full_org").is_dir():
        pytest.fail(f"real data not found at {root}; set SIGNVER_DATA to the shared data folder")
    return root
