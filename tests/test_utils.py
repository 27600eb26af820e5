"""The original SignVer helpers on a real page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from signver_torch.utils import get_image_crops, img_to_np_array, make_square, resnet_preprocess


def test_crops_follow_signvers_normalised_boxes(small_data: Path) -> None:
    page = img_to_np_array(small_data / "samples" / "signdoc.jpg")
    assert page.dtype == np.uint8 and page.shape == (571, 533, 3)
    inverted = img_to_np_array(small_data / "samples" / "signdoc.jpg", invert_image=True)
    assert (inverted.astype(int) + page == 255).all()
    boxes = np.array([[0.5, 0.25, 0.75, 0.5], [0.0, 0.0, 0.1, 0.1]])
    [crop] = get_image_crops(page, boxes, np.array([0.9, 0.2]), threshold=0.5)
    assert crop.shape == (144, 134, 3)  # rows 285.5 -> 285 .. 428.25 -> 429: the box is kept whole
    np.testing.assert_array_equal(crop, page[285:429, 133:267])


def test_make_square_and_resnet_preprocess() -> None:
    wide = Image.new("RGB", (200, 50), (0, 0, 0))
    square = make_square(wide)
    assert square.size == (200, 200)
    assert square.getpixel((0, 0)) == (255, 255, 255) and square.getpixel((100, 100)) == (0, 0, 0)
    batch = resnet_preprocess([np.asarray(square), np.zeros((30, 90), np.float32)])
    assert batch.shape == (2, 224, 224, 3) and batch.dtype == np.float32 and 0 <= batch.min() and batch.max() <= 1
