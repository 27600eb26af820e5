"""Cleaner evaluation and calibration (``cleaner/evaluation.py``): the shipped checkpoint's figures on the
fixture and the full data, the tone curve fitted on training writers and written only into the card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from signver_torch.checkpoints import read_card, sha256_file
from signver_torch.cleaner.evaluation import calibrate_cleaner, evaluate_cleaner, fit_tone_curve
from signver_torch.cleaner.transforms import apply_tone_curve

from cli_runner import signver_process


def test_evaluate_contract(signver_cli, small_data: Path) -> None:
    """Deterministic (fixed seed): bound near the figures this checkpoint measured on the fixture."""
    result = signver_cli("evaluate", "cleaner", "--data", str(small_data / "cedar"), "--writers", "35-37,39",
                         "--pairs", "32", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n_pairs"] == 32 and report["writers"] == "35-37,39" and report["n_signatures"] == 40
    assert report["psnr"] == pytest.approx(27.93, abs=0.3) and report["ssim"] == pytest.approx(0.971, abs=0.005)
    assert report["ink_f1"] == pytest.approx(0.922, abs=0.01)


@pytest.mark.slow
def test_evaluate_gives_the_cards_figures_on_the_full_data(signver_cli, shared_data: Path) -> None:
    card = read_card(Path("checkpoints/cleaner/default.safetensors"))
    result = signver_cli("evaluate", "cleaner", "--data", str(shared_data / "cedar"), "--writers", "33-40", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n_pairs"] == card["metrics"]["n_pairs"] == 256
    assert report["psnr"] == pytest.approx(card["metrics"]["psnr"], abs=0.2)
    assert report["ink_f1"] == pytest.approx(card["metrics"]["ink_f1"], abs=0.005)


def test_tone_curve_recovers_a_known_grey_level_map() -> None:
    generator = torch.Generator().manual_seed(0)
    outputs = torch.rand(200_000, generator=generator)
    targets = outputs**2 + 0.02 * torch.randn(200_000, generator=generator)  # an overconfident network's bias
    curve = fit_tone_curve(outputs, targets, knots=33)
    assert torch.all(curve[1:] >= curve[:-1])
    levels = torch.linspace(0.05, 0.95, 19)
    torch.testing.assert_close(apply_tone_curve(levels, curve), levels**2, atol=0.01, rtol=0)
    # levels no output reached map to themselves
    assert fit_tone_curve(torch.zeros(10), torch.zeros(10), knots=5).tolist()[1:] == [0.25, 0.5, 0.75, 1.0]


def test_calibration_fits_on_training_writers_and_helps_unseen_ones(small_data: Path, tmp_path: Path) -> None:
    weights = tmp_path / "cleaner.safetensors"
    shutil.copy("checkpoints/cleaner/default.safetensors", weights)
    card = read_card(Path("checkpoints/cleaner/default.safetensors"))
    card.pop("tone_curve", None)
    weights.with_suffix(".json").write_text(json.dumps(card))
    cedar = small_data / "cedar"
    before = evaluate_cleaner(cedar, "39", weights, n_pairs=16, progress=False)
    calibrated = calibrate_cleaner(cedar, "1-2", weights, n_pairs=32, progress=False)
    after = evaluate_cleaner(cedar, "39", weights, n_pairs=16, progress=False)
    assert calibrated["tone_curve"]["fitted_on"]["writers"] == "1-2" and len(calibrated["tone_curve"]["values"]) == 64
    assert sha256_file(weights) == card["sha256"]  # only the card changed
    assert after["psnr"] > before["psnr"] + 1.0 and after["ink_f1"] >= before["ink_f1"] - 0.01


def test_calibrate_command_rewrites_only_the_card(signver_cli, small_data: Path, tmp_path: Path) -> None:
    weights = tmp_path / "cleaner.safetensors"
    shutil.copy("checkpoints/cleaner/default.safetensors", weights)
    shutil.copy("checkpoints/cleaner/default.json", tmp_path / "cleaner.json")
    result = signver_cli("calibrate", "cleaner", "--data", str(small_data / "cedar"), "--writers", "1",
                         "--checkpoint", str(weights), "--pairs", "8", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "tone curve written" in result.stdout
    assert read_card(weights)["tone_curve"]["command"].startswith("signver calibrate cleaner")
    missing = signver_process("calibrate", "cleaner", "--data", str(small_data / "cedar"), "--writers", "1-2",
                              "--checkpoint", str(tmp_path / "none.safetensors"))
    assert missing.returncode == 1 and "none.safetensors" in missing.stderr
    extractor_flag = signver_process("calibrate", "cleaner", "--data", str(small_data / "cedar"), "--writers", "1",
                                     "--val-writers", "35", "--checkpoint", str(weights))
    assert extractor_flag.returncode == 1 and "--val-writers is for the extractor" in extractor_flag.stderr
