"""Writer-grouped cross-validation (``extractor/crossval.py``) on the real fixture: folds, fold embeddings, the
out-of-fold report, fold cards, and thresholds calibrated out of fold (an all-writer model waits for them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from signver_torch.checkpoints import resolve_checkpoint
from signver_torch.data.signatures import compact_writers, discover_signatures, parse_writers
from signver_torch.errors import CheckpointError, DataError, SignVerError
from signver_torch.extractor.api import MetricExtractor
from signver_torch.extractor.crossval import (
    embed_folds,
    fold_cards_summary,
    fold_specs,
    load_fold_embeddings,
    out_of_fold_report,
    record_summary,
    save_fold_embeddings,
    writer_folds,
)
from signver_torch.matcher.api import Matcher
from signver_torch.metrics import writer_protocol_metrics

from cli_runner import signver_process


def test_folds_keep_writers_whole_deal_every_source_and_end_with_the_fixed_writers(small_data: Path) -> None:
    records = discover_signatures([small_data / "cedar", small_data / "dutch"])
    folds = writer_folds(records, 3, "cedar:39,dutch:044")
    assert folds[-1] == ["cedar:39", "dutch:044"]
    everyone = [w for fold in folds for w in fold]
    assert sorted(everyone) == sorted({r.writer for r in records}) and len(everyone) == len(set(everyone))
    for fold in folds[:-1]:
        assert {w.split(":")[0] for w in fold} == {"cedar", "dutch"}
    for i, spec in enumerate(fold_specs(folds)):
        assert parse_writers(spec["val_writers"]) == folds[i]
        assert set(parse_writers(spec["train_writers"])) == set(everyone) - set(folds[i])
    with pytest.raises(DataError, match="at least 2 writers"):
        writer_folds(records, 9)


def test_out_of_fold_report_pools_each_writer_from_its_own_fold(small_data: Path, tmp_path: Path) -> None:
    roots = [small_data / "cedar", small_data / "dutch"]
    records = discover_signatures(roots)
    folds = writer_folds(records, 2, "cedar:35-37,dutch:040")
    shipped = resolve_checkpoint("extractor", "default").weights
    embeddings, embedded = embed_folds(roots, folds, [shipped, shipped], progress=False)
    assert embeddings.shape == (2, len(records), 256)
    torch.testing.assert_close(embeddings[0], embeddings[1])  # one model twice: the same embedding
    path = tmp_path / "folds.safetensors"
    save_fold_embeddings(path, embeddings, embedded, folds, [shipped, shipped])
    found = load_fold_embeddings(path)
    assert found["folds"] == folds and found["writers"] == [r.writer for r in embedded]
    report = out_of_fold_report(found["embeddings"], found["writers"], found["forged"], found["folds"], references=2, resamples=50)
    # the same model in every fold: the pooled skilled EER is the whole set's (pairs never cross writers)
    whole = writer_protocol_metrics(found["embeddings"][0], found["writers"], found["forged"])
    assert report["pairs"]["eer"] == pytest.approx(whole["eer"], abs=1e-6)
    assert report["pairs"]["n_writers"] == len(folds[0]) + len(folds[1])
    assert set(report["pairs"]["per_source"]) == {"cedar", "dutch"}
    low, high = report["pairs"]["eer_ci"]
    assert low <= report["pairs"]["eer"] <= high
    assert [f["n_writers"] for f in report["per_fold"]] == [len(f) for f in folds]
    assert set(report["references"]["rules"]) == {"mean", "spread", "svm"}

    # one file per fold, as each fold's run writes it, joins into the same cross-validation
    for number in (1, 0):
        one, _ = embed_folds(roots, folds, [shipped], progress=False, fold_numbers=[number])
        save_fold_embeddings(tmp_path / f"fold{number + 1}.safetensors", one, embedded, folds, [shipped], [number])
    joined = load_fold_embeddings([tmp_path / "fold2.safetensors", tmp_path / "fold1.safetensors"])
    torch.testing.assert_close(joined["embeddings"], found["embeddings"])
    assert joined["writers"] == found["writers"] and len(joined["checkpoints"]) == 2
    with pytest.raises(SignVerError, match=r"folds \[2\] missing"):
        load_fold_embeddings([tmp_path / "fold1.safetensors"])
    with pytest.raises(SignVerError, match="fold 1 is given twice"):
        load_fold_embeddings([tmp_path / "fold1.safetensors", path])
    other = tmp_path / "other.safetensors"
    save_fold_embeddings(other, embeddings, embedded, [folds[1], folds[0]], [shipped, shipped])
    with pytest.raises(SignVerError, match="another cross-validation"):
        load_fold_embeddings([path, other])
    with pytest.raises(SignVerError, match="one checkpoint per fold"):
        embed_folds(roots, folds, [shipped], progress=False)


def test_fold_cards_summary_weights_each_fold_by_its_writers(tmp_path: Path) -> None:
    shipped = resolve_checkpoint("extractor", "default").card()
    for config, eers in (("a", (0.10, 0.40)), ("b", (0.20, 0.20))):
        for fold, (eer, writers) in enumerate(zip(eers, (30, 10)), start=1):
            card = json.loads(json.dumps(shipped))
            card["metrics"].update(eer=eer, n_writers=writers)
            folder = tmp_path / config / f"fold{fold}"
            folder.mkdir(parents=True)
            (folder / "model.json").write_text(json.dumps(card))
    summary = fold_cards_summary(tmp_path)
    assert summary["a"]["mean_eer"] == pytest.approx((0.10 * 30 + 0.40 * 10) / 40)
    assert summary["b"]["mean_eer"] == pytest.approx(0.20)
    assert [f["fold"] for f in summary["a"]["folds"]] == ["fold1", "fold2"]
    assert set(summary["a"]["mean_eer_per_source"]) == set(shipped["metrics"]["per_source"])
    with pytest.raises(SignVerError, match="no <config>/fold<N>/model.json"):
        fold_cards_summary(tmp_path / "a" / "fold1")
    failed = {key: value for key, value in shipped.items() if key != "metrics"}  # a fold whose export failed
    (tmp_path / "b" / "fold2" / "model.json").write_text(json.dumps(failed))
    with pytest.raises(SignVerError, match=r"b/fold2/model.json: no held-out metrics"):
        fold_cards_summary(tmp_path)


def test_cards_record_only_into_the_last_fold_model(tmp_path: Path) -> None:
    shipped = resolve_checkpoint("extractor", "default")
    card = shipped.card()
    for fold, sha in ((1, "0" * 64), (2, card["sha256"])):
        folder = tmp_path / "run" / "r18" / f"fold{fold}"
        folder.mkdir(parents=True)
        (folder / "model.json").write_text(json.dumps({**card, "sha256": sha}))
    copy = tmp_path / "model.safetensors"
    copy.write_bytes(shipped.weights.read_bytes())
    copy.with_suffix(".json").write_text(json.dumps(card))
    summary = fold_cards_summary(tmp_path / "run")
    record_summary(summary, "r18", copy, "writer_crossval", "signver crossval cards run")
    recorded = resolve_checkpoint("extractor", copy).card()["extra_metrics"]["writer_crossval"]
    assert recorded["metrics"]["mean_eer"] == pytest.approx(summary["r18"]["mean_eer"])
    summary["r18"]["folds"][-1]["trained_sha256"] = "f" * 64
    with pytest.raises(SignVerError, match="not the last-fold model"):
        record_summary(summary, "r18", copy, "writer_crossval", "cmd")


@pytest.mark.slow
def test_calibrate_out_of_fold_takes_the_pooled_thresholds(signver_cli, small_data: Path, tmp_path: Path) -> None:
    """A model trained on every writer has no held-out writers: `signver calibrate extractor
    --out-of-fold` sets its pair threshold and per-person rule from a cross-validation's embeddings,
    the same figures `crossval report` computes from them."""
    roots = [small_data / "cedar", small_data / "dutch"]
    folds = writer_folds(discover_signatures(roots), 2, "cedar:35-37,dutch:040")
    shipped = resolve_checkpoint("extractor", "default").weights
    embeddings, embedded = embed_folds(roots, folds, [shipped, shipped], progress=False)
    oof = tmp_path / "folds.safetensors"
    save_fold_embeddings(oof, embeddings, embedded, folds, [shipped, shipped])
    found = load_fold_embeddings(oof)  # as stored (fp16), which is what calibrate reads
    report = out_of_fold_report(found["embeddings"], found["writers"], found["forged"], folds, references=2, resamples=10)
    model = tmp_path / "all-writers.safetensors"
    shutil.copy(shipped, model)
    shutil.copy(shipped.with_suffix(".json"), model.with_suffix(".json"))
    everyone = compact_writers([w for fold in folds for w in fold])
    command = ["calibrate", "extractor", "--data", *map(str, roots), "--quiet",
               "--references", "2", "--background-writers", everyone, "--checkpoint", str(model)]
    done = signver_cli(*command, "--out-of-fold", str(oof))
    assert done.returncode == 0, done.stderr
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["threshold"] == pytest.approx(report["pairs"]["threshold_at_eer"], abs=1e-6)
    assert card["operating_point"]["far"] == pytest.approx(report["pairs"]["far"], abs=1e-6)
    assert set(card["operating_point"]["per_source"]) == {"cedar", "dutch"}
    rules = report["references"]["rules"]
    best = min(rules, key=lambda name: rules[name]["eer"])
    assert card["decision"]["rule"] == best and card["decision"]["threshold"] == pytest.approx(rules[best]["threshold_at_eer"], abs=1e-6)
    assert card["decision_thresholds"] == pytest.approx({name: entry["threshold_at_eer"] for name, entry in rules.items()}, abs=1e-6)
    assert card["out_of_fold"]["n_writers"] == report["pairs"]["n_writers"] and "--out-of-fold" in card["calibration_command"]

    done = signver_cli(*command, "--out-of-fold", str(oof), "--target-far", "0.1", "--rule", "svm")
    assert done.returncode == 0, done.stderr
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["operating_point"]["far"] == pytest.approx(0.1, abs=0.01) and "FAR is 0.1" in card["threshold_calibration"]
    # the bank the shipped svm fits against is this model's own embeddings of every writer's genuine signatures
    assert card["decision"]["rule"] == "svm" and card["decision"]["background"]["n_signatures"] == sum(not r.forged for r in embedded)
    assert card["decision"]["threshold_from"] == "FAR 0.1 on the out-of-fold writers' forgeries"
    assert card["threshold"] < report["pairs"]["threshold_at_eer"]  # the EER's FAR is higher here

    for extra, message in ((["--out-of-fold", str(oof), "--val-writers", "cedar:35"], "not with --val-writers"),
                           (["--out-of-fold", str(model)], "not a cross-validation embeddings file")):
        done = signver_process(*command, *extra)
        assert done.returncode != 0 and message in done.stderr and done.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_a_model_trained_on_every_writer_waits_for_its_out_of_fold_thresholds(signver_cli, small_data: Path, tmp_path: Path) -> None:
    """`--val-writers none` trains on every writer; its card has no threshold (a clear error, not a
    guess from writers it trained on) until `calibrate --out-of-fold` sets one."""
    roots = [small_data / "cedar", small_data / "dutch"]
    records = discover_signatures(roots)
    everyone = compact_writers(sorted({r.writer for r in records}))
    out = tmp_path / "all-writers"
    trained = signver_process("train", "extractor", "--data", *map(str, roots), "--init", "default", "--train-writers",
                              everyone, "--val-writers", "none", "--max-epochs", "1", "--run-dir",
                              str(tmp_path / "run"), "--out", str(out), timeout=900)
    assert trained.returncode == 0, trained.stderr[-2000:]
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["threshold"] is None and card["training"]["val_writers"] == "none" and "metrics" not in card
    assert card["training"]["n_train_images"] == len(records) and "--out-of-fold" in card["threshold_calibration"]
    model = MetricExtractor().load(out)
    assert model.extract([records[0].path]).shape == (1, 256)  # it embeds; it cannot decide yet
    with pytest.raises(CheckpointError, match="no distance threshold yet.*--out-of-fold"):
        model.threshold
    with pytest.raises(CheckpointError, match="no distance threshold yet"):
        Matcher(checkpoint=out.with_suffix(".safetensors")).threshold

    refused = signver_process("calibrate", "extractor", "--data", *map(str, roots), "--quiet", "--checkpoint",
                              str(out.with_suffix(".safetensors")))
    assert refused.returncode != 0 and "none held out: its thresholds need --out-of-fold" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0

    folds = writer_folds(records, 2, "cedar:35-37,dutch:040")
    shipped = resolve_checkpoint("extractor", "default").weights  # stands in for the recipe's fold models
    embeddings, embedded = embed_folds(roots, folds, [shipped, shipped], progress=False)
    oof = tmp_path / "folds.safetensors"
    save_fold_embeddings(oof, embeddings, embedded, folds, [shipped, shipped])
    found = load_fold_embeddings(oof)
    report = out_of_fold_report(found["embeddings"], found["writers"], found["forged"], folds, resamples=10)
    done = signver_cli("calibrate", "extractor", "--data", *map(str, roots), "--quiet", "--out-of-fold", str(oof),
                       "--checkpoint", str(out.with_suffix(".safetensors")))
    assert done.returncode == 0, done.stderr
    assert MetricExtractor().load(out).threshold == pytest.approx(report["pairs"]["threshold_at_eer"], abs=1e-6)
