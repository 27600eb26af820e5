"""The shipped cleaner as users call it (``cleaner/api.py``): SignVer's shapes, a real ruled line removed,
bad batches, wrong checkpoints and a malformed tone curve refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from signver_torch.checkpoints import read_card
from signver_torch.cleaner.api import Cleaner
from signver_torch.errors import CheckpointError, ImageLoadError, SignVerError
from signver_torch.io import load_image_tensor
from signver_torch.metrics import ink_f1


@pytest.fixture(scope="module")
def cleaner() -> Cleaner:
    return Cleaner(device="cpu").load("default")


def test_clean_keeps_the_original_signver_shapes(cleaner: Cleaner, small_data: Path) -> None:
    crop = load_image_tensor(small_data / "samples" / "test_lines.png", "L")[0, :150, :300].numpy()
    gray = np.stack([crop, crop[::-1].copy()])
    cleaned = cleaner.clean(gray)
    assert cleaned.shape == gray.shape and cleaned.dtype == np.float32
    assert 0 <= cleaned.min() and cleaned.max() <= 1
    rgb = cleaner.clean(np.repeat(gray[..., None], 3, axis=-1))
    assert rgb.shape == (2, 150, 300, 3)
    np.testing.assert_allclose(rgb[..., 0], cleaned, atol=1e-3)
    tensor = cleaner.clean(torch.from_numpy(gray))
    assert isinstance(tensor, torch.Tensor) and tensor.shape == gray.shape
    # a list of crops of different sizes and kinds: each comes back at its own size
    path = small_data / "samples" / "original_2_11.png"
    listed = cleaner.clean([path, Image.open(path), crop])
    assert [item.shape for item in listed] == [listed[0].shape, listed[0].shape, crop.shape]
    np.testing.assert_allclose(listed[0], listed[1], atol=1e-5)


def test_the_real_ruled_line_is_removed_and_the_signature_kept(cleaner: Cleaner, small_data: Path) -> None:
    dirty = load_image_tensor(small_data / "samples" / "test_lines.png", "L")
    truth = load_image_tensor(small_data / "samples" / "original_2_12.png", "L")
    [cleaned] = cleaner.clean_pages([dirty])
    # the line is one pixel thin, so the dirty scan already scores high: the line check below is the strict one
    assert float(ink_f1(cleaned[None], truth[None])) >= 0.9
    line_row = (truth[0] - dirty[0]).abs().sum(1).argmax()  # the row the real line runs along
    line_pixels = (truth[0, line_row] > 0.7) & (dirty[0, line_row] < 0.5)
    assert float(cleaned[0, line_row][line_pixels].mean()) > 0.8  # the line is paper again


def test_large_crops_are_cleaned_at_max_side_and_scaled_back(small_data: Path) -> None:
    dirty = load_image_tensor(small_data / "samples" / "test_lines.png", "L")  # 594 x 163
    truth = load_image_tensor(small_data / "samples" / "original_2_12.png", "L")
    full, bounded = (Cleaner(device="cpu", max_side=side).load("default") for side in (None, 300))
    [at_full], [at_300] = full.clean_pages([dirty]), bounded.clean_pages([dirty])
    assert at_300.shape == dirty.shape
    assert float(ink_f1(at_300[None], truth[None])) >= 0.85  # still the signature, the ruled line gone
    assert float((at_300 - at_full).abs().mean()) < 0.03
    assert not torch.equal(at_300, at_full)  # it did take the downscaled path
    for within in (dirty[..., :150, :290], dirty[..., :150, :300]):  # below and at the bound: the very same pixels
        assert torch.equal(bounded.clean_pages([within])[0], full.clean_pages([within])[0])
    thin = dirty[..., 60:72, :]  # 12 x 594: the bound would make it 6 px high; it keeps 8 and its aspect ratio
    [cleaned] = bounded.clean_pages([thin])
    assert cleaned.shape == thin.shape and float((cleaned - full.clean_pages([thin])[0]).abs().mean()) < 0.05
    with pytest.raises(SignVerError, match="max_side"):
        Cleaner(max_side=4)
    with pytest.raises(SignVerError, match="max_side"):
        bounded.max_side = 0  # checked whenever it is set, not only by the constructor
    assert bounded.max_side == 300


def test_bad_batches_are_clear_errors(cleaner: Cleaner) -> None:
    with pytest.raises(SignVerError, match="empty batch"):
        cleaner.clean(np.zeros((0, 32, 32), np.float32))
    with pytest.raises(SignVerError, match="empty batch"):
        cleaner.clean([])
    with pytest.raises(SignVerError, match=r"shaped \(N, H, W\)"):
        cleaner.clean(np.ones((32, 32), np.float32))
    with pytest.raises(SignVerError, match="NaN"):
        cleaner.clean(np.full((1, 32, 32), np.nan, np.float32))
    with pytest.raises(SignVerError, match="at least 8x8"):
        cleaner.clean(np.ones((1, 1, 1), np.float32))
    with pytest.raises(SignVerError, match=r"values in \[0, 1\]"):
        cleaner.clean(np.full((1, 32, 32), 255.0, np.float32))
    with pytest.raises(SignVerError, match="wrap a single crop"):
        cleaner.clean("crop.png")
    with pytest.raises(ImageLoadError, match="missing.png"):
        cleaner.clean(["missing.png"])
    # 8-bit batches are taken as 0..255
    assert cleaner.clean(np.full((1, 16, 16), 255, np.uint8)).min() > 0.9


def test_wrong_checkpoints_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="extractor"):
        Cleaner().load("checkpoints/extractor/default.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        Cleaner().load(junk)
    with pytest.raises(CheckpointError, match="load"):
        Cleaner().clean_pages([torch.ones(1, 16, 16)])


def test_a_malformed_tone_curve_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "cleaner.safetensors"
    shutil.copy("checkpoints/cleaner/default.safetensors", weights)
    card = read_card(Path("checkpoints/cleaner/default.safetensors"))
    weights.with_suffix(".json").write_text(json.dumps({**card, "tone_curve": {"values": [0.5]}}))
    with pytest.raises(CheckpointError, match="tone_curve"):
        Cleaner().load(weights)


def test_the_numpy_resizes_are_torchs_interpolate(small_data: Path) -> None:
    """The exported cleaner's host steps (``cleaner/exported.py``, no torch): area downscale and bilinear upscale of a
    real scan, to sizes that divide it and sizes that do not, as ``F.interpolate`` computes them."""
    import torch.nn.functional as F

    from signver_torch.cleaner.exported import area_resize, bilinear_resize

    scan = load_image_tensor(small_data / "cedar" / "full_org" / "original_39_1.png", "L")[None]  # (1, 1, H, W)
    height, width = scan.shape[-2:]
    for size in ((height // 2, width // 2), (round(height * 0.37), round(width * 0.61)), (9, 8)):
        expected = F.interpolate(scan, size=size, mode="area").numpy()
        np.testing.assert_allclose(area_resize(scan.numpy(), *size), expected, atol=1e-4)  # torch sums large blocks in float32
        small = torch.from_numpy(expected)
        upscaled = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False).numpy()
        np.testing.assert_allclose(bilinear_resize(expected, height, width), upscaled, atol=1e-5)
