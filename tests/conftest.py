"""Shared fixtures: the committed slice of real data (``tests/data``) and the full data folder.

Every module's tests run on ``small_data``, which travels with the repository. Tests that need the full
data (accuracy over many writers) take ``shared_data`` -- ``../shared/data`` beside the checkout, or
``$SIGNVER_DATA`` -- and are skipped, with the reason, where it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SMALL_DATA = REPO_ROOT / "tests" / "data"


def full_data_root() -> Path:
    return Path(os.environ.get("SIGNVER_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def small_data() -> Path:
    """The fixture made by ``tests/data/make_fixture.py``: CEDAR, Dutch, real pages and samples."""
    if not (SMALL_DATA / "cedar" / "full_org").is_dir():
        pytest.fail(f"the committed test fixture is missing at {SMALL_DATA}: rebuild it with tests/data/make_fixture.py")
    return SMALL_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The full data folder; tests that need it are skipped without it."""
    root = full_data_root()
    if not (root / "cedar" / "full_org").is_dir():
        pytest.skip(f"needs the full data set (not found at {root}; set SIGNVER_DATA to use it)")
    return root
