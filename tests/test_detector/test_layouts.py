"""Page families (``detector/layouts.py``) and the phone photo (``detector/photo.py``): every box is the tight
box of its own ink, on every family, before and after the warp; the mix and the command that writes a family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from signver_torch.data.detection import read_detection_dataset
from signver_torch.detector.handwriting import INK_LEVEL
from signver_torch.detector.layouts import LAYOUTS
from signver_torch.detector.pages import PageConfig, PageSynthesizer, layout_mix
from signver_torch.detector.photo import homography, photograph
from signver_torch.errors import DataError


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_family_boxes_hold_exactly_the_labelled_ink(ink_maps: list[np.ndarray], layout: str) -> None:
    synthesizer = PageSynthesizer(PageConfig(size=640))
    signatures = 0
    for index in range(4):
        layers = synthesizer.layers(ink_maps, np.random.default_rng((7, index)), layout=layout)
        ink = layers.handwriting > INK_LEVEL
        covered = np.zeros_like(ink)
        for (x0, y0, x1, y1), label in zip(layers.boxes.astype(int), layers.labels):
            if label == 3:
                assert layers.printed[y0:y1, x0:x1].mean() > 0.6
                continue
            inside = ink[y0:y1, x0:x1]
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()  # tight
            covered[y0:y1, x0:x1] = True
        assert not (ink & ~covered).any()  # no labelled handwriting outside a box
        signatures += int((layers.labels == 1).sum())
        assert max(layers.printed.shape) == 640 and layers.layout == layout
    assert signatures >= 4


def test_sheet_signs_inside_its_grid_cells(ink_maps: list[np.ndarray]) -> None:
    """The failure the issue measured: several signatures in printed boxes, each boxed alone within one cell."""
    synthesizer = PageSynthesizer(PageConfig(size=640))
    for index in range(4):
        layers = synthesizer.layers(ink_maps, np.random.default_rng((8, index)), layout="sheet")
        boxes = layers.boxes[layers.labels == 1].astype(int)
        assert len(boxes) >= 3
        for x0, y0, x1, y1 in boxes:  # no printed cell border crosses the inside of a signature's box
            inner = layers.printed[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] > 0.5
            assert not inner.all(1).any() and not inner.all(0).any()


def test_photo_warp_carries_every_box_exactly(ink_maps: list[np.ndarray]) -> None:
    synthesizer = PageSynthesizer(PageConfig(size=512))
    layers = synthesizer.layers(ink_maps, np.random.default_rng((9, 0)), layout="form")
    assert len(layers.boxes) >= 3
    rng = np.random.default_rng(1)
    photo, boxes = photograph(layers.page(), layers.boxes, layers.pieces, rng)
    assert photo.shape == layers.page().shape and (boxes[:, 2:] > boxes[:, :2]).all()
    height, width = photo.shape
    assert (boxes >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    # the same warp, run on the labelled ink alone: each warped box holds ink, and no ink lies outside the boxes
    warped_ink = _warp_like(layers, np.random.default_rng(1))
    for (x0, y0, x1, y1), label in zip(boxes, layers.labels):
        if label != 3:
            assert warped_ink[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))].any()
    outside = warped_ink.copy()
    for x0, y0, x1, y1 in boxes:
        outside[max(0, int(y0) - 1) : int(np.ceil(y1)) + 1, max(0, int(x0) - 1) : int(np.ceil(x1)) + 1] = False
    assert not outside.any()


def _warp_like(layers, rng: np.random.Generator) -> np.ndarray:
    """The labelled ink warped by the same homography ``photograph`` draws from ``rng`` (its first draws)."""
    height, width = layers.handwriting.shape
    fill = rng.uniform(0.75, 0.98)
    jitter = 0.06 * min(width, height)
    inset = np.array([width, height]) * (1 - fill) / 2
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    target = target + np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * inset + rng.uniform(-jitter, jitter, (4, 2))
    target = np.clip(target, 0, [width, height])
    source = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    inverse = np.linalg.inv(homography(source, target))
    ink = Image.fromarray(((layers.handwriting > INK_LEVEL) * 255).astype(np.uint8))
    warped = ink.transform((width, height), Image.PERSPECTIVE, tuple((inverse / inverse[2, 2]).flatten()[:8]), Image.NEAREST)
    return np.asarray(warped) > 0


def test_layout_mix_is_checked() -> None:
    assert layout_mix({"sheet": 1, "letter": 3}) == {"sheet": 0.25, "letter": 0.75}
    with pytest.raises(DataError, match="unknown page layout"):
        layout_mix({"poster": 1.0})
    with pytest.raises(DataError, match="positive sum"):
        layout_mix({"sheet": 0.0})


def test_synthesize_command_writes_a_family_the_reader_reads(signver_cli, small_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "cheques"
    result = signver_cli("synthesize", "pages", "--data", str(small_data / "cedar"), str(small_data / "chinese"),
                         "--layout", "cheque", "--photo", "0.5", "--pages", "3", "--seed", "0", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    records = read_detection_dataset(out, {0: 1, 1: 2, 2: 3, 3: 4})
    assert len(records) == 3 and all(Image.open(r.path).size[0] > Image.open(r.path).size[1] * 2 for r in records)
    assert any(1 in record.labels for record in records)
    bad = signver_cli("synthesize", "pages", "--data", str(small_data / "cedar"), "--photo", "2", "--out", str(tmp_path / "x"))
    assert bad.returncode != 0 and "--photo" in bad.stderr
