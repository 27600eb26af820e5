"""The cleaner network: a U-Net that maps a dirty grayscale crop to the darkness of its signature ink.

Fully convolutional: any input size is padded (with paper) to a multiple of ``2 ** depth`` and the
output cropped back, so one network cleans a 60×150 crop from a page and a 600×1600 scan alike.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from signver_torch.cleaner.transforms import apply_tone_curve

#: Named configurations: slim for CPU inference (the shipped default), wide for GPU/HPU recipes.
CLEANER_VARIANTS = {"unet_slim": {"channels": 12, "depth": 4}, "unet_wide": {"channels": 32, "depth": 4}}


class ConvBlock(nn.Sequential):
    """Two 3×3 convolutions with batch norm and ReLU: the unit of each U-Net level."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net (Ronneberger et al., 2015): ``depth`` poolings, ``channels · 2^level`` channels per level.

    ``forward`` takes ``(N, 1, H, W)`` pages in ``[0, 1]`` (paper light) and returns ink logits of
    the same size; ``sigmoid(logits)`` is the ink darkness, ``1 - sigmoid(logits)`` the clean page.
    """

    def __init__(self, channels: int = 12, depth: int = 4) -> None:
        super().__init__()
        if channels < 1 or depth < 1:
            raise ValueError(f"U-Net channels and depth must be positive, got channels={channels}, depth={depth}")
        self.channels, self.depth = channels, depth
        widths = [channels * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList([ConvBlock(1, widths[0])])
        self.encoder.extend(ConvBlock(widths[i], widths[i + 1]) for i in range(depth))
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.decoder = nn.ModuleList(ConvBlock(widths[i] * 2, widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], 1, 1)

    @property
    def stride(self) -> int:
        return 2**self.depth

    def forward(self, page: torch.Tensor) -> torch.Tensor:
        height, width = page.shape[-2:]
        pad_h, pad_w = -height % self.stride, -width % self.stride
        x = 1.0 - F.pad(page, (0, pad_w, 0, pad_h), value=1.0)  # darkness; padding is blank paper
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for upsample, block in zip(self.upsample, self.decoder):
            x = block(torch.cat([upsample(x), skips.pop()], dim=1))
        return self.head(x)[..., :height, :width]


class InkCleaner(nn.Module):
    """The cleaner as inference runs it (and ``signver export`` exports it): ``(N, 1, H, W)`` dirty crops
    in ``[0, 1]``, H and W multiples of the U-Net's stride, to clean crops (``1 - sigmoid(logits)``)
    through the card's tone curve when it has one."""

    def __init__(self, unet: UNet, tone_curve: torch.Tensor | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.register_buffer("tone_curve", tone_curve, persistent=False)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        cleaned = 1.0 - torch.sigmoid(self.unet(crops.clamp(0, 1)))
        return cleaned if self.tone_curve is None else apply_tone_curve(cleaned, self.tone_curve)


def build_cleaner(variant: str = "unet_slim", **overrides: int) -> UNet:
    """A cleaner by variant name (``unet_slim``, ``unet_wide``), with ``channels``/``depth`` overrides."""
    if variant not in CLEANER_VARIANTS:
        raise ValueError(f"unknown cleaner variant {variant!r} (choose from {', '.join(CLEANER_VARIANTS)})")
    return UNet(**{**CLEANER_VARIANTS[variant], **overrides})


def cleaner_from_card(card: dict[str, Any]) -> UNet:
    """The network a cleaner checkpoint card's ``architecture`` describes (weights not loaded)."""
    return build_cleaner(**card["architecture"])
