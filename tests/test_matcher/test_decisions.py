"""Per-person decisions (``matcher/decisions.py``) on real fixture signatures: the rules on real embeddings,
writer models in the gallery (stored, refitted, migrated from schema 1, crash-safe), the calibrated rule in the
card and its background bank, and the verdicts that name the rule."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from signver_torch.checkpoints import background_path, read_card
from signver_torch.data.signatures import discover_signatures
from signver_torch.errors import CheckpointError, DataError, SignVerError
from signver_torch.extractor.api import MetricExtractor
from signver_torch.extractor.evaluation import calibrate_extractor
from signver_torch.matcher.decisions import (
    DecisionPolicy,
    RULES,
    WriterModel,
    cosine_distances,
    fit_writer_model,
    reference_spread,
    rule_scores,
)
from signver_torch.matcher.evaluation import claim_scores
from signver_torch.matcher.gallery import Gallery
from signver_torch.pipeline import SignVer

from tests.conftest import SMALL_DATA


V1_GALLERY = SMALL_DATA / "galleries" / "v1.sqlite"
V1_PEOPLE = [("cedar-35", 3), ("cedar-36", 3), ("dutch-037", 3)]


@pytest.fixture(scope="module")
def extractor() -> MetricExtractor:
    return MetricExtractor(device="cpu").load("default")


@pytest.fixture(scope="module")
def embedded(extractor: MetricExtractor, small_data: Path) -> dict[str, dict[str, np.ndarray]]:
    """Fixture CEDAR embeddings by writer: ``{"1": {"genuine": (N, 256), "forged": ...}, ...}``."""
    records = discover_signatures(small_data / "cedar")
    vectors = extractor.extract([r.path for r in records])
    found: dict[str, dict[str, list[np.ndarray]]] = {}
    for record, vector in zip(records, vectors):
        found.setdefault(record.writer, {"genuine": [], "forged": []})["forged" if record.forged else "genuine"].append(vector)
    return {writer: {kind: np.stack(rows) for kind, rows in kinds.items()} for writer, kinds in found.items()}


@pytest.fixture(scope="module")
def background(embedded: dict) -> np.ndarray:
    """Genuine signatures of CEDAR writers 1 and 2 (training writers, never claimed below)."""
    return np.concatenate([embedded["1"]["genuine"], embedded["2"]["genuine"]])


def test_a_stored_model_rebuilds_to_the_fitted_one(embedded: dict, background: np.ndarray) -> None:
    references = embedded["35"]["genuine"][:4]
    fitted = fit_writer_model(references, background)
    rebuilt = WriterModel.from_support(fitted.support, fitted.weights, fitted.bias, fitted.gamma, references, background)
    queries = np.concatenate([embedded["35"]["genuine"][4:], embedded["35"]["forged"], embedded["36"]["genuine"]])
    np.testing.assert_allclose(rebuilt.decision(queries), fitted.decision(queries), rtol=1e-5, atol=1e-6)
    # the person's own held-out signature scores closer (lower) than their forgeries and other people
    scores = rule_scores("svm", queries, references, fitted)
    assert scores[0] < np.median(scores[1:])
    with pytest.raises(SignVerError, match="indexes"):
        WriterModel.from_support(fitted.support, fitted.weights, fitted.bias, fitted.gamma, references[:1], background[:1])


def test_decision_policy_guards() -> None:
    with pytest.raises(SignVerError, match="unknown decision rule 'median'"):
        DecisionPolicy("median", 1.0, 5)
    with pytest.raises(SignVerError, match="background bank"):
        DecisionPolicy("svm", 0.0, 5)
    policy = DecisionPolicy("spread", 1.5, 5)
    assert not policy.applies(4) and policy.applies(5) and not policy.needs_model


def stored_models(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT person, n_references FROM writer_models"))


def test_writer_models_are_stored_refitted_and_removed(tmp_path: Path, embedded: dict, background: np.ndarray) -> None:
    path = tmp_path / "people.db"
    genuine = embedded["35"]["genuine"]
    sources = [(f"{i:064x}", f"ref{i}.png") for i in range(len(genuine))]
    with Gallery(path, "sha", background=background) as gallery:
        gallery.add("alice", genuine[:3], sources[:3])
        assert stored_models(path) == {"alice": 3}
        first = gallery.writer_model("alice")
        gallery.add("alice", genuine[3:], sources[3:])  # gaining references refits in the same transaction
        assert stored_models(path) == {"alice": len(genuine)}
        again = gallery.writer_model("alice")
        expected = fit_writer_model(gallery.references("alice"), background)
        queries = embedded["35"]["forged"]
        np.testing.assert_allclose(again.decision(queries), expected.decision(queries), rtol=1e-5, atol=1e-6)
        assert not np.allclose(first.decision(queries), again.decision(queries))
        gallery.remove("alice")
        assert stored_models(path) == {}
    with Gallery(path, "sha", background=background[:3]) as gallery:  # another bank: the stored model is stale
        gallery.add("bob", genuine[:2], sources[:2])
        with sqlite3.connect(path) as db:
            db.execute("UPDATE writer_models SET background_sha256 = 'old'")
        refitted = gallery.writer_model("bob")
        np.testing.assert_allclose(refitted.decision(genuine), fit_writer_model(genuine[:2], background[:3]).decision(genuine),
                                   rtol=1e-5, atol=1e-6)


def copy_v1(tmp_path: Path) -> Path:
    path = tmp_path / "v1.sqlite"
    shutil.copyfile(V1_GALLERY, path)
    return path


def v1_sha() -> str:
    with sqlite3.connect(V1_GALLERY) as db:
        return db.execute("SELECT value FROM meta WHERE key = 'extractor_sha256'").fetchone()[0]


def test_a_schema_1_gallery_is_migrated_with_its_people(tmp_path: Path, background: np.ndarray) -> None:
    path = copy_v1(tmp_path)
    with sqlite3.connect(V1_GALLERY) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("1",)
        before = db.execute("SELECT person, embedding, source_sha256 FROM signatures ORDER BY id").fetchall()
    with Gallery(path, v1_sha(), background=background) as gallery:
        assert gallery.schema == "2" and gallery.people() == V1_PEOPLE
        model = gallery.writer_model("cedar-35")
        expected = fit_writer_model(gallery.references("cedar-35"), background)
        np.testing.assert_allclose(model.decision(background), expected.decision(background), rtol=1e-5, atol=1e-6)
    assert stored_models(path) == dict(V1_PEOPLE)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT person, embedding, source_sha256 FROM signatures ORDER BY id").fetchall() == before
    (tmp_path / "plain").mkdir()
    path = copy_v1(tmp_path / "plain")
    with Gallery(path, v1_sha()) as gallery:  # without a bank: migrated, models fitted when first needed
        assert gallery.schema == "2" and gallery.people() == V1_PEOPLE and gallery.writer_model("cedar-35") is None


def test_the_shipped_extractor_reads_a_schema_1_gallery(tmp_path: Path, small_data: Path) -> None:
    path = copy_v1(tmp_path)
    signver = SignVer(clean=False, device="cpu")
    query = small_data / "cedar" / "full_org" / "original_35_5.png"
    verdict = signver.verify_claim(path, "cedar-35", query)
    assert verdict.n_references == 3 and verdict.match, verdict
    assert [m.person for m in signver.identify(path, query, k=1)] == ["cedar-35"]


def test_a_migration_killed_half_way_leaves_the_schema_1_gallery(tmp_path: Path, background: np.ndarray) -> None:
    path = copy_v1(tmp_path)
    bank = tmp_path / "bank.npy"
    np.save(bank, background)
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        import signver_torch.matcher.gallery as gallery

        fit = gallery.fit_writer_model
        def slow_fit(references, background):  # the migration's second person: say so, then wait to be killed
            model = fit(references, background)
            slow_fit.calls = getattr(slow_fit, "calls", 0) + 1
            if slow_fit.calls == 2:
                print("fitting", flush=True)
                time.sleep(60)
            return model
        gallery.fit_writer_model = slow_fit
        gallery.Gallery({str(path)!r}, {v1_sha()!r}, background=np.load({str(bank)!r}))
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "fitting"
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -9
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("1",)
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'writer_models'").fetchone() is None
    with Gallery(path, v1_sha(), background=background) as gallery:  # the next opening migrates it whole
        assert gallery.schema == "2" and gallery.people() == V1_PEOPLE
    assert stored_models(path) == dict(V1_PEOPLE)


@pytest.fixture(scope="module")
def calibrated(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped extractor with an svm decision calibrated on the fixture's held-out writers."""
    folder = tmp_path_factory.mktemp("calibrated")
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(Path("checkpoints/extractor/default").with_suffix(suffix), folder / f"model{suffix}")
    weights = folder / "model.safetensors"
    data = [small_data / "cedar", small_data / "dutch"]
    calibrate_extractor(data, None, "cedar:35,cedar:36,cedar:37,cedar:39,dutch:037,dutch:040,dutch:044", weights, references=3, background_writers="cedar:1-2",
                        rule="svm", device="cpu", progress=False)
    return weights


def test_calibration_writes_the_rule_and_its_background(calibrated: Path) -> None:
    card = read_card(calibrated)
    decision = card["decision"]
    assert decision["rule"] == "svm" and decision["min_references"] == 3
    assert set(decision["rules_compared"]) == set(card["decision_thresholds"]) == set(RULES) and decision["chosen_by"] == "--rule"
    assert decision["background"]["n_signatures"] == 6 and decision["background"]["file"] == background_path(calibrated).name
    assert set(decision["operating_point"]["per_source"]) == {"cedar", "dutch"}
    assert "--references 3 --background-writers cedar:1-2 --rule svm" in card["calibration_command"]
    policy = MetricExtractor(device="cpu").load(calibrated).decision
    assert policy.rule == "svm" and policy.threshold == pytest.approx(decision["threshold"]) and policy.background.shape == (6, 256)


def test_calibration_compares_every_rule(small_data: Path, tmp_path: Path) -> None:
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(Path("checkpoints/extractor/default").with_suffix(suffix), tmp_path / f"model{suffix}")
    card = calibrate_extractor([small_data / "cedar"], None, "35,36,37,39", tmp_path / "model.safetensors", references=3,
                               background_writers="1-2", device="cpu", progress=False)
    compared = card["decision"]["rules_compared"]
    assert set(compared) == set(RULES)
    assert compared[card["decision"]["rule"]]["eer"] == min(entry["eer"] for entry in compared.values())
    with pytest.raises(SignVerError, match="share writers"):
        calibrate_extractor([small_data / "cedar"], None, "35,36,37,39", tmp_path / "model.safetensors", references=3,
                            background_writers="1,35", device="cpu", progress=False)
    with pytest.raises(SignVerError, match="--references K too"):
        calibrate_extractor([small_data / "cedar"], None, "35,36,37,39", tmp_path / "model.safetensors", rule="svm",
                            device="cpu", progress=False)


def test_verdicts_name_the_rule_that_decided(signver_cli, calibrated: Path, small_data: Path, tmp_path: Path) -> None:
    signver = SignVer(extractor=calibrated, clean=False, device="cpu")
    refs = sorted((small_data / "cedar" / "full_org").glob("original_36_[123].png"))
    genuine, forged = small_data / "cedar" / "full_org" / "original_36_5.png", small_data / "cedar" / "full_forg" / "forgeries_36_1.png"
    verdict = signver.verify_references(refs, genuine)
    assert verdict.rule == "svm" and verdict.threshold == pytest.approx(read_card(calibrated)["decision"]["threshold"])
    assert verdict.match == (verdict.score <= verdict.threshold)
    assert signver.verify_references(refs[:2], genuine).rule == "distance"  # under min_references
    gallery = tmp_path / "people.db"
    signver.enroll(gallery, "writer-36", refs)
    assert stored_models(gallery) == {"writer-36": 3}
    claim = signver.verify_claim(gallery, "writer-36", forged)
    assert claim.rule == "svm" and claim.score > signver.verify_claim(gallery, "writer-36", genuine).score
    assert SignVer(extractor=calibrated, clean=False, per_person=False, device="cpu").verify_claim(
        gallery, "writer-36", genuine).rule == "distance"
    result = signver_cli("verify", "--gallery", str(gallery), "--person", "writer-36", "--query", str(genuine), str(forged),
                         "--extractor", str(calibrated), "--no-clean", "--json")
    assert result.returncode in (0, 1), result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["rule"] for line in lines] == ["svm", "svm"] and lines[0]["score"] < lines[1]["score"]


def test_a_background_bank_of_another_calibration_is_refused(calibrated: Path, tmp_path: Path) -> None:
    for source in (calibrated, calibrated.with_suffix(".json")):
        shutil.copyfile(source, tmp_path / source.name)
    copy = tmp_path / calibrated.name
    background_path(copy).write_bytes(background_path(calibrated).read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        MetricExtractor(device="cpu").load(copy).decision
    background_path(copy).unlink()
    with pytest.raises(CheckpointError, match="background bank missing"):
        MetricExtractor(device="cpu").load(copy).decision


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


def test_writers_without_forgeries_are_enrolled_once_per_declared_text() -> None:
    """The gallery protocol's claims, counted on hand-made embeddings: a writer with forgeries claims them whatever
    the texts; one without forgeries whose files declare texts is enrolled per text and claims the other writers'
    signatures of that text; a text with no more than K signatures, or no impostor writer, adds nothing to reject."""
    rng = np.random.default_rng(0)
    rows = [("a", False, "n01")] * 3 + [("a", True, "n01")] * 2  # forgeries: the texts are not used
    rows += [("b", False, "n01")] * 3 + [("b", False, "n02")] * 3  # texts, no forgeries
    rows += [("c", False, "n01")] * 2 + [("c", False, "n03")] * 3  # n01: 2 only; n03: nobody else wrote it
    writers, forged, texts = (list(column) for column in zip(*rows))
    embeddings = rng.normal(size=(len(rows), 8)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    scores = claim_scores(embeddings, writers, forged, 2, None, texts=texts)
    for found in scores.values():
        counts = {w: (len(p), len(n), kind) for w, p, n, kind in zip(found["writers"], found["positive"], found["negative"], found["impostors"])}
        assert counts["a"] == (1, 2, "skilled forgeries")
        assert counts["b"] == (1 + 1, 3 + 2 + 0, "same text, other writers")  # n01 vs a's 3 and c's 2; n02: no other writer
        assert counts["c"] == (1, 0, "same text, other writers")  # n01 has nothing past 2 references; n03 no impostor
    without_texts = claim_scores(embeddings, writers, forged, 2, None)
    assert [len(n) for n in without_texts["mean"]["negative"]] == [2, 0, 0]
    with pytest.raises(DataError, match="of one text"):
        claim_scores(embeddings, writers, forged, 3, None, texts=texts)
    with pytest.raises(DataError, match="no decision rule"):
        claim_scores(embeddings, writers, forged, 2, None, rules=["svm"])
