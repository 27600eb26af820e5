"""The shipped detector as users call it (``detector/api.py``): SignVer's box conventions on held-out real
pages, bad pages and wrong checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from signver_torch.data.detection import read_detection_dataset
from signver_torch.detector.api import Detector, summarize
from signver_torch.detector.marks import Mark
from signver_torch.detector.pages import PageConfig, PageSynthesizer
from signver_torch.errors import CheckpointError, ImageLoadError, SignVerError


@pytest.fixture(scope="module")
def shipped() -> Detector:
    return Detector(device="cpu").load("default")


def test_api_conventions_on_real_pages(shipped: Detector, documents: Path, small_data: Path) -> None:
    """The shipped detector on held-out real pages: SignVer's ``detect`` gives [ymin, xmin, ymax, xmax]
    normalised to the page, the same boxes as ``predict`` in pixels, and they sit on the labelled signatures."""
    hits = 0
    labelled = [record for record in read_detection_dataset(documents) if record.boxes]
    for record in labelled:
        page = Image.open(record.path)
        width, height = page.size
        boxes, scores, classes, count = shipped.detect(page, score_threshold=0.3)
        [found] = shipped.predict([page], score_threshold=0.3)
        assert count == len(boxes) == len(scores) == len(classes) == len(found["boxes"]) > 0
        assert boxes.min() >= 0 and boxes.max() <= 1 and set(classes.tolist()) <= {1, 2, 3, 4}
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        xyxy = boxes[:, [1, 0, 3, 2]] * np.array([width, height, width, height])
        np.testing.assert_allclose(xyxy, found["boxes"].numpy(), rtol=1e-4, atol=0.05)
        best = int(np.argmax(np.where(classes == 1, scores, -1)))
        iou = box_iou(torch.tensor(xyxy[best : best + 1], dtype=torch.float32), torch.tensor(record.boxes, dtype=torch.float32))
        hits += float(iou.max()) >= 0.5
    assert hits >= len(labelled) - 1, f"the best signature box lies on a labelled one on {hits} of {len(labelled)} pages"
    big = Image.open(small_data / "samples" / "signed_page.png")  # 1190x1683, RGBA: not a square page
    boxes, _, classes, count = shipped.detect(big, score_threshold=0.3)
    assert count >= 1 and 1 in classes.tolist()
    assert set(summarize(shipped.predict([big])[0])) >= {"signed", "initialled", "redacted", "dated"}


def test_bad_pages_are_clear_errors_or_empty_results(small_checkpoint: Path, tmp_path: Path) -> None:
    detector = Detector(device="cpu").load(small_checkpoint)
    [tiny] = detector.predict([np.ones((1, 1, 3), np.float32)])
    assert len(tiny["boxes"]) == 0
    [blank] = detector.predict([np.ones((300, 200), np.float32)], score_threshold=0.5)
    assert blank["boxes"].shape[1] == 4
    not_image = tmp_path / "page.png"
    not_image.write_text("not an image")
    with pytest.raises(ImageLoadError, match="page.png"):
        detector.predict([not_image])
    with pytest.raises(SignVerError, match="list of pages"):
        detector.predict("page.png")
    with pytest.raises(CheckpointError, match="extractor"):
        Detector().load("checkpoints/extractor/default.safetensors")


def test_the_layouts_checkpoint_finds_the_signatures_of_sheets_that_default_misses(ink_maps: list[np.ndarray]) -> None:
    """The two shipped detectors on signature sheets (a grid of boxes, half of them photographed with a phone): the
    ``layouts`` one, trained on every page family, finds most of them at its card's threshold, and a quarter
    of them more than ``default`` does, trained on letters (docs/detector.md measures both on every family)."""
    synthesizer = PageSynthesizer(PageConfig(size=640, layouts={"sheet": 1.0}, photo_rate=0.5))
    detectors = {name: Detector(device="cpu").load(name) for name in ("default", "layouts")}
    found, total = dict.fromkeys(detectors, 0), 0
    for index in range(4):
        page, boxes, labels = synthesizer(ink_maps, np.random.default_rng((11, index)))
        truth = torch.as_tensor(boxes[labels == Mark.SIGNATURE], dtype=torch.float32)
        total += len(truth)
        for name, detector in detectors.items():
            [out] = detector.predict([page])
            signatures = out["boxes"][out["labels"] == Mark.SIGNATURE]
            if len(signatures):
                found[name] += int((box_iou(truth, signatures) >= 0.5).any(1).sum())
    assert total >= 12
    assert found["layouts"] >= 0.6 * total and found["layouts"] >= found["default"] + 0.25 * total, (found, total)
