"""Training the detector through its task (``detector/task.py``): a fine-tune records where it started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from signver_torch.detector.api import Detector

from cli_runner import signver_process


@pytest.mark.slow
def test_fine_tune_command_records_where_it_started(small_checkpoint: Path, documents: Path, small_data: Path, tmp_path: Path) -> None:
    """`signver train detector --init CKPT`: the finetune recipe on real pages, exported with a card
    that names the starting checkpoint (its sha256) and evaluated on the held-out pages."""
    out = tmp_path / "tuned"
    result = signver_process(
        "train", "detector", "--init", str(small_checkpoint),
        "--data", str(documents), "--train-writers", "1", "--val-writers", "2",
        "--out", str(out), "--run-dir", str(tmp_path / "run"), "--max-epochs", "1",
        "--model.image_size=256", "--data.image_size=256", f"--data.signatures_dir={small_data / 'cedar'}",
        "--data.synthetic_pages=2", "--data.val_synthetic_pages=2", "--data.real_repeat=1", "--data.num_workers=0",
        "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads(out.with_suffix(".json").read_text())
    started = json.loads(small_checkpoint.with_suffix(".json").read_text())
    assert card["training"]["init"] == str(small_checkpoint) and card["training"]["init_sha256"] == started["sha256"]
    assert card["training"]["init_backbone"] is None and card["training"]["recipe"].endswith("finetune.yaml")
    assert card["metrics"]["n_images"] == 4 and "--init" in card["recipe_command"]
    before = Detector(device="cpu").load(small_checkpoint).model.state_dict()
    after = Detector(device="cpu").load(out.with_suffix(".safetensors")).model.state_dict()
    moved = [key for key in before if before[key].is_floating_point()
             and not torch.allclose(before[key], after[key].to(before[key].dtype), atol=1e-2)]
    assert moved, "the fine-tune changed no weight beyond fp16 rounding"  # it trained
