"""Checkpoint cards: one versioned schema, old cards converted on reading, every written card current."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from signver_torch.cards import CARD_SCHEMA, ModelCard, convert
from signver_torch.checkpoints import read_card, resolve_checkpoint, shipped_checkpoints, update_card
from signver_torch.errors import CheckpointError
from signver_torch.extractor.api import MetricExtractor
from signver_torch.training import extend_recipe_chain

from conftest import SMALL_DATA


OLD_DETECTOR_CARD = SMALL_DATA / "cards" / "detector-schema1.json"  # the shipped detector card as of 2026-11-26


def test_every_shipped_card_reads_in_the_current_schema() -> None:
    for checkpoint in shipped_checkpoints():
        raw = json.loads(checkpoint.weights.with_suffix(".json").read_text())
        card = read_card(checkpoint.weights)
        assert card["schema"] == CARD_SCHEMA and card["module"] == checkpoint.module
        assert card["sha256"] == raw["sha256"] and card["architecture"] == raw["architecture"]
        moved = {"metrics_synthetic", "metrics_synthetic_commands"}
        assert set(raw) - moved <= set(card)  # nothing is lost on the way
        typed = ModelCard.from_dict(card)
        assert typed.module == checkpoint.module and isinstance(typed.metrics, dict) and typed.metrics_command


def test_a_schema_1_card_is_converted() -> None:
    old = json.loads(OLD_DETECTOR_CARD.read_text())
    assert "schema" not in old and "metrics_synthetic" in old
    card = ModelCard.from_dict(old, str(OLD_DETECTOR_CARD))
    synthetic = card.extra_metrics["synthetic"]
    assert synthetic["metrics"] == old["metrics_synthetic"]
    assert synthetic["command"].startswith("signver evaluate detector") and synthetic["data_command"].startswith("signver synthesize")
    assert card.fields["classes"] == old["classes"] and len(card.recipe_chain) == 4
    again = card.to_dict()
    assert again["schema"] == CARD_SCHEMA and "metrics_synthetic" not in again
    assert convert(again) == again  # converting a current card changes nothing


def test_cards_that_cannot_be_read_are_refused() -> None:
    with pytest.raises(CheckpointError, match="newer signver-torch"):
        ModelCard.from_dict({"module": "cleaner", "schema": CARD_SCHEMA + 1})
    with pytest.raises(CheckpointError, match="must name its module"):
        ModelCard.from_dict({"module": "stamper"})
    with pytest.raises(CheckpointError, match="'metrics' must be a JSON object"):
        ModelCard.from_dict({"module": "cleaner", "metrics": [1, 2]})
    with pytest.raises(CheckpointError, match="must be a JSON object"):
        ModelCard.from_dict(["not", "a", "card"])  # type: ignore[arg-type]


def copy_of_shipped(module: str, folder: Path) -> Path:
    weights = resolve_checkpoint(module, "default").weights
    for path in weights.parent.glob(f"{weights.stem}*"):
        shutil.copy(path, folder / path.name)
    return folder / weights.name


def test_a_fine_tuned_run_extends_the_recipe_chain(tmp_path: Path) -> None:
    weights = copy_of_shipped("detector", tmp_path)
    parent = read_card(weights)
    card = update_card(weights, recipe_command="signver train detector --init default", sha256=parent["sha256"])
    extended = extend_recipe_chain(weights, card, parent)
    assert [step["step"] for step in extended["recipe_chain"]] == [1, 2, 3, 4, 5]
    assert extended["recipe_chain"][-1]["command"] == "signver train detector --init default"
    assert extended["recipe_chain"][-1]["init_sha256"] == parent["sha256"]
    assert read_card(weights)["recipe_chain"] == extended["recipe_chain"]
    extractor_card = read_card(resolve_checkpoint("extractor", "default").weights)
    fresh = extend_recipe_chain(weights, {**card, "recipe_chain": []}, extractor_card)  # a backbone start: no step
    assert [step["step"] for step in fresh["recipe_chain"]] == [1] and fresh["recipe_chain"][0]["init_sha256"] is None


def test_evaluate_record_as_files_extra_metrics_with_both_commands(signver_cli, tmp_path: Path) -> None:
    weights = copy_of_shipped("detector", tmp_path)
    pages = tmp_path / "synthetic"
    drawn = signver_cli("synthesize", "pages", "--data", str(SMALL_DATA / "cedar"), "--pages", "2", "--size", "320",
                        "--out", str(pages), "--quiet")
    assert drawn.returncode == 0, drawn.stderr
    measured = signver_cli("evaluate", "detector", "--data", str(pages), "--class-map", "0:1,1:2,2:3,3:4",
                           "--checkpoint", str(weights), "--record-as", "synthetic", "--json", "--quiet")
    assert measured.returncode == 0, measured.stderr
    card = read_card(weights)
    entry = card["extra_metrics"]["synthetic"]
    assert entry["metrics"]["map50"] == json.loads(measured.stdout)["map50"] and entry["metrics"]["n_images"] == 2
    assert entry["command"].startswith("signver evaluate detector") and "--record-as" not in entry["command"]
    assert entry["data_command"].startswith("signver synthesize pages") and "--pages 2" in entry["data_command"]
    # several drawn folders at once: the command of each, in order
    sheets = tmp_path / "sheets"
    assert signver_cli("synthesize", "pages", "--data", str(SMALL_DATA / "cedar"), "--pages", "1", "--size", "320",
                       "--layout", "sheet", "--out", str(sheets), "--quiet").returncode == 0
    assert signver_cli("evaluate", "detector", "--data", str(pages), str(sheets), "--checkpoint", str(weights),
                       "--record-as", "families", "--json", "--quiet").returncode == 0
    first, second = read_card(weights)["extra_metrics"]["families"]["data_command"].split(" && ")
    assert f"--out {pages}" in first and f"--out {sheets}" in second and "--layout sheet" in second
    assert card["metrics"] == read_card(resolve_checkpoint("detector", "default").weights)["metrics"]  # --record-as leaves them


def test_evaluate_record_writes_the_report_into_the_card(signver_cli, small_data: Path, tmp_path: Path) -> None:
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(Path("checkpoints/extractor/default").with_suffix(suffix), tmp_path / f"model{suffix}")
    weights = tmp_path / "model.safetensors"
    command = ["evaluate", "extractor", "--data", str(small_data / "cedar"), "--writers", "35,36", "--checkpoint", str(weights),
               "--json", "--quiet"]
    result = signver_cli(*command, "--record")
    assert result.returncode == 0, result.stderr
    report, card = json.loads(result.stdout), read_card(weights)
    assert card["metrics"] == {k: v for k, v in report.items() if k not in ("checkpoint", "checkpoint_sha256")}
    assert card["metrics_command"] == "signver " + " ".join(command) and card["metrics"]["n_writers"] == 2
    assert MetricExtractor(device="cpu").load(weights).sha256 == card["sha256"]  # the weights still match the card
