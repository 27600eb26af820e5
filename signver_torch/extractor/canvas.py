"""The extractor's preprocessing in numpy: the ink canvases of :class:`~signver_torch.extractor.transforms.SignaturePreprocessor`
without torch, for the exported graphs (:class:`~signver_torch.extractor.exported.ExportedExtractor`).

The torch preprocessing stays the reference (training batches on a GPU or an HPU run through it); this one replays
it step for step on the host (blur, Otsu split, ink box, bilinear warp, contrast) so a process that verifies with an
exported graph never imports torch. A test holds the two canvases within 1e-3 of each other on the fixture's scans.
:class:`PreprocessConfig` lives here, torch-free, so both read the same card fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from signver_torch.errors import BlankSignatureError, SignVerError

#: kornia's ``get_gaussian_kernel1d(5, 1.0)``: the 5-tap blur before the Otsu split.
_BLUR = np.exp(-(np.arange(5, dtype=np.float32) - 2) ** 2 / np.float32(2.0))
_BLUR = (_BLUR / _BLUR.sum()).astype(np.float32)
#: darkness at or below this is never ink (:func:`~signver_torch.data.ink.ink_mask`'s floor)
_INK_FLOOR = 0.05


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of the signature preprocessing, stored in checkpoint cards (``preprocessing``)."""

    height: int = 112
    width: int = 192
    #: extra room around the ink bounding box, as a fraction of its size
    margin: float = 0.04
    #: fraction of ink mass ignored on each side when locating the box (stray specks)
    box_quantile: float = 0.002
    #: a crop whose ink covers less than this fraction of pixels, or whose ink is this faint, is blank
    min_ink_fraction: float = 0.0005
    min_contrast: float = 0.08
    #: Otsu's split is found on every ``otsu_sample``-th pixel of each row and column
    #: (:func:`~signver_torch.data.ink.ink_mask`); 1, on
    #: every pixel, is what cards written before the field replay (:meth:`from_card`)
    otsu_sample: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.otsu_sample, int) or isinstance(self.otsu_sample, bool) or self.otsu_sample < 1:
            raise ValueError(f"otsu_sample must be a whole number of pixels, at least 1, not {self.otsu_sample!r}")

    @classmethod
    def from_card(cls, fields: dict[str, Any]) -> "PreprocessConfig":
        """The config a checkpoint card's ``preprocessing`` records (fields it predates take their value of then)."""
        return cls(**{"otsu_sample": 1, **fields})


def ink_canvases(images: Sequence[np.ndarray], config: PreprocessConfig, *, strict: bool = True) -> np.ndarray:
    """``(N, 1, height, width)`` float32 ink canvases in ``[0, 1]`` (ink 1, paper 0) of ``(H, W)`` grayscale crops
    in ``[0, 1]`` (dark ink on light paper), each at its own size.

    Raises:
        BlankSignatureError: ``strict`` and a crop without ink (its indices); otherwise blank crops become zeros.
        SignVerError: an empty batch, a crop under 2x2 pixels or with NaN values.
    """
    if len(images) == 0:
        raise SignVerError("empty batch: no signatures to preprocess")
    canvases = np.zeros((len(images), 1, config.height, config.width), np.float32)
    blank = []
    for index, image in enumerate(images):
        canvas = ink_canvas(image, config)
        if canvas is None:
            blank.append(index)
        else:
            canvases[index] = canvas
    if strict and blank:
        raise BlankSignatureError(f"no signature ink found in batch item(s) {blank} (blank or uniform crop)", blank)
    return canvases


def ink_canvas(image: np.ndarray, config: PreprocessConfig) -> np.ndarray | None:
    """The ``(1, height, width)`` canvas of one ``(H, W)`` crop, or ``None`` where it has no ink."""
    gray = np.asarray(image, np.float32)
    if gray.ndim != 2 or min(gray.shape) < 2:
        raise SignVerError(f"signature crops must be (H, W) images of at least 2x2 pixels, got shape {gray.shape}")
    if not np.isfinite(gray).all():
        raise SignVerError("signature batch contains NaN or infinite values")
    ink = _ink(np.clip(gray, 0, 1), config)
    return None if ink is None else _canvas(ink, config)[None]


def _ink(gray: np.ndarray, config: PreprocessConfig) -> np.ndarray | None:
    """Ink intensity (paper 0) of one crop, or ``None`` where it has no ink (``remove_background``)."""
    darkness = np.float32(1.0) - gray
    mask = _otsu_mask(_blur(darkness), config.otsu_sample)
    inked = int(mask.sum())
    paper = float((darkness * ~mask).sum(dtype=np.float32)) / max(mask.size - inked, 1)
    level = float((darkness * mask).sum(dtype=np.float32)) / max(inked, 1)
    if inked / mask.size < config.min_ink_fraction or level - paper < config.min_contrast:
        return None
    return np.clip(np.maximum(darkness - np.float32(paper), 0) * mask, 0, 1)


def _blur(image: np.ndarray) -> np.ndarray:
    """The 5x5 Gaussian blur (sigma 1) with replicated borders, as five shifted sums per axis."""
    height, width = image.shape
    padded = np.pad(image, 2, mode="edge")
    rows = sum(_BLUR[i] * padded[:, i : i + width] for i in range(5))
    return sum(_BLUR[i] * rows[i : i + height, :] for i in range(5))  # type: ignore[return-value]


def _otsu_mask(darkness: np.ndarray, sample: int) -> np.ndarray:
    """kornia's ``otsu_threshold`` (256 bins over the plane's range, found on every ``sample``-th pixel), applied to
    every pixel, with :func:`~signver_torch.data.ink.ink_mask`'s floor."""
    values = darkness[::sample, ::sample].ravel()
    low, high = values.min(), values.max()
    if low == high:
        return np.zeros(darkness.shape, bool)
    width = high - low
    bins = np.clip(((values - low) * np.float32(256) / width).astype(np.int64), 0, 255)
    histogram = (np.bincount(bins, minlength=256) / np.float32(values.size)).astype(np.float32)
    levels = np.arange(256, dtype=np.float32)
    # summed in float64 and rounded, as torch's CPU cumsum does: near-ties of the split then go the same way
    weight = np.cumsum(histogram, dtype=np.float64).astype(np.float32)
    mass = np.cumsum(histogram * levels, dtype=np.float64).astype(np.float32)
    background, background_mass = weight[:-1], mass[:-1]
    foreground, foreground_mass = weight[-1] - background, mass[-1] - background_mass
    valid = (background > 0) & (foreground > 0)
    between = np.where(valid, background * foreground * (background_mass / np.where(background > 0, background, 1)
                                                          - foreground_mass / np.where(foreground > 0, foreground, 1)) ** 2, -1)
    between = np.where(histogram[:-1] > 0, between, -1).astype(np.float32)
    split = int(np.argmax(between))
    if between[split] <= 0:
        threshold = low
    else:
        edge = split + 1
        step = width / np.float32(256)
        threshold = low + np.float32(edge) * step if edge < 128 else high + np.float32(edge - 256) * step
        above = bins > split
        threshold = max(threshold, values[~above].max())
        threshold = min(threshold, np.nextafter(values[above].min(), np.float32(-np.inf)))
    return (darkness > threshold) & (darkness > _INK_FLOOR)


def _mass_interval(profile: np.ndarray, quantile: float) -> tuple[float, float]:
    """First and last index where the cumulative ink mass passes ``quantile`` and ``1 - quantile``."""
    cumulative = np.cumsum(profile, dtype=np.float64).astype(np.float32)  # as torch's CPU cumsum
    fraction = cumulative / max(float(cumulative[-1]), 1e-6)
    start = float((fraction < quantile).sum())
    return start, max(float((fraction < 1 - quantile).sum()), start)


def _canvas(ink: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The ink box, widened to the canvas's aspect ratio, warped onto the canvas (bilinear, zeros outside), its
    99.5th percentile brought to 1."""
    y0, y1 = _mass_interval(ink.sum(1), config.box_quantile)
    x0, x1 = _mass_interval(ink.sum(0), config.box_quantile)
    aspect = config.width / config.height
    width = max((x1 - x0 + 1) * (1 + 2 * config.margin), (y1 - y0 + 1) * (1 + 2 * config.margin) * aspect)
    height = width / aspect
    left, top = (x0 + x1) / 2 - width / 2, (y0 + y1) / 2 - height / 2
    columns = np.arange(config.width, dtype=np.float64) * (width / (config.width - 1)) + left
    rows = np.arange(config.height, dtype=np.float64) * (height / (config.height - 1)) + top
    canvas = _bilinear(ink, rows, columns)
    return np.clip(canvas / max(_kth_smallest(canvas.ravel(), max(1, round(0.995 * canvas.size))), 1e-3), 0, 1)


def _kth_smallest(values: np.ndarray, k: int) -> float:
    """The ``k``-th smallest of non-negative ``values`` (torch's ``kthvalue``), selected among the non-zero ones: a
    canvas is mostly paper, and numpy's selection slows down on that many equal values (half the canvas's time)."""
    ink = values[values > 0]
    rank = k - 1 - (values.size - ink.size)
    return float(np.partition(ink, rank)[rank]) if rank >= 0 else 0.0


def _bilinear(image: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``image`` sampled at every (row, column) of the two axes' coordinates, bilinearly, zero outside it."""
    height, width = image.shape
    padded = np.pad(image, 1)  # a zero border: a neighbour outside the image contributes nothing
    y0, x0 = np.floor(rows), np.floor(columns)
    fy, fx = (rows - y0).astype(np.float32)[:, None], (columns - x0).astype(np.float32)[None, :]
    y, x = y0.astype(np.int64), x0.astype(np.int64)
    iy, iy1, ix, ix1 = _padded_index(y, height), _padded_index(y + 1, height), _padded_index(x, width), _padded_index(x + 1, width)
    top = padded[iy][:, ix] * (1 - fx) + padded[iy][:, ix1] * fx
    bottom = padded[iy1][:, ix] * (1 - fx) + padded[iy1][:, ix1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _padded_index(index: np.ndarray, size: int) -> np.ndarray:
    """Indices into an axis of ``size`` as rows or columns of its zero-padded copy: outside it, the zero border."""
    return np.where((index >= 0) & (index < size), index + 1, 0)
