"""The detector's score threshold chosen on validation pages (``detector/calibration.py``, ``signver calibrate
detector``): a copy of the shipped checkpoint calibrated on the fixture's 12 held-out real pages, then evaluated and
run at the threshold its card holds; the rules on known scores; cards without or with a bad threshold; bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from signver_torch.checkpoints import resolve_checkpoint, update_card
from signver_torch.detector.api import DEFAULT_SCORE_THRESHOLD, Detector
from signver_torch.detector.calibration import choose_threshold
from signver_torch.detector.evaluation import evaluate_detector
from signver_torch.errors import CheckpointError, SignVerError
from signver_torch.pipeline import SignVer


def checkpoint_copy(source: Path, folder: Path) -> Path:
    """A checkpoint's weights and card copied into ``folder``: a card to rewrite, the original left alone."""
    for path in (source, source.with_suffix(".json")):
        shutil.copyfile(path, folder / path.name)
    return folder / source.name


def test_calibrated_threshold_is_what_evaluate_measures_and_what_the_pipeline_keeps(signver_cli, documents: Path,
                                                                                     tmp_path: Path) -> None:
    weights = checkpoint_copy(resolve_checkpoint("detector", "default").weights, tmp_path)
    result = signver_cli("calibrate", "detector", "--checkpoint", str(weights), "--data", str(documents),
                         "--held-out-every", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    card = json.loads(weights.with_suffix(".json").read_text())
    threshold, chosen = card["score_threshold"], card["score_threshold_calibration"]
    assert chosen["rule"] == "the best F1 of the signature class" and chosen["n_pages"] == 12
    assert chosen["pages"] == {str(documents): "12 pages: all"} and chosen["checkpoint_sha256"] == card["sha256"]
    assert chosen["command"].startswith(f"signver calibrate detector --data {documents} --held-out-every 1")
    assert f"score threshold {threshold:.4f}" in result.stdout and "precision" in result.stdout
    signature = chosen["signature"]
    assert signature["marks"] == 9 and signature["f1"] >= 0.8 and 0.05 < threshold < 1

    at = evaluate_detector(documents, weights, progress=False)["at_threshold"]  # re-evaluated at the card's threshold
    assert at["threshold"] == threshold and "calibrate detector" in at["threshold_from"]
    assert at["signature"] == {key: value for key, value in signature.items() if key != "f1"}

    detector = Detector(device="cpu").load(weights)
    assert detector.score_threshold == threshold
    pages = sorted((documents / "images").iterdir())[:6]
    kept, every = detector.predict(pages), detector.predict(pages, score_threshold=0.0)  # an explicit threshold wins
    for found, everything in zip(kept, every):
        assert torch.equal(found["scores"], everything["scores"][everything["scores"] >= threshold])
    assert sum(int((found["scores"] < threshold).sum()) for found in every) > 0  # the threshold dropped something
    _, scores, _, count = detector.detect(pages[0])
    assert count == len(kept[0]["scores"]) and (scores >= threshold).all()
    reading = SignVer(detector=weights, clean=False, device="cpu").read_page(pages[0])
    assert torch.allclose(reading.detections["scores"], kept[0]["scores"], atol=1e-5)  # one page alone, not in a batch of 6


def test_the_rules_choose_between_scores_never_between_ties() -> None:
    scores = torch.tensor([0.2, 0.4, 0.4, 0.6, 0.7, 0.8, 0.9])  # any order
    matched = torch.tensor([False, True, False, True, False, True, True])
    # kept by score: 1, 2, 3 (one false), 4 (three of five), 6 (four of five: the tie at 0.4 is kept whole), 7
    assert choose_threshold(scores, matched, 5) == (pytest.approx(0.3), "the best F1 of the signature class")  # F1 8/11
    assert choose_threshold(scores, matched, 5, target_precision=0.75)[0] == pytest.approx(0.5)  # the most recall at it
    assert choose_threshold(scores, matched, 5, target_recall=0.6)[0] == pytest.approx(0.5)  # the most precision at it
    threshold, rule = choose_threshold(scores, matched, 5, target_recall=0.8)
    assert threshold == pytest.approx(0.3) and rule == "the highest score threshold whose signature recall is at least 0.8"
    with pytest.raises(SignVerError, match=r"recall 1 on these pages \(at most 0.800\)"):
        choose_threshold(scores, matched, 5, target_recall=1.0)
    with pytest.raises(SignVerError, match=r"precision 0.9 on these pages \(at most 0.500\)"):
        choose_threshold(torch.tensor([0.9, 0.5]), torch.tensor([False, True]), 1, target_precision=0.9)
    with pytest.raises(SignVerError, match="no labelled signatures"):
        choose_threshold(scores, matched, 0)
    with pytest.raises(SignVerError, match="no signature detections"):
        choose_threshold(torch.zeros(0), torch.zeros(0, dtype=torch.bool), 3)


def test_a_card_without_a_threshold_keeps_0_3_and_a_bad_one_is_refused(small_checkpoint: Path, tmp_path: Path) -> None:
    assert Detector(device="cpu").load(small_checkpoint).score_threshold == DEFAULT_SCORE_THRESHOLD == 0.3
    weights = checkpoint_copy(small_checkpoint, tmp_path)
    update_card(weights, score_threshold=0.45)
    assert Detector(device="cpu").load(weights).score_threshold == 0.45
    for bad in (1.5, "high", None, True):
        update_card(weights, score_threshold=bad)
        with pytest.raises(CheckpointError, match=f"{weights}: the card's score_threshold .* is not a score between 0 and 1"):
            Detector(device="cpu").load(weights)


@pytest.mark.parametrize("arguments, message", [
    (["--target-precision", "0.9", "--target-recall", "0.9"], "--target-precision and --target-recall are two rules"),
    (["--target-recall", "1.5"], "--target-recall must be above 0 and at most 1, not 1.5"),
    (["--held-out-every", "0"], "--held-out-every must be at least 1"),
    (["--writers", "1-2"], "--writers is for the"),
    (["--data", "/nonexistent/pages"], "/nonexistent/pages"),
])
def test_bad_calibrations_are_one_line_errors(signver_cli, small_checkpoint: Path, documents: Path, tmp_path: Path,
                                              arguments: list[str], message: str) -> None:
    weights = checkpoint_copy(small_checkpoint, tmp_path)
    before = weights.with_suffix(".json").read_text()
    data = [] if "--data" in arguments else ["--data", str(documents)]
    result = signver_cli("calibrate", "detector", "--checkpoint", str(weights), *data, *arguments, "--quiet")
    assert result.returncode != 0 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert weights.with_suffix(".json").read_text() == before
