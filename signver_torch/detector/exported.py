"""The detector's export run without torch: pages letterboxed in numpy (PIL's antialiased bilinear, which torch's
``interpolate(antialias=True)`` reproduces), the graph, then :class:`~signver_torch.detector.selection.DetectionSelection`;
and the card fields both detectors read."""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from signver_torch.errors import CheckpointError, ExportError, SignVerError
from signver_torch.io import ImageSource, load_image_array
from signver_torch.detector.selection import DetectionSelection, page_detections
from signver_torch.runtime import ExportedFacade

#: Pages smaller than this (either side) hold nothing to detect: an empty result, not an error.
MIN_PAGE_SIDE = 16
#: The score threshold of a checkpoint whose card has no ``score_threshold`` (``signver calibrate detector`` writes one).
DEFAULT_SCORE_THRESHOLD = 0.3


def card_score_threshold(card: Mapping[str, Any], where: str | os.PathLike) -> float:
    """A detector card's ``score_threshold`` (chosen on validation pages), or the default 0.3 of cards without one."""
    value = card.get("score_threshold", DEFAULT_SCORE_THRESHOLD)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise CheckpointError(f"{where}: the card's score_threshold {value!r} is not a score between 0 and 1")
    return float(value)


def card_image_size(card: Mapping[str, Any], where: str | os.PathLike) -> int:
    """The side of the square a detector card's network reads pages at (``architecture.image_size``)."""
    try:
        return int(card["architecture"]["image_size"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: the card's architecture lacks a valid image_size ({error})") from error


def letterboxed_array(page: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """:func:`~signver_torch.detector.transforms.letterbox` in numpy: a ``(C, H, W)`` float32 page scaled to fit
    ``size`` x ``size`` (aspect kept, antialiased bilinear), padded right and bottom with white; and the scale."""
    height, width = page.shape[-2:]
    scale = size / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_height, new_width) != (height, width):
        page = np.stack([np.asarray(Image.fromarray(channel, "F").resize((new_width, new_height), Image.BILINEAR))
                         for channel in page.astype(np.float32, copy=False)])
    boxed = np.ones((page.shape[0], size, size), np.float32)
    boxed[:, :new_height, :new_width] = page
    return boxed, scale


class ExportedDetector(ExportedFacade):
    """:class:`~signver_torch.detector.api.Detector`'s ``predict`` over an export, without torch: detections as numpy
    arrays (``boxes`` xyxy in the page's pixels, ``scores``, ``labels``)."""

    module = "detector"
    default_batch_size = 4

    def _configure(self, card: dict[str, Any], export_card: dict[str, Any], name_or_path: str | os.PathLike) -> None:
        self.image_size, self.score_threshold = card_image_size(card, name_or_path), card_score_threshold(card, name_or_path)
        try:
            entry = dict(export_card["graph"]["selection"])
            self.selection = DetectionSelection(**{**entry, "levels": tuple(entry["levels"])})
        except (KeyError, TypeError, ValueError) as error:
            raise ExportError(f"{name_or_path}: the export card lacks the detector's selection ({error})") from error

    def predict(self, images: Sequence[ImageSource], score_threshold: float | None = None,
                progress: bool = False) -> list[dict[str, np.ndarray]]:
        """Detections per page (``boxes``, ``scores``, ``labels``), those scoring at least ``score_threshold``
        (default: the card's)."""
        graph = self.loaded_graph
        threshold = self.score_threshold if score_threshold is None else score_threshold
        if isinstance(images, (str, bytes, os.PathLike)) or not isinstance(images, Sequence):
            raise SignVerError("predict() takes a list of pages: wrap a single page in a list")
        pages = [load_image_array(item, "RGB", name=None if isinstance(item, (str, os.PathLike)) else f"page {i}")
                 for i, item in enumerate(images)]
        results: list[dict[str, np.ndarray]] = []
        starts = range(0, len(pages), self.batch_size)
        for start in tqdm(starts, desc="detecting", unit="batch", file=sys.stderr, disable=not progress, leave=False):
            group = pages[start : start + self.batch_size]
            boxed = [letterboxed_array(page, self.image_size) for page in group]
            all_boxes, all_scores = graph(np.stack([image for image, _ in boxed]))
            for page, (_, scale), boxes, scores in zip(group, boxed, all_boxes, all_scores):
                results.append(page_detections(self.selection(np.asarray(boxes), np.asarray(scores)), scale, *page.shape[-2:],
                                               threshold, MIN_PAGE_SIDE))
        return results
