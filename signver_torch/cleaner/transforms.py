"""The cleaner's transforms: the tone curve a checkpoint card carries (fitted by ``signver calibrate
cleaner``), applied to every cleaned crop."""

from __future__ import annotations

import torch


def apply_tone_curve(images: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """``images`` in [0, 1] through ``curve`` (values at evenly spaced levels), linearly interpolated."""
    curve = curve.to(images.device, images.dtype)
    position = images.clamp(0, 1) * (len(curve) - 1)
    low = position.floor().long().clamp(max=len(curve) - 2)
    return torch.lerp(curve[low], curve[low + 1], position - low)
