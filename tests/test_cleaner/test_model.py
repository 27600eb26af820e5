"""The cleaner's U-Net (``cleaner/model.py``): any input size, validated arguments."""

from __future__ import annotations

import pytest
import torch

from signver_torch.cleaner.model import UNet, build_cleaner


@pytest.mark.parametrize("size", [(8, 8), (61, 150), (163, 594)])
def test_unet_keeps_any_input_size(size: tuple[int, int]) -> None:
    model = build_cleaner("unet_slim").eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, *size)).shape == (2, 1, *size)


def test_unet_builder_validates_its_arguments() -> None:
    assert build_cleaner("unet_wide").channels == 32
    with pytest.raises(ValueError, match="unknown cleaner variant"):
        build_cleaner("unet_huge")
    with pytest.raises(ValueError, match="positive"):
        UNet(channels=0)
