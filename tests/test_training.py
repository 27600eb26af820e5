"""Training (``training.py``) on several devices as an 8-card Gaudi or multi-GPU run does it, rehearsed with 2 CPU
processes (DDP over gloo, ranks launched by Lightning's subprocess launcher): every rank exits 0, rank 0 exports
once after the others wait at the barrier, one run folder, a complete card."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from unittest import mock

import pytest

from cli_runner import REPO_ROOT, signver_process

SMALL_SLICE = ["--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=1"]


def two_rank_train(module: str, cwd: Path, *options: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("LOCAL_RANK", "SIGNVER_RUN_DIR", "MASTER_PORT")}
    return signver_process("train", module, "--accelerator", "cpu", "--devices", "2", "--max-epochs", "1", *options, *SMALL_SLICE,
                           cwd=cwd, env={**env, "PYTHONPATH": str(REPO_ROOT)}, timeout=900)


def only_run_folder(cwd: Path) -> Path:
    folders = list((cwd / "runs").iterdir())
    assert len(folders) == 1, f"every rank must share one run folder, found {folders}"
    return folders[0]


@pytest.mark.slow
@pytest.mark.parametrize("module, options, card_keys", [
    ("extractor", ["--train-writers", "1,2,35,36", "--val-writers", "37,39"], ("eer", "eer_ci", "negatives")),
    ("cleaner", ["--train-writers", "1,2,35,36", "--val-writers", "37,39", "--data.samples_per_epoch=16",
                 "--data.batch_size=4", "--data.val_pairs=8"], ("psnr", "ssim", "ink_f1")),
])
def test_two_cpu_ranks_train_and_export_once(module: str, options: list[str], card_keys: tuple[str, ...],
                                             small_data: Path, tmp_path: Path) -> None:
    result = two_rank_train(module, tmp_path, "--data", str(small_data / "cedar"), *options)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Forcefully terminating" not in result.stderr
    run = only_run_folder(tmp_path)
    card = json.loads((run / f"{module}.json").read_text())
    assert all(key in card["metrics"] for key in card_keys) and "metrics_command" in card
    assert card["hardware"].startswith("2 x CPU")
    assert result.stdout.count("wrote ") == 1, result.stdout  # rank 1 exports and prints nothing
    assert (run / "last.ckpt").exists() and (run / f"{module}.safetensors").exists()


@pytest.mark.slow
def test_two_cpu_ranks_train_the_detector_on_padded_batches(small_data: Path, tmp_path: Path) -> None:
    result = two_rank_train(
        "detector", tmp_path, "--data", str(small_data / "documents"), "--train-writers", "1,2", "--val-writers", "35",
        "--model.architecture=retinanet_lite", "--model.image_size=256", "--data.image_size=256",
        f"--data.signatures_dir={small_data / 'cedar'}", "--data.synthetic_pages=4", "--data.val_synthetic_pages=2",
        "--data.real_repeat=1", "--data.batch_size=2", "--data.max_boxes=24", "--data.num_workers=0",
        "--model.init_backbone=null",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads((only_run_folder(tmp_path) / "detector.json").read_text())
    assert "map50" in card["metrics"] and card["training"]["synthetic_validation"]
    assert result.stdout.count("wrote ") == 1


def test_non_zero_rank_returns_without_exporting(tmp_path: Path) -> None:
    """A rank other than 0 waits at the barrier, then hands back no card: nothing to print, exit 0."""
    from signver_torch import training

    trainer = mock.Mock(is_global_zero=False)
    cli = mock.Mock(trainer=trainer)
    with mock.patch.object(training, "run_recipe", return_value=(cli, 1.0)) as run, \
            mock.patch("signver_torch.extractor.task.export_extractor") as export:
        weights, card = training.train("extractor", Path("recipe.yaml"), [], tmp_path, tmp_path / "extractor")
    assert run.called and card is None and weights == tmp_path / "extractor.safetensors"
    trainer.strategy.barrier.assert_called_once()
    export.assert_not_called()
    from signver_torch.tasks import training_tasks

    assert list(training_tasks()) == ["cleaner", "detector", "extractor"]  # discovery survives a task imported first
