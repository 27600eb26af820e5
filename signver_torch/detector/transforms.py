"""The detector's transforms, shared by training and inference: pages letterboxed to the network's square."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def letterbox(image: torch.Tensor, size: int) -> tuple[torch.Tensor, float]:
    """Scale ``(C, H, W)`` to fit ``size``×``size`` (aspect kept), pad right/bottom with white; returns the scale."""
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_h, new_w) != (height, width):
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)[0]
    return F.pad(image, (0, size - new_w, 0, size - new_h), value=1.0), scale
