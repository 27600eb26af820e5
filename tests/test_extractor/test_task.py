"""Training the extractor through its task (``extractor/task.py``): fine-tuning on private writer folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from signver_torch.extractor.api import MetricExtractor

from cli_runner import signver_process
from tests.test_data.test_signatures import make_writer_folders
from tests.test_extractor.test_api import cedar_file


@pytest.mark.slow
def test_fine_tuning_on_private_writer_folders(small_data: Path, tmp_path: Path) -> None:
    writers = make_writer_folders(small_data / "cedar", tmp_path / "mine", {"a_35": 5, "b_36": 5, "c_37": 5, "d_39": 5, "e_1": 3})
    out = tmp_path / "finetuned"
    result = signver_process(
        "train", "extractor", "--data", str(writers), "--init", "default", "--max-epochs", "1",
        "--run-dir", str(tmp_path / "run"), "--out", str(out), timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["init"] == "default"
    assert card["training"]["val_writers"] == "d_39,e_1"
    assert card["metrics"]["negatives"] == "random"
    assert card["projection"]["method"].startswith("trained head (only 15 training signatures")
    assert "--init default" in card["recipe_command"]
    assert (tmp_path / "run" / "last.ckpt").exists()
    tuned = MetricExtractor().load(out)
    features = tuned.extract([cedar_file(small_data, 1, 1), cedar_file(small_data, 2, 1)])
    assert features.shape == (2, 256) and np.isfinite(features).all()
    # the one-cycle schedule was sized for 1 epoch: resuming for 3 is refused before anything runs
    longer = signver_process(
        "train", "extractor", "--data", str(writers), "--init", "default", "--max-epochs", "3",
        "--run-dir", str(tmp_path / "run"), "--out", str(out), "--resume", timeout=900,
    )
    assert longer.returncode == 1, longer.stderr[-2000:]
    error = longer.stderr.strip().splitlines()[-1]  # Lightning's own notices (seed, ...) may come first
    assert error.startswith("signver: error: --resume") and "planned for 1 epochs" in error and "max_epochs is now 3" in error
