"""Multi-device training as an 8-card Gaudi or multi-GPU run does it, rehearsed with 2 CPU processes
(DDP over gloo, ranks launched by Lightning's subprocess launcher): every rank exits 0, rank 0 exports
once after the others wait at the barrier, one run folder, a complete card; samplers split each epoch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

from signver_torch.data.samplers import ShuffledSampler, StreamSampler
from signver_torch.doctor import check_mode, check_versions
from signver_torch.extractor.data import WriterBatchSampler

SMALL_SLICE = ["--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=1"]


def two_rank_train(module: str, cwd: Path, *options: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("LOCAL_RANK", "SIGNVER_RUN_DIR", "MASTER_PORT")}
    return subprocess.run(
        [sys.executable, "-m", "signver_torch", "train", module, "--accelerator", "cpu", "--devices", "2", "--max-epochs", "1",
         *options, *SMALL_SLICE],
        cwd=cwd, env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        capture_output=True, text=True, timeout=900,
    )


def only_run_folder(cwd: Path) -> Path:
    folders = list((cwd / "runs").iterdir())
    assert len(folders) == 1, f"every rank must share one run folder, found {folders}"
    return folders[0]


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


def union_of_ranks(make, world: int) -> list:
    shares = []
    for rank in range(world):
        sampler = make(rank, world)
        sampler.set_epoch(3)
        shares.append(list(sampler))
        assert len(shares[-1]) == len(sampler)
    return shares


def test_ranks_split_each_epoch_without_duplicates() -> None:
    labels = torch.arange(12).repeat_interleave(4)  # 6 writers, genuine and forged, 4 each
    one = union_of_ranks(lambda rank, world: WriterBatchSampler(labels, 2, 2, seed=7, rank=rank, world_size=world), 1)[0]
    two = union_of_ranks(lambda rank, world: WriterBatchSampler(labels, 2, 2, seed=7, rank=rank, world_size=world), 2)
    assert len(one) == 6 and [len(share) for share in two] == [3, 3]
    assert sorted(map(tuple, two[0] + two[1])) == sorted(map(tuple, one))  # the 1-rank epoch, shared out

    streams = union_of_ranks(lambda rank, world: StreamSampler(2**31 - 1, 64, seed=1, rank=rank, world_size=world), 2)
    [whole] = union_of_ranks(lambda rank, world: StreamSampler(2**31 - 1, 64, seed=1, rank=rank, world_size=world), 1)
    assert sorted(streams[0] + streams[1]) == sorted(whole) and not set(streams[0]) & set(streams[1])

    pages = union_of_ranks(lambda rank, world: ShuffledSampler(11, seed=2, rank=rank, world_size=world), 2)
    assert [len(share) for share in pages] == [5, 5] and len(set(pages[0] + pages[1])) == 10
    next_epoch = ShuffledSampler(11, seed=2)
    next_epoch.set_epoch(4)
    assert list(next_epoch) != union_of_ranks(lambda rank, world: ShuffledSampler(11, seed=2), 1)[0]


def test_doctor_checks_the_mode_and_the_version_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PT_HPU_LAZY_MODE", "1")
    assert check_mode("eager").status == "fail" and "export PT_HPU_LAZY_MODE=0" in check_mode("eager").detail
    assert check_mode("lazy").status == "ok"
    monkeypatch.delenv("PT_HPU_LAZY_MODE")
    assert check_mode("eager").status == "warn"
    versions = {"lightning": "2.3.3", "lightning-habana": "1.6.0"}
    with mock.patch("signver_torch.doctor.installed_version", side_effect=versions.get):
        assert check_versions().status == "fail" and "needs Lightning >= 2.4" in check_versions().detail
    versions.update({"lightning": "2.2.4", "lightning-habana": "1.5.0"})
    with mock.patch("signver_torch.doctor.installed_version", side_effect=versions.get):
        assert check_versions().status == "fail"
    versions.update({"lightning": "2.5.5", "lightning-habana": "1.6.0"})
    with mock.patch("signver_torch.doctor.installed_version", side_effect=versions.get):
        assert check_versions().status == "warn" and "Lightning 2.3.3" in check_versions().detail
