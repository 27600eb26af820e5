"""The extractor's transforms, shared by training and inference: signature preprocessing, one batched
torch/kornia implementation.

Sigver-style (Hafemann et al.): grayscale → Otsu background removal → ink polarity (ink bright on a
zero background) → tight crop around the ink → aspect-preserving resize onto a fixed canvas, centred
on the ink → contrast normalisation. It runs on whatever device its input lives on, so the same code
prepares a training batch on an HPU and a query on a laptop; its parameters live in the checkpoint
card (:meth:`SignaturePreprocessor.config`) and are replayed at inference.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from kornia.filters import get_gaussian_kernel1d
from kornia.geometry.transform import warp_affine

from signver_torch.data.ink import ink_mask
from signver_torch.extractor.canvas import PreprocessConfig  # torch-free, shared with the numpy canvases
from signver_torch.errors import BlankSignatureError, SignVerError


class SignaturePreprocessor(torch.nn.Module):
    """Turn grayscale crops of any size into fixed ``(N, 1, height, width)`` ink canvases in ``[0, 1]``.

    Ink is 1 and paper 0 on the output, whatever the scan's background brightness, so a grey scanner
    background and a white one give the same canvas.
    """

    def __init__(self, config: PreprocessConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        base = asdict(config or PreprocessConfig())
        self.cfg = PreprocessConfig(**{**base, **overrides})

    def config(self) -> dict[str, Any]:
        return asdict(self.cfg)

    @torch.no_grad()
    def forward(self, images: torch.Tensor | Sequence[torch.Tensor], *, strict: bool = True) -> torch.Tensor:
        """Preprocess a batch.

        Args:
            images: ``(N, C, H, W)`` tensor (processed as one batch, e.g. on a GPU) or a list of
                ``(C, H, W)`` tensors of different sizes (each processed at its own size, so no
                padding ever enters the Otsu histogram); values in ``[0, 1]``, dark ink on light
                paper; ``C`` is 1 or 3.
            strict: raise :class:`BlankSignatureError` naming the blank items (else they become zeros).
        """
        if isinstance(images, torch.Tensor):
            if images.ndim != 4:
                raise SignVerError(f"expected an (N, 1|3, H, W) batch, got shape {tuple(images.shape)}")
            canvas, blank = self._canvas(self._grayscale(images))
        else:
            if len(images) == 0:
                raise SignVerError("empty batch: no signatures to preprocess")
            results = [self._canvas(self._grayscale(image.unsqueeze(0))) for image in images]
            canvas = torch.cat([c for c, _ in results])
            blank = torch.cat([b for _, b in results])
        if strict and bool(blank.any()):
            indices = blank.nonzero().flatten().tolist()
            raise BlankSignatureError(
                f"no signature ink found in batch item(s) {indices} (blank or uniform crop)", indices
            )
        return canvas

    def _canvas(self, gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ink, blank = self.remove_background(gray)
        canvas = warp_affine(ink, self.canvas_transform(ink), (self.cfg.height, self.cfg.width), align_corners=False)
        flat = canvas.flatten(1)  # kthvalue, not quantile: quantile refuses inputs above 16M elements
        scale = flat.kthvalue(max(1, round(0.995 * flat.shape[1])), dim=1).values.clamp_min(1e-3).view(-1, 1, 1, 1)
        canvas = (canvas / scale).clamp(0, 1)
        return canvas.masked_fill(blank.view(-1, 1, 1, 1), 0.0), blank

    @staticmethod
    def _grayscale(batch: torch.Tensor) -> torch.Tensor:
        if batch.ndim != 4 or batch.shape[1] not in (1, 3):
            raise SignVerError(f"expected (C, H, W) images with C = 1 or 3, got shape {tuple(batch.shape[1:])}")
        if batch.shape[0] == 0:
            raise SignVerError("empty batch: no signatures to preprocess")
        if batch.shape[-1] < 2 or batch.shape[-2] < 2:
            raise SignVerError(f"signature crops must be at least 2x2 pixels, got {tuple(batch.shape[-2:])}")
        batch = batch.float()
        if not torch.isfinite(batch).all():
            raise SignVerError("signature batch contains NaN or infinite values")
        if batch.shape[1] == 3:
            batch = (batch * batch.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return batch.clamp(0, 1)

    def remove_background(self, gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Otsu-split ink from paper; return ink intensity (paper = 0) and a per-item blank flag."""
        darkness = 1.0 - gray
        smooth = gaussian_blur_5x5(darkness)
        mask = ink_mask(smooth, sample=self.cfg.otsu_sample)
        ink_fraction = mask.flatten(1).float().mean(1)
        paper_level = (darkness * ~mask).flatten(1).sum(1) / (~mask).flatten(1).sum(1).clamp_min(1)
        ink_level = (darkness * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
        blank = (ink_fraction < self.cfg.min_ink_fraction) | (ink_level - paper_level < self.cfg.min_contrast)
        ink = ((darkness - paper_level.view(-1, 1, 1, 1)).clamp_min(0) * mask).clamp(0, 1)
        return ink, blank

    def ink_boxes(self, ink: torch.Tensor) -> torch.Tensor:
        """Boxes around the ink mass, widened to the canvas aspect ratio: ``(N, 4)`` as left, top, right, bottom."""
        q = self.cfg.box_quantile
        y0, y1 = _mass_interval(ink.sum(dim=(1, 3)), q)
        x0, x1 = _mass_interval(ink.sum(dim=(1, 2)), q)
        height = (y1 - y0 + 1) * (1 + 2 * self.cfg.margin)
        width = (x1 - x0 + 1) * (1 + 2 * self.cfg.margin)
        aspect = self.cfg.width / self.cfg.height
        width = torch.maximum(width, height * aspect)
        height = width / aspect
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        return torch.stack([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], -1)

    def canvas_transform(self, ink: torch.Tensor) -> torch.Tensor:
        """The ``(N, 2, 3)`` affine map of each ink box's corners onto the canvas's corner pixels: what kornia's
        ``crop_and_resize`` solves as a perspective for any quadrilateral, written out for an upright box (half
        the step's time, the same canvas to 1e-3)."""
        left, top, right, bottom = self.ink_boxes(ink).unbind(-1)
        scale_x, scale_y = (self.cfg.width - 1) / (right - left), (self.cfg.height - 1) / (bottom - top)
        zero = torch.zeros_like(scale_x)
        return torch.stack([torch.stack([scale_x, zero, -left * scale_x], -1),
                            torch.stack([zero, scale_y, -top * scale_y], -1)], 1)


def gaussian_blur_5x5(images: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """kornia's ``gaussian_blur2d(images, (5, 5), (sigma, sigma), border_type="replicate")`` as five shifted, weighted
    sums per axis, on ``(N, C, H, W)`` float images of any device.

    The same values to float rounding, without a convolution: on the CPU, oneDNN builds a convolution for each new
    image size, and every signature scan has its own size (it was half of the Otsu step's time).
    """
    kernel = get_gaussian_kernel1d(5, sigma, device=images.device, dtype=images.dtype).flatten()
    height, width = images.shape[-2:]
    padded = F.pad(images, (2, 2, 2, 2), mode="replicate")
    rows = sum(kernel[i] * padded[..., :, i : i + width] for i in range(5))
    return sum(kernel[i] * rows[..., i : i + height, :] for i in range(5))  # type: ignore[return-value]


def _mass_interval(profile: torch.Tensor, quantile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last index where the cumulative ink mass passes ``quantile`` and ``1 - quantile``."""
    cumulative = profile.cumsum(1)
    total = cumulative[:, -1:].clamp_min(1e-6)
    fraction = cumulative / total
    start = (fraction < quantile).sum(1).float()
    end = (fraction < 1 - quantile).sum(1).float()
    return start, torch.maximum(end, start)
