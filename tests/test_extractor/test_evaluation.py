"""Extractor evaluation and calibration (``extractor/evaluation.py``): the shipped checkpoint's figures on
held-out writers of one or several sources, per-source intervals, the gallery protocol, the projection and
the operating point fitted on a user's writers, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from signver_torch.checkpoints import load_checkpoint, resolve_checkpoint
from signver_torch.extractor.api import MetricExtractor

from cli_runner import signver_process
from tests.test_extractor.test_api import cedar_file


FIXTURE_WRITERS = "cedar:35-37,cedar:39,dutch:037,dutch:040,dutch:044"


@pytest.mark.slow
def test_evaluate_two_sources_reports_per_source_intervals_and_the_gallery_protocol(signver_cli, small_data: Path) -> None:
    result = signver_cli("evaluate", "extractor", "--data", str(small_data / "cedar"), str(small_data / "dutch"),
                         "--writers", FIXTURE_WRITERS, "--references", "3", "--background-writers", "cedar:1-2",
                         "--threshold", "0.3", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n_writers"] == 7 and set(report["per_source"]) == {"cedar", "dutch"}
    assert report["per_source"]["cedar"]["n_writers"] == 4 and report["per_source"]["dutch"]["n_writers"] == 3
    assert report["threshold"] == 0.3 and report["per_source"]["dutch"]["threshold"] == 0.3
    low, high = report["eer_ci"]
    assert low <= report["eer"] <= high
    # the fixture's CEDAR writers alone give the single-source figures
    assert report["per_source"]["cedar"]["eer"] == pytest.approx(0.05, abs=0.02)
    rules = report["references"]["rules"]
    assert set(rules) == {"mean", "spread", "svm"} and report["references"]["k"] == 3
    for entry in rules.values():
        assert entry["n_writers"] == 7 and entry["n_genuine_claims"] == 4 * 2 + 3 * 2
        assert 0 <= entry["genuine_accepted"] <= 1 and set(entry["per_source"]) == {"cedar", "dutch"}
    overlap = signver_process("evaluate", "extractor", "--data", str(small_data / "cedar"), "--writers", "35-37",
                              "--references", "3", "--background-writers", "35-36", "--quiet")
    assert overlap.returncode == 1 and "must not include the evaluated writers" in overlap.stderr


def test_calibrate_sets_the_operating_point_on_a_users_writers(signver_cli, small_data: Path, tmp_path: Path) -> None:
    """`signver calibrate extractor --target-far F --data MY_WRITERS/`: the projection is kept, the threshold
    moves to where those writers' skilled-forgery FAR is F, and the card says FAR/FRR per source."""
    from signver_torch.checkpoints import load_checkpoint, resolve_checkpoint

    shipped = resolve_checkpoint("extractor", "default").weights
    target = tmp_path / "mine.safetensors"
    target.write_bytes(shipped.read_bytes())
    target.with_suffix(".json").write_bytes(shipped.with_suffix(".json").read_bytes())
    result = signver_cli("calibrate", "extractor", "--data", str(small_data / "cedar"), str(small_data / "dutch"),
                         "--val-writers", FIXTURE_WRITERS, "--target-far", "0.1", "--checkpoint", str(target),
                         "--quiet")
    assert result.returncode == 0, result.stderr
    before, _ = load_checkpoint("extractor", shipped)
    after, card = load_checkpoint("extractor", target)
    assert all(torch.equal(before[key], after[key]) for key in before)  # only the card moved
    point = card["operating_point"]
    assert point["far"] <= 0.1 and point["threshold"] == card["threshold"] and set(point["per_source"]) == {"cedar", "dutch"}
    assert "--target-far 0.1" in card["calibration_command"] and "metrics" not in card
    assert card["threshold_calibration"] == f"cosine distance where the FAR (skilled forgeries) of writers {FIXTURE_WRITERS} is 0.1"
    evaluated = signver_cli("evaluate", "extractor", "--data", str(small_data / "cedar"), str(small_data / "dutch"),
                            "--writers", FIXTURE_WRITERS, "--checkpoint", str(target), "--json", "--quiet")
    report = json.loads(evaluated.stdout)
    assert report["far"] == pytest.approx(point["far"]) and report["frr"] == pytest.approx(point["frr"])
    bad = signver_process("calibrate", "extractor", "--data", str(small_data / "cedar"), "--target-far", "1.5",
                          "--checkpoint", str(target))
    assert bad.returncode == 1 and "between 0 and 1" in bad.stderr


CONTRACT_KEYS = ("eer", "auc", "threshold_at_eer", "far", "frr", "n_writers", "n_pos", "n_neg", "eer_random")


def test_evaluate_contract_on_held_out_writers(signver_cli, small_data: Path) -> None:
    """Deterministic: bound near what the shipped checkpoint measured on the fixture."""
    result = signver_cli("evaluate", "extractor", "--data", str(small_data / "cedar"), "--writers", "35-37,39", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(CONTRACT_KEYS) <= set(report)
    assert report["n_writers"] == 4 and report["n_pos"] == 4 * 5 * 4 // 2 and report["n_neg"] == 4 * 5 * 5
    assert report["negatives"] == "skilled"
    assert report["eer"] == pytest.approx(0.05, abs=0.02) and report["auc"] == pytest.approx(0.989, abs=0.01)
    assert report["eer_random"] < 0.05


def test_evaluate_through_the_cleaner_measures_the_pipelines_path(signver_cli, small_data: Path) -> None:
    """``--cleaner``: every scan cleaned first, as ``SignVer`` does; on clean CEDAR scans the cleaner keeps the
    verdicts near the scans' own (the report names the cleaner). The option is the extractor's."""
    from signver_torch import Cleaner

    command = ["evaluate", "extractor", "--data", str(small_data / "cedar"), "--writers", "35-37,39", "--json", "--quiet"]
    scans, cleaned = (json.loads(signver_cli(*command, *extra).stdout) for extra in ([], ["--cleaner", "default"]))
    assert scans["cleaner_sha256"] is None and cleaned["cleaner_sha256"] == Cleaner(device="cpu").load("default").sha256
    assert cleaned["n_pos"] == scans["n_pos"] and cleaned["auc"] != scans["auc"]
    assert cleaned["eer"] == pytest.approx(scans["eer"], abs=0.05)
    refused = signver_process("evaluate", "detector", "--data", str(small_data / "documents"), "--cleaner", "default")
    assert refused.returncode == 1 and refused.stderr.strip() == "signver: error: --cleaner is for the extractor"


@pytest.mark.slow
def test_evaluate_gives_the_cards_figures_on_the_full_data(signver_cli, shared_data: Path) -> None:
    card = json.loads(resolve_checkpoint("extractor", "default").weights.with_suffix(".json").read_text())
    result = signver_cli("evaluate", "extractor", "--data", str(shared_data / "cedar"), "--writers", "33-40", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n_writers"] == 8 and report["n_pos"] == 8 * 24 * 23 // 2 and report["n_neg"] == 8 * 24 * 24
    recorded = card["metrics"]["per_source"]["cedar"]  # the card's metrics cover two sources; CEDAR's part is this run
    for key in ("eer", "auc", "eer_random", "far", "frr"):
        assert report[key] == pytest.approx(recorded[key], abs=0.005), key


def test_evaluate_errors_are_one_line(tmp_path: Path) -> None:
    result = signver_process("evaluate", "extractor", "--data", str(tmp_path / "missing"), "--json")
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


@pytest.mark.slow
def test_calibrate_fits_the_projection_and_keeps_the_backbone(signver_cli, shared_data: Path, shipped_copy: Path) -> None:
    """Only the head changes: the principal axes of the training writers' backbone features; the
    threshold moves to the held-out EER; the stale metrics leave the card; a second run is a no-op."""
    command = ("calibrate", "extractor", "--data", str(shared_data / "cedar"), "--writers", "1-6",
               "--val-writers", "33-34", "--checkpoint", str(shipped_copy), "--quiet")
    result = signver_cli(*command)
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
    assert signver_cli(*command).returncode == 0
    again, second = load_checkpoint("extractor", shipped_copy)
    assert torch.allclose(again["head.1.weight"].float(), head, atol=1e-3) and second["threshold"] == pytest.approx(card["threshold"], abs=1e-3)


@pytest.mark.slow
def test_calibrate_errors_are_one_line(small_data: Path, shipped_copy: Path) -> None:
    missing = signver_process("calibrate", "extractor", "--data", str(small_data / "cedar"), "--writers", "1-2")
    assert missing.returncode == 1 and "needs --val-writers" in missing.stderr and missing.stderr.strip().count("\n") == 0
    cleaner_flag = signver_process("calibrate", "extractor", "--data", str(small_data / "cedar"), "--writers", "1-2",
                                   "--val-writers", "35", "--pairs", "8", "--checkpoint", str(shipped_copy))
    assert cleaner_flag.returncode == 1 and "--pairs is for the cleaner" in cleaner_flag.stderr
    few = signver_process("calibrate", "extractor", "--data", str(small_data / "cedar"), "--writers", "1-2",
                          "--val-writers", "35", "--checkpoint", str(shipped_copy), "--quiet")
    assert few.returncode == 1 and "more than 256 feature vectors" in few.stderr and few.stderr.strip().count("\n") == 0
    assert shipped_copy.read_bytes() == resolve_checkpoint("extractor", "default").weights.read_bytes()  # nothing written
