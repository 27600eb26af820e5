"""The signature preprocessing (``extractor/transforms.py``) on real CEDAR scans: ink on a black canvas,
independent of paper tone and batch padding, blank and malformed batches refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from signver_torch.errors import BlankSignatureError, SignVerError
from signver_torch.extractor.transforms import SignaturePreprocessor
from signver_torch.io import load_image_tensor


@pytest.fixture(scope="module")
def cedar_pair(small_data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Writer 39: a genuine scan and a skilled forgery, both RGBA files."""
    cedar = small_data / "cedar"
    return (
        load_image_tensor(cedar / "full_org" / "original_39_1.png"),
        load_image_tensor(cedar / "full_forg" / "forgeries_39_1.png"),
    )


def test_preprocessing_gives_ink_on_black_canvas(cedar_pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    canvas = SignaturePreprocessor(height=96, width=160)(list(cedar_pair))
    assert canvas.shape == (2, 1, 96, 160)
    assert canvas.min() == 0 and canvas.max() == 1
    for item in canvas:
        assert (item > 0.1).float().mean() < 0.15, "mostly background"
        assert (item > 0.5).float().mean() > 0.005, "ink kept"
        border = torch.cat([item[0, :3].flatten(), item[0, -3:].flatten()])
        assert border.max() < 0.5, "background removed, ink centred away from the edges"


def test_paper_tone_does_not_change_the_canvas(cedar_pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    genuine, _ = cedar_pair
    darker_paper = genuine * 0.85  # same scan, greyer paper and ink
    canvases = SignaturePreprocessor()([genuine, darker_paper])
    assert (canvases[0] - canvases[1]).abs().mean() < 0.01


def test_batch_padding_does_not_change_an_item(cedar_pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    genuine, _ = cedar_pair
    small = genuine[:, :200, :300]
    big_white = torch.ones(1, 900, 1400)
    big_white[:, 100:300, 100:400] = genuine[:, :200, :300]
    preprocess = SignaturePreprocessor()
    alone = preprocess([small])
    together = preprocess([small, big_white], strict=False)
    assert torch.allclose(alone[0], together[0], atol=1e-4)


def test_blank_and_malformed_batches_are_refused(cedar_pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preprocess = SignaturePreprocessor()
    white = torch.ones(1, 120, 300)
    with pytest.raises(BlankSignatureError, match=r"item\(s\) \[1\]") as caught:
        preprocess([cedar_pair[0], white])
    assert caught.value.indices == [1]
    assert preprocess([white], strict=False).abs().max() == 0
    with pytest.raises(BlankSignatureError):
        preprocess([torch.full((1, 50, 50), 0.4)])
    with pytest.raises(SignVerError, match="empty batch"):
        preprocess([])
    with pytest.raises(SignVerError, match="NaN"):
        preprocess([torch.full((1, 10, 10), float("nan"))])
    with pytest.raises(SignVerError, match="at least 2x2"):
        preprocess([torch.zeros(1, 1, 1)])
