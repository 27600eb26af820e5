"""SignVer's pipeline (``pipeline.py``) end to end on the shipped example: page in, verdict and report picture
out; the embedding cache, and each bad item of a batch reported on its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from signver_torch.errors import SignVerError
from signver_torch.pipeline import Claim, SignVer

from tests.conftest import EXAMPLES, REFERENCES
from tests.test_cli.test_verify import cedar


@pytest.fixture(scope="module")
def signver() -> SignVer:
    return SignVer(device="cpu")


@pytest.fixture(scope="module")
def model() -> SignVer:
    return SignVer(clean=False, device="cpu")


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


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_references_embedded_beside_the_detector_give_the_serial_answer(tmp_path: Path, backend: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """verify_document embeds the references in a thread while the page is detected where OpenVINO cleans (not
    beside torch): the distances are those of the page read and the references embedded one after the other, and
    a bad reference is still named before a bad page."""
    pytest.importorskip(backend)
    # its exports in a cache of its own: in the session's, they would make later tests' backend="auto" run OpenVINO
    monkeypatch.setenv("SIGNVER_CACHE", str(tmp_path / "cache"))
    overlapped = SignVer(device="cpu", backend=backend)
    report = overlapped.verify_document(EXAMPLES / "contract.png", references=REFERENCES)
    assert overlapped._references_beside_detector() is (backend == "openvino")
    serial = SignVer(device="cpu", backend=backend)
    references, _ = serial.embed(REFERENCES)
    reading = serial.read_page(EXAMPLES / "contract.png")
    expected = [serial.decide(embedding, references).distance for embedding in reading.embeddings]
    np.testing.assert_allclose([s.verdict.distance for s in report.signatures], expected, atol=1e-5)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(SignVerError, match="broken.png") as error:
        overlapped.verify_document(tmp_path / "missing-page.png", references=[*REFERENCES[:2], broken])
    assert "missing-page" not in str(error.value)


def test_a_page_without_a_signature_says_so(signver: SignVer, small_data: Path) -> None:
    [unsigned] = (small_data / "documents" / "images").glob("cqt45f00-page02*")  # a real letter's second page
    report = signver.verify_document(unsigned, references=REFERENCES)
    assert report.signatures == [] and report.verdict == "no signature found"
    assert report.as_dict()["match"] is False


def test_a_signature_box_outscored_by_another_class_is_not_verified() -> None:
    """Per-class NMS can box a handwritten date twice (date 0.84, signature 0.33): only marks the
    detector holds to be signatures, and separate signatures, are verified."""
    from signver_torch.pipeline import _signatures_not_outscored

    boxes = np.array([[341.0, 484, 445, 505], [342, 484, 445, 506], [439, 367, 677, 441], [430, 370, 500, 440]], np.float32)
    scores, labels = np.array([0.84, 0.33, 0.93, 0.20], np.float32), np.array([4, 1, 1, 2])
    assert _signatures_not_outscored(boxes, scores, labels).tolist() == [False, False, True, False]


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


def test_the_embedding_cache_keeps_each_cleaning_bound_apart() -> None:
    """The references are 504 px wide: cleaned at the default bound (384) and at full resolution they differ, and a
    bound changed on the pipeline's cleaner is not answered from the other bound's cache."""
    signver = SignVer(device="cpu")
    bounded, bounded_cleaned = signver.embed(REFERENCES[:1])
    signver.cleaner.max_side = None
    full, full_cleaned = signver.embed(REFERENCES[:1])
    assert full_cleaned[0].shape == bounded_cleaned[0].shape and not np.array_equal(full_cleaned[0], bounded_cleaned[0])
    assert len(signver._embedded) == 2 and not np.array_equal(full, bounded)


def test_embed_each_reports_every_bad_item_and_embeds_the_rest_as_alone(small_data: Path, model: SignVer) -> None:
    good = [cedar(small_data, 37, 1), cedar(small_data, 37, 2)]
    tiny = np.zeros((1, 1), np.float32)  # too small to preprocess: the batch is refused, then each item alone
    results = model.embed_each([good[0], tiny, good[1], good[0]])
    assert isinstance(results[1], SignVerError) and "signature 1" in str(results[1])
    alone, _ = model.embed(good)
    np.testing.assert_allclose(results[0], alone[0], atol=1e-5)
    np.testing.assert_allclose(results[2], alone[1], atol=1e-5)
    np.testing.assert_allclose(results[3], results[0])
    with pytest.raises(SignVerError, match="need a gallery"):
        next(model.verify_many([Claim(good[0], person="ann")]))
