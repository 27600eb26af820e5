"""The main job end to end on the shipped example: page in, verdict and report picture out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from signver_torch.pipeline import SignVer

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
REFERENCES = sorted((EXAMPLES / "references").glob("*.png"))


@pytest.fixture(scope="module")
def signver() -> SignVer:
    return SignVer(device="cpu")


def test_example_page_is_signed_by_its_writer_and_the_forgery_is_not(signver: SignVer) -> None:
    genuine = signver.verify_document(EXAMPLES / "contract.png", references=REFERENCES)
    forged = signver.verify_document(EXAMPLES / "contract_forged.png", references=REFERENCES)
    assert len(genuine.signatures) == 1 and len(forged.signatures) == 1  # each page has one signature (and a dated line)
    best_genuine = min(s.verdict.distance for s in genuine.signatures)
    best_forged = min(s.verdict.distance for s in forged.signatures)
    assert best_genuine < best_forged
    assert genuine.verdict == "signed by the claimed person" and genuine.as_dict()["match"] is True
    assert forged.verdict == "not signed by the claimed person" and forged.as_dict()["match"] is False
    assert best_genuine <= genuine.signatures[0].verdict.threshold < best_forged
    [first] = genuine.signatures[:1]
    assert first.cleaned.shape == first.crop.shape and first.verdict.threshold == signver.extractor.threshold
    assert first.as_dict()["detector_score"] == round(first.detector_score, 4)  # the detector's score and the rule's, apart
    assert first.as_dict()["score"] == round(first.verdict.score, 4) and first.match is first.verdict.match


def _signver(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "signver_torch", *args], capture_output=True, text=True, timeout=600, cwd=REPO)


def test_verify_document_command_prints_a_verdict_and_draws_the_report(tmp_path: Path) -> None:
    report = tmp_path / "report.png"
    result = _signver("verify-document", str(EXAMPLES / "contract.png"), "--reference", *map(str, REFERENCES),
                      "--out", str(report), "--json")
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["verdict"] == "signed by the claimed person" and verdict["match"] is True
    [signature] = verdict["signatures"]
    assert {"box_xyxy", "distance", "threshold", "match"} <= set(signature) and signature["match"] is True
    picture = Image.open(report)
    assert picture.width >= 900 + 500  # the page (900 px) and the panel of crops and verdicts beside it


def test_verify_document_against_an_enrolled_person(tmp_path: Path) -> None:
    gallery = str(tmp_path / "people.db")
    enrol = _signver("enroll", "--gallery", gallery, "--person", "writer-39", *map(str, REFERENCES))
    assert enrol.returncode == 0, enrol.stderr
    verdicts = {}
    for page in ("contract.png", "contract_forged.png"):
        result = _signver("verify-document", str(EXAMPLES / page), "--gallery", gallery, "--person", "writer-39", "--json")
        assert result.returncode == 0, result.stderr
        verdicts[page] = json.loads(result.stdout)
    assert verdicts["contract.png"]["claimed"] == "writer-39" and verdicts["contract.png"]["match"] is True
    assert verdicts["contract_forged.png"]["verdict"] == "not signed by the claimed person"
    unknown = _signver("verify-document", str(EXAMPLES / "contract.png"), "--gallery", gallery, "--person", "nobody")
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1 and "nobody" in unknown.stderr


def test_a_page_without_a_signature_says_so(signver: SignVer, small_data: Path) -> None:
    [unsigned] = (small_data / "documents" / "images").glob("cqt45f00-page02*")  # a real letter's second page
    report = signver.verify_document(unsigned, references=REFERENCES)
    assert report.signatures == [] and report.verdict == "no signature found"
    assert report.as_dict()["match"] is False


def test_a_signature_box_outscored_by_another_class_is_not_verified() -> None:
    """Per-class NMS can box a handwritten date twice (date 0.84, signature 0.33): only marks the
    detector holds to be signatures, and separate signatures, are verified."""
    from signver_torch.pipeline import _signatures_not_outscored

    found = {
        "boxes": torch.tensor([[341.0, 484, 445, 505], [342, 484, 445, 506], [439, 367, 677, 441], [430, 370, 500, 440]]),
        "scores": torch.tensor([0.84, 0.33, 0.93, 0.20]),
        "labels": torch.tensor([4, 1, 1, 2]),
    }
    assert _signatures_not_outscored(found).tolist() == [False, False, True, False]


def test_embedding_cache_gives_the_embeddings_computed_afresh(signver: SignVer, monkeypatch: pytest.MonkeyPatch) -> None:
    from signver_torch import pipeline

    references = REFERENCES
    first, _ = signver.embed(references)
    again, _ = signver.embed(list(reversed(references)))  # from the cache, in the order asked
    np.testing.assert_array_equal(again, first[::-1])
    monkeypatch.setattr(pipeline, "EMBEDDING_CACHE_SIZE", 2)  # a batch larger than the cache still answers whole
    fresh = SignVer(device="cpu")
    small, small_cleaned = fresh.embed(references)
    np.testing.assert_allclose(small, first, atol=1e-5)
    assert len(small_cleaned) == 3 and len(fresh._embedded) == 2
    with pytest.raises(pipeline.BlankSignatureError) as blank:  # a blank crop is still refused, naming its position
        fresh.embed([references[0], np.ones((60, 200), np.float32)])
    assert blank.value.indices == [1]
    cleaned = signver.embed(references)[1]
    cleaned[0][:] = 0  # the caller's copy: the cache keeps its own
    np.testing.assert_allclose(signver.embed(references)[0], first, atol=1e-5)
    assert signver.embed(references)[1][0].max() > 0
