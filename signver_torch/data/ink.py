"""The ink of a scan: the library's one Otsu split of ink from paper, and the ink maps built on it.

:func:`ink_mask` splits for the extractor's preprocessing, for the cleaner's ink F1
(:func:`~signver_torch.metrics.ink_f1`) and for :func:`ink_only`, the ink maps the synthetic generators
paste (the cleaner's dirty pairs, the detector's pages).
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from signver_torch.data.signatures import SignatureRecord
from signver_torch.errors import DataError
from signver_torch.io import load_image


def ink_mask(darkness: torch.Tensor, floor: float | None = 0.05, levels: int | None = None, sample: int = 1) -> torch.Tensor:
    """Otsu's split (Otsu, 1979) of ``darkness`` (``(..., H, W)``, ink high): ``True`` on ink, each plane on its own.

    Args:
        darkness: float maps in ``[0, 1]``; with ``levels``, integers in ``[0, levels)``.
        floor: pixels no darker than this are never ink (a plane without ink has no split worth
            keeping); ``None`` keeps every pixel of the split.
        levels: ``None`` histograms each plane over its own range in 256 bins (kornia's
            ``otsu_threshold``: float maps, on any device); a number histograms the fixed levels
            ``0 .. levels - 1`` on the CPU (8-bit scans: ``255 - gray``) and keeps as ink the levels
            down to the split.
        sample: float maps only: the split is found on a copy downscaled to every ``sample``-th pixel of each
            row and column, then applied to every pixel. On a smooth map the histogram barely changes and
            its cost falls by ``sample``²: the Otsu was the largest part of the extractor's preprocessing.
    """
    if levels is None:
        from kornia.filters import otsu_threshold

        if sample == 1:
            mask, _ = otsu_threshold(darkness, return_mask=True)
        else:
            _, threshold = otsu_threshold(darkness[..., ::sample, ::sample])
            mask = darkness > threshold.view(*darkness.shape[:-2], 1, 1)  # one threshold per plane
    else:
        mask = _fixed_levels_split(darkness, levels)
    return mask if floor is None else mask & (darkness > floor)


def _fixed_levels_split(darkness: torch.Tensor, levels: int) -> torch.Tensor:
    """Otsu on a histogram of the levels themselves, counted from the paper side (``levels - 1 - darkness``,
    the scan's gray level): ink is every gray level up to the one that best splits the plane."""
    gray = (levels - 1) - darkness.reshape(-1, darkness.shape[-2] * darkness.shape[-1]).long()
    counts = torch.zeros(len(gray), levels, dtype=torch.float64).scatter_add_(1, gray, torch.ones(gray.shape, dtype=torch.float64))
    probability = counts / gray.shape[1]
    weight = probability.cumsum(1)
    mean = (probability * torch.arange(levels, dtype=torch.float64)).cumsum(1)
    between = (mean[:, -1:] * weight - mean) ** 2 / (weight * (1 - weight) + 1e-12)
    return (gray <= between.argmax(1, keepdim=True)).reshape(darkness.shape)


def ink_only(image: Image.Image, max_side: int = 640, margin: int = 4) -> np.ndarray:
    """A scan's ink as darkness in ``[0, 1]`` (paper exactly 0), cropped to the ink, at most ``max_side``."""
    gray = np.asarray(image.convert("L"))
    ink = ink_mask(torch.from_numpy(255 - gray), floor=None, levels=256).numpy()
    if not ink.any() or ink.all():
        raise DataError("no ink found (blank or uniform image)")
    paper = float(np.median(gray[~ink]))
    darkness = np.where(ink, np.clip((paper - gray) / max(paper, 1.0), 0, 1), 0).astype(np.float32)
    rows, cols = np.nonzero(ink)
    darkness = darkness[
        max(rows.min() - margin, 0) : rows.max() + margin + 1, max(cols.min() - margin, 0) : cols.max() + margin + 1
    ]
    # saturate: the body of every stroke fully dark, only its edges soft. The target is "ink on white"
    # (what the extractor wants), not the scan's pen pressure and contrast, which no model could recover
    # from a dirty page anyway.
    darkness = np.clip(darkness / max(float(np.median(darkness[darkness > 0])), 1e-3), 0, 1)
    scale = max_side / max(darkness.shape)
    if scale < 1:
        size = (max(1, round(darkness.shape[1] * scale)), max(1, round(darkness.shape[0] * scale)))
        darkness = np.asarray(Image.fromarray(darkness).resize(size, Image.BILINEAR))
    return darkness


def load_ink_maps(records: Sequence[SignatureRecord], max_side: int = 640, progress: bool = True) -> list[np.ndarray]:
    """Ink maps of ``records``' scans; a scan without ink is an error naming the file."""
    maps = []
    for record in tqdm(records, desc="signature ink", unit="img", file=sys.stderr, disable=not progress, leave=False):
        try:
            maps.append(ink_only(load_image(record.path), max_side))
        except DataError as error:
            raise DataError(f"{record.path}: {error}") from error
    return maps
