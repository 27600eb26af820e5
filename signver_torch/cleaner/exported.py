"""The cleaner's export run without torch, and the size bounds both cleaners share.

The host steps of :meth:`~signver_torch.cleaner.api.Cleaner._clean_batch` in numpy: a crop longer than ``max_side`` is
cleaned on an area-downscaled copy, padded with paper to the graph's multiple, and the result is cropped back and
scaled up bilinearly (torch's ``interpolate`` modes ``area`` and ``bilinear``, ``align_corners=False``, replayed; a
test holds the two cleaners within 1e-3 of each other on the fixture).
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from signver_torch.errors import ExportError, SignVerError
from signver_torch.runtime import ExportedFacade

#: Smallest crop side the cleaner accepts: below it there is no stroke to tell from a line.
MIN_SIDE = 8
#: Longest side a crop is cleaned at by default: larger crops are cleaned on an area-downscaled copy and the result
#: scaled back. The network learnt on 128-pixel-high pairs; what the bound costs in verification and saves in
#: time is measured in docs/cleaner.md, "Cleaning resolution".
MAX_SIDE = 384


def check_max_side(value: int | None) -> int | None:
    """``value`` if it is a bound a cleaner can clean at (``None``: every crop at its own size), else a clear error."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < MIN_SIDE):
        raise SignVerError(f"max_side must be a whole number of pixels, at least {MIN_SIDE}, or None; got {value!r}")
    return value


def _max_side(cleaner: Any) -> int | None:
    return cleaner._max_side


def _set_max_side(cleaner: Any, value: int | None) -> None:
    cleaner._max_side = check_max_side(value)


#: ``max_side`` of both cleaners (``Cleaner`` and :class:`ExportedCleaner`).
max_side_property = property(_max_side, _set_max_side, doc="The longest side a crop is cleaned at (``None``: its own "
                             "resolution); checked whenever it is set.")


def cleaning_scale(height: int, width: int, max_side: int | None) -> float:
    """The factor a ``height`` x ``width`` crop is cleaned at: its longer side at most ``max_side``, its shorter never
    below :data:`MIN_SIDE`."""
    return 1.0 if max_side is None else min(1.0, max(max_side / max(height, width), MIN_SIDE / min(height, width)))


class ExportedCleaner(ExportedFacade):
    """:class:`~signver_torch.cleaner.api.Cleaner`'s ``clean_pages`` over an export, without torch: what ``SignVer``
    cleans with under an exported backend (the tone curve is in the graph)."""

    module = "cleaner"
    default_batch_size = 16

    def __init__(self, backend: str = "auto", batch_size: int | None = None, max_side: int | None = MAX_SIDE,
                 on_cpu: bool | None = None) -> None:
        super().__init__(backend, batch_size, on_cpu)
        self.max_side = max_side
        self.stride = 1

    max_side = max_side_property

    def _configure(self, card: dict[str, Any], export_card: dict[str, Any], name_or_path: str | os.PathLike) -> None:
        try:
            self.stride = int(export_card["graph"]["multiple"])
        except (KeyError, TypeError, ValueError) as error:
            raise ExportError(f"{name_or_path}: the cleaner's export card lacks the graph's multiple ({error})") from error

    def clean_pages(self, pages: Sequence[np.ndarray], progress: bool = False) -> list[np.ndarray]:
        """Clean ``(1, H, W)`` grayscale arrays in ``[0, 1]``; crops of equal size share a batch."""
        graph = self.loaded_graph
        if len(pages) == 0:
            raise SignVerError("empty batch: no crops to clean")
        by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, page in enumerate(pages):
            if np.ndim(page) != 3 or np.shape(page)[0] != 1:
                raise SignVerError(f"crop {index}: expected a (1, H, W) grayscale array, got shape {np.shape(page)}")
            if min(np.shape(page)[-2:]) < MIN_SIDE:
                raise SignVerError(f"crop {index} is {page.shape[-2]}x{page.shape[-1]} pixels; the cleaner needs at least {MIN_SIDE}x{MIN_SIDE}")
            if not np.isfinite(page).all():
                raise SignVerError(f"crop {index} contains NaN or infinite values")
            by_size[tuple(np.shape(page))].append(index)
        cleaned: list[np.ndarray | None] = [None] * len(pages)
        groups = [indices[i : i + self.batch_size] for indices in by_size.values() for i in range(0, len(indices), self.batch_size)]
        for group in tqdm(groups, desc="cleaning", unit="batch", file=sys.stderr, disable=not progress, leave=False):
            batch = np.stack([np.asarray(pages[i], np.float32) for i in group])
            for i, page in zip(group, self._clean_batch(graph, batch)):
                cleaned[i] = page
        return cleaned  # type: ignore[return-value]

    def _clean_batch(self, graph: Any, batch: np.ndarray) -> np.ndarray:
        """Clean one ``(N, 1, H, W)`` batch of equal-size crops (see the module's docstring)."""
        height, width = batch.shape[-2:]
        scale = cleaning_scale(height, width, self.max_side)
        small = batch if scale == 1.0 else area_resize(batch, round(height * scale), round(width * scale))
        small_height, small_width = small.shape[-2:]
        padded = np.pad(small, [(0, 0), (0, 0), (0, -small_height % self.stride), (0, -small_width % self.stride)], constant_values=1.0)
        cleaned = np.asarray(graph(padded)[0], np.float32)[..., :small_height, :small_width]
        if scale == 1.0:
            return cleaned
        return np.clip(bilinear_resize(cleaned, height, width), 0, 1)


def area_resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """torch's ``interpolate(mode="area")`` (adaptive average pooling) of ``(..., H, W)`` float32 images."""
    def pool(array: np.ndarray, size: int, axis: int) -> np.ndarray:
        length = array.shape[axis]
        starts = (np.arange(size) * length) // size
        ends = -((-(np.arange(size) + 1) * length) // size)  # ceil
        total = np.concatenate([np.zeros_like(np.take(array, [0], axis)), np.cumsum(array, axis, dtype=np.float64)], axis)
        return (np.take(total, ends, axis) - np.take(total, starts, axis)) / (ends - starts).reshape([-1] + [1] * (array.ndim - 1 - axis))

    return pool(pool(images, height, images.ndim - 2), width, images.ndim - 1).astype(np.float32)


def bilinear_resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """torch's ``interpolate(mode="bilinear", align_corners=False)`` of ``(..., H, W)`` float32 images."""
    def axis_weights(length: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source = np.maximum((np.arange(size, dtype=np.float32) + 0.5) * np.float32(length / size) - 0.5, 0)
        low = np.minimum(source.astype(np.int64), length - 1)
        return low, np.minimum(low + 1, length - 1), (source - low).astype(np.float32)

    top, bottom, fy = axis_weights(images.shape[-2], height)
    left, right, fx = axis_weights(images.shape[-1], width)
    rows = images[..., top, :] * (1 - fy)[:, None] + images[..., bottom, :] * fy[:, None]
    return (rows[..., left] * (1 - fx) + rows[..., right] * fx).astype(np.float32)
