"""What the detector does after its network, in numpy for every backend: torchvision's RetinaNet selection (top
candidates per pyramid level, class-wise NMS) and the box arithmetic it needs.

The network's outputs are a few thousand anchors per page, so numpy is as quick here as torchvision's ops, and the
exported path (:mod:`signver_torch.detector.exported`) runs without torch. A test holds the selection to torchvision's
``batched_nms`` on real pages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from signver_torch.errors import SignVerError


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``(N, M)`` intersection over union of ``(N, 4)`` and ``(M, 4)`` xyxy boxes (torchvision's ``box_iou``)."""
    first, second = np.asarray(first, np.float32).reshape(-1, 4), np.asarray(second, np.float32).reshape(-1, 4)
    area_first = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])
    area_second = (second[:, 2] - second[:, 0]) * (second[:, 3] - second[:, 1])
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0, None).prod(-1)
    with np.errstate(invalid="ignore", divide="ignore"):  # two empty boxes: NaN, as torchvision's
        return overlap / (area_first[:, None] + area_second[None, :] - overlap)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first (torchvision's ``nms``): a box
    is dropped when it overlaps a better kept one by more than ``threshold`` (IoU)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores), kind="stable")
    kept = []
    while len(order):
        best, order = order[0], order[1:]
        kept.append(best)
        order = order[~(box_iou(boxes[best], boxes[order])[0] > threshold)]  # NaN (empty boxes) kept, as torchvision
    return np.asarray(kept, np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """:func:`nms` within each label (torchvision's ``batched_nms``): indices kept, best score first."""
    kept = [np.flatnonzero(labels == label)[nms(boxes[labels == label], scores[labels == label], threshold)]
            for label in np.unique(labels)]
    indices = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    return indices[np.lexsort((indices, -scores[indices]))]  # best first; ties in the boxes' order, as torchvision


@dataclass(frozen=True)
class DetectionSelection:
    """torchvision's RetinaNet post-processing on :class:`~signver_torch.detector.model.RetinaNetGraph`'s outputs: per
    pyramid level the ``topk_candidates`` best (anchor, class) scores above ``score_thresh``, then class-wise NMS at
    ``nms_thresh``, the ``detections_per_img`` best kept. Its fields go into an export's card."""

    levels: tuple[int, ...]
    score_thresh: float
    topk_candidates: int
    nms_thresh: float
    detections_per_img: int

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "levels": list(self.levels)}

    def __call__(self, boxes: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
        """One page's ``(A, 4)`` boxes and ``(A, C)`` scores to its detections (``boxes``, ``scores``, ``labels``)."""
        classes = scores.shape[-1]
        if sum(self.levels) != len(boxes) or len(scores) != len(boxes):
            raise SignVerError(f"the selection expects {sum(self.levels)} anchors per page, the network gave {len(boxes)} "
                               f"boxes and {len(scores)} scores (an export of another input size?)")
        kept_boxes, kept_scores, kept_labels = [], [], []
        splits = np.cumsum(self.levels)[:-1]
        for level_boxes, level_scores in zip(np.split(boxes, splits), np.split(scores, splits)):
            flat = level_scores.ravel()
            candidates = np.flatnonzero(flat > self.score_thresh)
            candidates = candidates[np.argsort(-flat[candidates], kind="stable")[: self.topk_candidates]]
            kept_boxes.append(level_boxes[candidates // classes])
            kept_scores.append(flat[candidates])
            kept_labels.append(candidates % classes)
        found_boxes, found_scores, labels = np.concatenate(kept_boxes), np.concatenate(kept_scores), np.concatenate(kept_labels)
        keep = batched_nms(found_boxes, found_scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": found_boxes[keep].astype(np.float32), "scores": found_scores[keep].astype(np.float32), "labels": labels[keep]}


def page_detections(found: dict[str, np.ndarray], scale: float, height: int, width: int, threshold: float,
                    min_side: int) -> dict[str, np.ndarray]:
    """A letterboxed page's selected detections (:class:`DetectionSelection`) back in the page's pixels, clipped to it:
    those scoring at least ``threshold``, none on a page under ``min_side`` pixels on a side."""
    keep = found["scores"] >= threshold
    if min(height, width) < min_side:
        keep[:] = False
    boxes = found["boxes"][keep] / np.float32(scale)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return {"boxes": boxes.astype(np.float32), "scores": found["scores"][keep], "labels": found["labels"][keep]}
