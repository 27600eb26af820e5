"""The shipped extractor as users call it: SignVer call shapes, real CEDAR signatures, bad input,
the evaluation contract and fine-tuning on private writer folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from signver_torch.checkpoints import load_checkpoint, resolve_checkpoint, save_checkpoint
from signver_torch.errors import BlankSignatureError, CheckpointError, ImageLoadError, SignVerError
from signver_torch.extractor.api import MetricExtractor
from tests.test_signature_data import make_writer_folders


@pytest.fixture(scope="module")
def extractor() -> MetricExtractor:
    return MetricExtractor().load("default")


def cedar_file(small_data: Path, writer: int, n: int, forged: bool = False) -> Path:
    folder, prefix = ("full_forg", "forgeries") if forged else ("full_org", "original")
    return small_data / "cedar" / folder / f"{prefix}_{writer}_{n}.png"


def test_original_signver_call_shape(extractor: MetricExtractor, small_data: Path) -> None:
    crops = np.stack(
        [
            np.asarray(Image.open(cedar_file(small_data, 35, n)).convert("RGB").resize((224, 224)), np.float32) / 255
            for n in range(1, 5)
        ]
    )
    assert crops.shape == (4, 224, 224, 3)
    features = extractor.extract(crops)
    assert features.shape == (4, 256) and features.dtype == np.float32
    assert np.allclose(np.linalg.norm(features, axis=1), 1, atol=1e-5)
    gray = extractor.extract(crops.mean(axis=3))  # (N, H, W) works too
    assert np.allclose(gray, features, atol=0.05)


def test_any_input_kind_gives_the_same_embedding(extractor: MetricExtractor, small_data: Path) -> None:
    path = cedar_file(small_data, 36, 3)
    image = Image.open(path)
    kinds = [path, str(path), path.read_bytes(), image, np.asarray(image.convert("L"))]
    features = extractor.extract(kinds)
    assert np.allclose(features, features[0], atol=1e-5)


def test_torch_layout_batches_match_signver_layout(extractor: MetricExtractor, small_data: Path) -> None:
    crops = np.stack(
        [np.asarray(Image.open(cedar_file(small_data, 37, n)).convert("RGB").resize((200, 120)), np.float32) / 255 for n in (1, 2)]
    )
    nhwc = extractor.extract(crops)
    nchw = extractor.extract(torch.from_numpy(crops).permute(0, 3, 1, 2))
    assert np.allclose(nhwc, nchw, atol=1e-5)
    with pytest.raises(SignVerError, match="wrap a single signature"):
        extractor.extract(Image.open(cedar_file(small_data, 37, 1)))  # type: ignore[arg-type]


def test_cpu_networks_are_channels_last_with_unchanged_embeddings(extractor: MetricExtractor, small_data: Path) -> None:
    """The facade stores conv weights channels-last on CPU (faster oneDNN kernels); the embeddings of
    real scans must equal those of the same network in PyTorch's default layout."""
    assert extractor.device.type == "cpu"
    convs = [m.weight for m in extractor.loaded_model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not all(w.is_contiguous() for w in convs)  # (a 1-channel or 1x1 kernel is both)
    files = [cedar_file(small_data, 35, n) for n in (1, 2)] + [cedar_file(small_data, 35, 3, forged=True)]
    fast = extractor.extract(files)
    default_layout = MetricExtractor(device="cpu").load("default")
    default_layout.loaded_model.to(memory_format=torch.contiguous_format)
    assert np.allclose(fast, default_layout.extract(files), atol=1e-5)


def test_genuine_signatures_are_closer_than_skilled_forgeries(extractor: MetricExtractor, small_data: Path) -> None:
    """On the fixture's held-out writers, a writer's genuine pairs are nearer than genuine-forgery pairs."""
    wins = 0
    for writer in (35, 36, 37, 39):
        genuine = extractor.extract([cedar_file(small_data, writer, n) for n in range(1, 6)])
        forged = extractor.extract([cedar_file(small_data, writer, n, forged=True) for n in range(1, 6)])
        same = 1 - genuine @ genuine.T
        positive = same[np.triu_indices(5, 1)].mean()
        skilled = (1 - genuine @ forged.T).mean()
        wins += positive < skilled
    assert wins == 4, f"genuine pairs closer for only {wins} of 4 writers"


def test_bad_batches_are_clear_errors(extractor: MetricExtractor, small_data: Path) -> None:
    with pytest.raises(SignVerError, match="empty batch"):
        extractor.extract([])
    with pytest.raises(SignVerError, match="empty batch"):
        extractor.extract(np.zeros((0, 224, 224, 3), np.float32))
    with pytest.raises(SignVerError, match=r"shaped \(N, H, W\)"):
        extractor.extract(np.zeros((224, 3), np.float32))
    nan_batch = np.full((2, 64, 64, 3), np.nan, np.float32)
    with pytest.raises(ImageLoadError, match="batch item 0.*NaN"):
        extractor.extract(nan_batch)
    white = np.ones((2, 224, 224, 3), np.float32)
    white[0] = np.asarray(Image.open(cedar_file(small_data, 36, 1)).convert("RGB").resize((224, 224))) / 255
    with pytest.raises(BlankSignatureError, match=r"item\(s\) \[1\]"):
        extractor.extract(white)
    with pytest.raises(SignVerError, match="wrap a single signature"):
        extractor.extract(str(cedar_file(small_data, 36, 1)))  # type: ignore[arg-type]


def test_wrong_and_corrupt_checkpoints_are_refused(tmp_path: Path) -> None:
    detector_card = save_checkpoint(tmp_path / "det", {"w": torch.zeros(1)}, {"module": "detector"})
    with pytest.raises(CheckpointError, match="'detector' checkpoint"):
        MetricExtractor().load(detector_card)
    shipped = MetricExtractor().load("default")
    broken = tmp_path / "broken.safetensors"
    shutil.copy(shipped_path(), broken)
    shutil.copy(shipped_path().with_suffix(".json"), broken.with_suffix(".json"))
    data = bytearray(broken.read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        MetricExtractor().load(broken)
    assert shipped.threshold > 0
    with pytest.raises(CheckpointError, match="no shipped extractor checkpoint named 'nope'"):
        MetricExtractor().load("nope")


def shipped_path() -> Path:
    from signver_torch.checkpoints import resolve_checkpoint

    return resolve_checkpoint("extractor", "default").weights


def signver(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "signver_torch", *args], capture_output=True, text=True, timeout=timeout)


CONTRACT_KEYS = ("eer", "auc", "threshold_at_eer", "far", "frr", "n_writers", "n_pos", "n_neg", "eer_random")


def test_evaluate_contract_on_held_out_writers(small_data: Path) -> None:
    """Deterministic: bound near what the shipped checkpoint measured on the fixture (EER 0.050, AUC 0.989)."""
    result = signver("evaluate", "extractor", "--data", str(small_data / "cedar"), "--writers", "35-37,39", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(CONTRACT_KEYS) <= set(report)
    assert report["n_writers"] == 4 and report["n_pos"] == 4 * 5 * 4 // 2 and report["n_neg"] == 4 * 5 * 5
    assert report["negatives"] == "skilled"
    assert report["eer"] == pytest.approx(0.05, abs=0.02) and report["auc"] == pytest.approx(0.989, abs=0.01)
    assert report["eer_random"] < 0.05


def test_evaluate_gives_the_cards_figures_on_the_full_data(shared_data: Path) -> None:
    card = json.loads(resolve_checkpoint("extractor", "default").weights.with_suffix(".json").read_text())
    result = signver("evaluate", "extractor", "--data", str(shared_data / "cedar"), "--writers", "33-40", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n_writers"] == 8 and report["n_pos"] == 8 * 24 * 23 // 2 and report["n_neg"] == 8 * 24 * 24
    recorded = card["metrics"]["per_source"]["cedar"]  # the card's metrics cover two sources; CEDAR's part is this run
    for key in ("eer", "auc", "eer_random", "far", "frr"):
        assert report[key] == pytest.approx(recorded[key], abs=0.005), key


def test_evaluate_errors_are_one_line(tmp_path: Path) -> None:
    result = signver("evaluate", "extractor", "--data", str(tmp_path / "missing"), "--json")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "signature folder not found" in result.stderr


@pytest.fixture
def shipped_copy(tmp_path: Path) -> Path:
    """A copy of the shipped extractor (weights + card) that a test may rewrite."""
    shipped = resolve_checkpoint("extractor", "default").weights
    target = tmp_path / "extractor.safetensors"
    shutil.copy(shipped, target)
    shutil.copy(shipped.with_suffix(".json"), target.with_suffix(".json"))
    return target


def test_calibrate_fits_the_projection_and_keeps_the_backbone(shared_data: Path, shipped_copy: Path) -> None:
    """Only the head changes: the principal axes of the training writers' backbone features; the
    threshold moves to the held-out EER; the stale metrics leave the card; a second run is a no-op."""
    command = ("calibrate", "extractor", "--data", str(shared_data / "cedar"), "--writers", "1-6",
               "--val-writers", "33-34", "--checkpoint", str(shipped_copy), "--quiet")
    result = signver(*command)
    assert result.returncode == 0, result.stderr[-2000:]
    before, _ = load_checkpoint("extractor", "default")
    after, card = load_checkpoint("extractor", shipped_copy)
    assert card["projection"]["fitted_on"] == {"data": str(shared_data / "cedar"), "writers": "1-6", "n_images": 288}
    assert "metrics" not in card and "33-34" in card["threshold_calibration"]
    assert all(torch.equal(before[key], after[key]) for key in before if key.startswith("backbone."))
    head = after["head.1.weight"].float()
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])
    assert torch.allclose(head @ head.T, torch.eye(256), atol=2e-3)  # orthonormal axes (fp16 weights)
    extractor = MetricExtractor().load(shipped_copy)
    genuine = extractor.extract([cedar_file(shared_data, 36, n) for n in range(1, 7)])
    forged = extractor.extract([cedar_file(shared_data, 36, n, forged=True) for n in range(1, 7)])
    same = 1 - genuine @ genuine.T
    assert same[np.triu_indices(6, 1)].mean() < (1 - genuine @ forged.T).mean()
    assert signver(*command).returncode == 0
    again, second = load_checkpoint("extractor", shipped_copy)
    assert torch.allclose(again["head.1.weight"].float(), head, atol=1e-3) and second["threshold"] == pytest.approx(card["threshold"], abs=1e-3)


def test_calibrate_errors_are_one_line(small_data: Path, shipped_copy: Path) -> None:
    missing = signver("calibrate", "extractor", "--data", str(small_data / "cedar"), "--writers", "1-2")
    assert missing.returncode == 1 and "needs --val-writers" in missing.stderr and missing.stderr.strip().count("\n") == 0
    cleaner_flag = signver("calibrate", "extractor", "--data", str(small_data / "cedar"), "--writers", "1-2",
                           "--val-writers", "35", "--pairs", "8", "--checkpoint", str(shipped_copy))
    assert cleaner_flag.returncode == 1 and "--pairs is for the cleaner" in cleaner_flag.stderr
    few = signver("calibrate", "extractor", "--data", str(small_data / "cedar"), "--writers", "1-2",
                  "--val-writers", "35", "--checkpoint", str(shipped_copy), "--quiet")
    assert few.returncode == 1 and "more than 256 feature vectors" in few.stderr and few.stderr.strip().count("\n") == 0
    assert shipped_copy.read_bytes() == resolve_checkpoint("extractor", "default").weights.read_bytes()  # nothing written


def test_fine_tuning_on_private_writer_folders(small_data: Path, tmp_path: Path) -> None:
    writers = make_writer_folders(small_data / "cedar", tmp_path / "mine", {"a_35": 5, "b_36": 5, "c_37": 5, "d_39": 5, "e_1": 3})
    out = tmp_path / "finetuned"
    result = signver(
        "train", "extractor", "--data", str(writers), "--init", "default", "--max-epochs", "1",
        "--run-dir", str(tmp_path / "run"), "--out", str(out),
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
    longer = signver(
        "train", "extractor", "--data", str(writers), "--init", "default", "--max-epochs", "3",
        "--run-dir", str(tmp_path / "run"), "--out", str(out), "--resume",
    )
    assert longer.returncode == 1, longer.stderr[-2000:]
    error = longer.stderr.strip().splitlines()[-1]  # Lightning's own notices (seed, ...) may come first
    assert error.startswith("signver: error: --resume") and "planned for 1 epochs" in error and "max_epochs is now 3" in error
