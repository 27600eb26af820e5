"""Shared fixtures: the committed slice of real data (``tests/data``), the full data folder, the
``signver`` command run in this process, and an untrained detector checkpoint.

Every module's tests run on ``small_data``, which travels with the repository. Tests that need the full
data (accuracy over many writers) take ``shared_data`` -- ``../shared/data`` beside the checkout, or
``$SIGNVER_DATA`` -- and are skipped, with the reason, where it is absent; they carry the ``full_data``
marker (set here), so ``-m "not full_data"`` leaves them out.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cli_runner import REPO_ROOT, signver_in_process

SMALL_DATA = REPO_ROOT / "tests" / "data"
#: The README's example: two contracts (signed by CEDAR writer 39, and forged) and the writer's references.
EXAMPLES = REPO_ROOT / "examples"
REFERENCES = sorted((EXAMPLES / "references").glob("*.png"))
DOCUMENTS = [EXAMPLES / "contract.png", EXAMPLES / "contract_forged.png"]


def pytest_configure(config: pytest.Config) -> None:
    """The suite neither reads nor fills the user's export cache: ``backend="auto"`` (the command's default) runs
    torch unless a test exports into this session's own cache (subprocesses inherit it)."""
    os.environ["SIGNVER_CACHE"] = tempfile.mkdtemp(prefix="signver-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.pop("SIGNVER_CACHE", ""), ignore_errors=True)


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``full_data`` on every test that takes ``shared_data``."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.full_data)


@pytest.fixture
def signver_cli(capsys: pytest.CaptureFixture) -> Callable[..., subprocess.CompletedProcess]:
    """Runs ``signver ARGS`` in this process (``signver_cli("info", "--json")``); see ``cli_runner``."""
    return functools.partial(signver_in_process, capsys)


@pytest.fixture(scope="module")
def documents(small_data: Path) -> Path:
    """12 real pages, all held out of the shipped detector's training (9 signatures, 3 pages without)."""
    return small_data / "documents"


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained lite detector at 256 px saved as a real checkpoint: exercises load/predict/evaluate."""
    from signver_torch.checkpoints import save_checkpoint
    from signver_torch.detector.model import build_detector

    torch.manual_seed(0)
    model = build_detector("retinanet_lite", image_size=256)
    card = {"module": "detector", "architecture": {"architecture": "retinanet_lite", "image_size": 256}}
    return save_checkpoint(tmp_path_factory.mktemp("detector") / "small", model.state_dict(), card)
