"""The detector's training data (``detector/data.py``, ``transforms.py``): synthetic pages fixed by seed and
written as YOLO folders, letterboxing and augmentation that keep boxes on the page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from signver_torch.data.detection import DetectionPages, parse_class_map, read_detection_dataset, read_yolo
from signver_torch.detector.data import YOLO_CLASS_MAP, Augmented, Letterboxed, SyntheticPages, write_yolo_pages
from signver_torch.detector.pages import PageConfig
from signver_torch.detector.transforms import letterbox
from signver_torch.errors import DataError


def test_synthetic_pages_are_fixed_by_seed(ink_maps: list[np.ndarray]) -> None:
    first, target = SyntheticPages(ink_maps, 4, seed=1, config=PageConfig(size=256))[2]
    again, target_again = SyntheticPages(ink_maps, 4, seed=1, config=PageConfig(size=256))[2]
    assert torch.equal(first, again) and torch.equal(target["boxes"], target_again["boxes"])
    assert first.shape == (3, 256, 256)


def test_synthetic_pages_round_trip_through_a_yolo_folder(ink_maps: list[np.ndarray], tmp_path: Path) -> None:
    pages = SyntheticPages(ink_maps, 3, seed=5, config=PageConfig(size=256))
    root = write_yolo_pages(pages, tmp_path / "pages", progress=False)
    records = read_yolo(root, parse_class_map(YOLO_CLASS_MAP))
    assert len(records) == 3
    for index, record in enumerate(records):
        image, target = pages[index]
        np.testing.assert_allclose(np.asarray(record.boxes).reshape(-1, 4), target["boxes"].numpy(), atol=0.01)
        assert list(record.labels) == target["labels"].tolist()
        written = np.asarray(Image.open(record.path), np.float32) / 255
        np.testing.assert_allclose(written, image[0].numpy(), atol=0.5 / 255 + 1e-6)
    with pytest.raises(DataError, match="not empty"):
        write_yolo_pages(pages, root, progress=False)


def test_letterbox_and_augmentation_keep_boxes_on_the_page(documents: Path) -> None:
    wide = torch.ones(3, 100, 300)
    boxed, scale = letterbox(wide, 240)
    assert boxed.shape == (3, 240, 240) and scale == pytest.approx(0.8)
    assert boxed[:, 80:].min() == 1.0  # padding is white paper
    records = [r for r in read_detection_dataset(documents) if r.boxes][:6]
    pages = Augmented(Letterboxed(DetectionPages(records), 320), seed=0)
    for index in range(len(pages)):
        image, target = pages[index]
        assert image.shape == (3, 320, 320) and 0 <= float(image.min()) and float(image.max()) <= 1
        boxes = target["boxes"]
        assert len(boxes) == len(target["labels"])
        assert (boxes >= 0).all() and (boxes <= 320).all() and (boxes[:, 2:] > boxes[:, :2]).all()
