"""Detector evaluation (``detector/evaluation.py``): the shipped checkpoint on the fixture's held-out pages,
the report's contract, the error pictures and what counts as an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from signver_torch.detector.evaluation import evaluate_detector


def test_evaluate_command_on_real_pages(signver_cli, documents: Path) -> None:
    """`signver evaluate detector --json` of the shipped checkpoint on the fixture's 12 held-out pages: the
    AP@0.5 floor is the card's (measured on all the held-out pages), the mAP bound near what it measured here."""
    result = signver_cli("evaluate", "detector", "--data", str(documents), "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n_images"] == 12 and report["n_boxes"] == 9 and report["pages"] == "all"
    assert report["map50"] >= 0.8 and report["map"] == pytest.approx(0.533, abs=0.05) and report["missed"] <= 1


def test_evaluate_contract(small_checkpoint: Path, documents: Path, tmp_path: Path) -> None:
    report = evaluate_detector(documents, small_checkpoint, held_out_every=3, progress=False, errors_dir=tmp_path / "errors")
    assert report["n_images"] == 4 and 0 <= report["map50"] <= 1 and 0 <= report["map"] <= report["map50"] + 1e-9
    assert report["seconds_per_image"] > 0
    assert report["at_threshold"]["threshold"] == 0.3 and "default" in report["at_threshold"]["threshold_from"]  # no card field
    errors = json.loads((tmp_path / "errors" / "errors.json").read_text())  # an untrained detector misses every signature
    assert report["missed"] == sum(len(page["missed"]) for page in errors.values()) == report["n_boxes"] > 0
    pictures = {path.stem for path in (tmp_path / "errors").glob("*.png")}
    assert pictures == {Path(name).stem for name in errors} and len(pictures) == 2  # the held-out pages with a signature


def test_page_errors_are_misses_and_confident_false_positives_of_labelled_classes() -> None:
    from signver_torch.detector.evaluation import page_errors

    target = {"boxes": torch.tensor([[10.0, 10, 110, 40], [10, 100, 110, 130]]), "labels": torch.tensor([1, 1])}
    found = {
        "boxes": torch.tensor([[12.0, 11, 108, 41], [10, 100, 110, 130], [300, 300, 400, 330], [200, 200, 260, 220], [0, 0, 5, 5]]),
        "scores": torch.tensor([0.9, 0.8, 0.6, 0.7, 0.1]),
        "labels": torch.tensor([1, 4, 1, 4, 1]),  # the second mark boxed as a date: missed; an unlabelled date is no error
    }
    errors = page_errors(found, target, classes={1})
    assert [m["box"] for m in errors["missed"]] == [[10.0, 100.0, 110.0, 130.0]] and errors["missed"][0]["best_iou"] == 0.0
    assert [(fp["box"], fp["score"]) for fp in errors["false_positives"]] == [([300.0, 300.0, 400.0, 330.0], 0.6)]
    assert len(page_errors(found, target)["false_positives"]) == 3  # every class labelled: the dates count too


def test_operating_counts_match_one_detection_per_mark_at_the_threshold() -> None:
    from signver_torch.detector.evaluation import operating_counts, operating_report

    target = {"boxes": torch.tensor([[10.0, 10, 110, 40], [10, 100, 110, 130]]), "labels": torch.tensor([1, 1])}
    found = {
        "boxes": torch.tensor([[12.0, 11, 108, 41], [11, 10, 109, 40], [10, 100, 110, 130], [300, 300, 400, 330]]),
        "scores": torch.tensor([0.9, 0.8, 0.2, 0.6]),  # a duplicate on the first mark; the second found below 0.3
        "labels": torch.tensor([1, 1, 1, 1]),
    }
    counts = operating_counts(found, target, {1})
    assert counts == {1: [1, 2, 3]}  # one mark matched (once), two marks, three detections at >= 0.3
    report = operating_report(counts)["signature"]
    assert report["recall"] == 0.5 and report["precision"] == pytest.approx(1 / 3)
    assert report["recall_ci"][0] < 0.5 < report["recall_ci"][1]


def test_evaluate_several_sets_reports_each_and_pools_them(signver_cli, documents: Path, small_data: Path,
                                                          tmp_path: Path) -> None:
    """Real pages (held out: 1 in 3) and a synthesized sheet folder (scored whole, four classes) in one command."""
    sheets = tmp_path / "sheets"
    made = signver_cli("synthesize", "pages", "--data", str(small_data / "cedar"), "--layout", "sheet", "--pages", "2",
                       "--seed", "0", "--size", "640", "--out", str(sheets), "--quiet")
    assert made.returncode == 0, made.stderr
    result = signver_cli("evaluate", "detector", "--data", str(documents), str(sheets), "--held-out-every", "3",
                         "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    real, synthetic = report["sets"][str(documents)], report["sets"][str(sheets)]
    assert real["n_images"] == 4 and synthetic["n_images"] == 2 and report["pooled"]["n_images"] == 6
    assert real["pages"].startswith("1 in 3") and synthetic["pages"] == "all"
    marks = real["at_threshold"]["signature"]["marks"] + synthetic["at_threshold"]["signature"]["marks"]
    assert report["pooled"]["at_threshold"]["signature"]["marks"] == marks == report["pooled"]["n_boxes"] - sum(
        synthetic["at_threshold"][name]["marks"] for name in ("initials", "redaction", "date") if name in synthetic["at_threshold"])
    assert real["at_threshold"]["threshold"] == 0.3 and 0 <= real["at_threshold"]["signature"]["recall"] <= 1
    refused = signver_cli("evaluate", "detector", "--data", str(documents), str(sheets), "--class-map", "0:1")
    assert refused.returncode != 0 and "--class-map" in refused.stderr
