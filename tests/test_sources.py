"""Several data sources at once: namespaced writers, per-source reports, intervals, the gallery protocol."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from signver_torch.data.signatures import compact_writers, discover_signatures, parse_writers, writer_split
from signver_torch.errors import DataError
from signver_torch.matcher.decisions import cosine_distances, fit_writer_model, reference_spread, rule_scores
from signver_torch.matcher.evaluation import claim_scores
from signver_torch.metrics import bootstrap_eer_interval, equal_error_rate

FIXTURE_WRITERS = "cedar:35-37,cedar:39,dutch:037,dutch:040,dutch:044"


def test_two_sources_keep_their_writers_apart(small_data: Path, tmp_path: Path) -> None:
    roots = [small_data / "cedar", small_data / "dutch"]
    records = discover_signatures(roots)
    assert {r.source for r in records} == {"cedar", "dutch"}
    assert len(records) == 52 + 27 and {r.writer for r in records} >= {"cedar:35", "dutch:037"}
    # the same id in two sources stays two writers: a copy of CEDAR writer 35 as writer folder "35"
    copy = tmp_path / "other"
    (copy / "35" / "genuine").mkdir(parents=True)
    for path in sorted((small_data / "cedar" / "full_org").glob("original_35_*.png")):
        (copy / "35" / "genuine" / path.name).write_bytes(path.read_bytes())
    both = discover_signatures([small_data / "cedar", copy])
    assert {"cedar:35", "other:35"} <= {r.writer for r in both}
    train, val = writer_split(records, "cedar:1-2,dutch:037", "cedar:35,dutch:040,dutch:044")
    assert {r.writer for r in train} == {"cedar:1", "cedar:2", "dutch:037"}
    assert {r.writer for r in val} == {"cedar:35", "dutch:040", "dutch:044"}
    with pytest.raises(DataError, match="named by source: cedar:ID, dutch:ID"):
        discover_signatures(roots, "35-37")


def test_writer_specs_round_trip_with_sources_and_zero_padding() -> None:
    assert parse_writers("dutch:001-003,cedar:7") == ["dutch:001", "dutch:002", "dutch:003", "cedar:7"]
    assert parse_writers("9-11") == ["9", "10", "11"]
    for writers in (["1", "2", "3", "7"], ["cedar:1", "cedar:2", "dutch:009", "dutch:010", "dutch:012"], ["ann", "4", "5"]):
        assert sorted(parse_writers(compact_writers(writers))) == sorted(writers)
    assert compact_writers(["cedar:1", "cedar:2", "cedar:3", "dutch:001", "dutch:002"]) == "cedar:1-3,dutch:001-002"


def test_bootstrap_interval_brackets_the_eer_and_narrows_with_more_writers() -> None:
    generator = torch.Generator().manual_seed(0)

    def writers(n: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        pos = [0.3 + 0.1 * torch.randn(20, generator=generator, dtype=torch.double) for _ in range(n)]
        neg = [0.5 + 0.1 * torch.randn(20, generator=generator, dtype=torch.double) for _ in range(n)]
        return pos, neg

    few, many = writers(5), writers(80)
    eer, _ = equal_error_rate(torch.cat(many[0]), torch.cat(many[1]))
    low, high = bootstrap_eer_interval(*many, resamples=300)
    assert low < eer < high
    few_low, few_high = bootstrap_eer_interval(*few, resamples=300)
    assert (high - low) < (few_high - few_low)


def test_decision_rules_on_real_embeddings(small_data: Path) -> None:
    from signver_torch.extractor.api import MetricExtractor
    from signver_torch.extractor.evaluation import embed_records

    records = discover_signatures([small_data / "cedar", small_data / "dutch"])
    extractor = MetricExtractor(device="cpu").load("default")
    embeddings = embed_records(extractor, records, progress=False)[0].numpy()
    writers = [r.writer for r in records]
    forged = [r.forged for r in records]
    background = embeddings[[i for i, r in enumerate(records) if r.writer in ("cedar:1", "cedar:2") and not r.forged]]
    genuine = [i for i, r in enumerate(records) if r.writer == "cedar:35" and not r.forged]
    references = embeddings[genuine[:3]]
    model = fit_writer_model(references, background)
    # the SVM knows its references, and the mean rule is the mean distance
    assert (model.decision(references) > 0).all() and (model.decision(background) < 0).all()
    np.testing.assert_allclose(rule_scores("mean", embeddings[genuine[3:]], references),
                               cosine_distances(embeddings[genuine[3:]], references).mean(1), rtol=1e-6)
    assert rule_scores("spread", embeddings[genuine[3:]], references) == pytest.approx(
        rule_scores("mean", embeddings[genuine[3:]], references) / reference_spread(references))
    held_out = [i for i, r in enumerate(records) if r.writer not in ("cedar:1", "cedar:2")]
    scores = claim_scores(embeddings[held_out], [writers[i] for i in held_out], [forged[i] for i in held_out], 3, background)
    assert set(scores) == {"mean", "spread", "svm"} and len(scores["svm"]["writers"]) == 7
    # each writer's genuine claims score lower (closer) than its forgeries, on the whole, under every rule
    for rule, found in scores.items():
        wins = sum(p.mean() < n.mean() for p, n in zip(found["positive"], found["negative"]))
        assert wins >= 5, (rule, wins)
    with pytest.raises(DataError, match="more than 5 genuine"):
        claim_scores(embeddings[held_out], [writers[i] for i in held_out], [forged[i] for i in held_out], 5, None)


def test_evaluate_two_sources_reports_per_source_intervals_and_the_gallery_protocol(small_data: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "signver_torch", "evaluate", "extractor", "--data", str(small_data / "cedar"),
         str(small_data / "dutch"), "--writers", FIXTURE_WRITERS, "--references", "3", "--background-writers", "cedar:1-2",
         "--threshold", "0.3", "--json", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
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
    overlap = subprocess.run(
        [sys.executable, "-m", "signver_torch", "evaluate", "extractor", "--data", str(small_data / "cedar"),
         "--writers", "35-37", "--references", "3", "--background-writers", "35-36", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert overlap.returncode == 1 and "must not include the evaluated writers" in overlap.stderr


def test_calibrate_sets_the_operating_point_on_a_users_writers(small_data: Path, tmp_path: Path) -> None:
    """`signver calibrate extractor --target-far F --data MY_WRITERS/`: the projection is kept, the threshold
    moves to where those writers' skilled-forgery FAR is F, and the card says FAR/FRR per source."""
    from signver_torch.checkpoints import load_checkpoint, resolve_checkpoint

    shipped = resolve_checkpoint("extractor", "default").weights
    target = tmp_path / "mine.safetensors"
    target.write_bytes(shipped.read_bytes())
    target.with_suffix(".json").write_bytes(shipped.with_suffix(".json").read_bytes())
    result = subprocess.run(
        [sys.executable, "-m", "signver_torch", "calibrate", "extractor", "--data", str(small_data / "cedar"),
         str(small_data / "dutch"), "--val-writers", FIXTURE_WRITERS, "--target-far", "0.1", "--checkpoint", str(target), "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    before, _ = load_checkpoint("extractor", shipped)
    after, card = load_checkpoint("extractor", target)
    assert all(torch.equal(before[key], after[key]) for key in before)  # only the card moved
    point = card["operating_point"]
    assert point["far"] <= 0.1 and point["threshold"] == card["threshold"] and set(point["per_source"]) == {"cedar", "dutch"}
    assert "--target-far 0.1" in card["calibration_command"] and "metrics" not in card
    assert card["threshold_calibration"] == f"cosine distance where the FAR (skilled forgeries) of writers {FIXTURE_WRITERS} is 0.1"
    evaluated = subprocess.run(
        [sys.executable, "-m", "signver_torch", "evaluate", "extractor", "--data", str(small_data / "cedar"),
         str(small_data / "dutch"), "--writers", FIXTURE_WRITERS, "--checkpoint", str(target), "--json", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    report = json.loads(evaluated.stdout)
    assert report["far"] == pytest.approx(point["far"]) and report["frr"] == pytest.approx(point["frr"])
    bad = subprocess.run([sys.executable, "-m", "signver_torch", "calibrate", "extractor", "--data", str(small_data / "cedar"),
                          "--target-far", "1.5", "--checkpoint", str(target)], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1 and "between 0 and 1" in bad.stderr
