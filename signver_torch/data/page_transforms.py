"""Detector data: fixed-size letterboxed pages (synthetic and real) and their augmentation.

Every page leaves this module as a ``(3, S, S)`` tensor (``S`` = ``image_size``): the page is scaled to
fit and padded with paper, so batches have static shapes (what HPU graphs need) and the network's own
resize is the identity.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from signver_torch.errors import DataError


Target = dict[str, Any]


def letterbox(image: torch.Tensor, size: int) -> tuple[torch.Tensor, float]:
    """Scale ``(C, H, W)`` to fit ``size``×``size`` (aspect kept), pad right/bottom with white; returns the scale."""
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_h, new_w) != (height, width):
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)[0]
    return F.pad(image, (0, size - new_w, 0, size - new_h), value=1.0), scale


class Letterboxed(Dataset):
    """Wraps a detection dataset so every page is ``size``×``size`` (boxes scaled with it)."""

    def __init__(self, pages: Dataset, size: int) -> None:
        self.pages, self.size = pages, size

    def __len__(self) -> int:
        return len(self.pages)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        image, target = self.pages[index]
        image, scale = letterbox(image, self.size)
        return image, {**target, "boxes": target["boxes"] * scale}


class Augmented(Dataset):
    """Random zoom (crop or shrink), contrast, brightness and noise on fixed-size pages, seeded per item
    and epoch; boxes follow the zoom and those mostly cut away are dropped."""

    def __init__(self, pages: Dataset, seed: int = 0) -> None:
        self.pages, self.seed, self.epoch = pages, seed, 0

    def __len__(self) -> int:
        return len(self.pages)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        image, target = self.pages[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        size = image.shape[-1]
        zoom = rng.uniform(0.7, 1.4)
        scaled = F.interpolate(image[None], scale_factor=zoom, mode="bilinear", align_corners=False, antialias=zoom < 1)[0]
        boxes = target["boxes"] * zoom
        new = scaled.shape[-1]
        if new >= size:  # crop a window
            left, top = int(rng.integers(0, new - size + 1)), int(rng.integers(0, new - size + 1))
            scaled = scaled[:, top : top + size, left : left + size]
            boxes = boxes - torch.tensor([left, top, left, top], dtype=boxes.dtype)
        else:  # place the shrunken page on paper
            left, top = int(rng.integers(0, size - new + 1)), int(rng.integers(0, size - new + 1))
            scaled = F.pad(scaled, (left, size - new - left, top, size - new - top), value=1.0)
            boxes = boxes + torch.tensor([left, top, left, top], dtype=boxes.dtype)
        clipped = boxes.clamp(0, size)
        area = (boxes[:, 2:] - boxes[:, :2]).prod(1).clamp_min(1e-6)
        kept = (clipped[:, 2:] - clipped[:, :2]).clamp_min(0).prod(1) / area > 0.6
        contrast, brightness = rng.uniform(0.7, 1.3), rng.uniform(-0.1, 0.1)
        scaled = (scaled - 0.5) * contrast + 0.5 + brightness
        if rng.random() < 0.5:
            scaled = scaled + torch.from_numpy(rng.normal(0, rng.uniform(0.01, 0.05), scaled.shape[-2:]).astype(np.float32))
        return scaled.clamp(0, 1), {**target, "boxes": clipped[kept], "labels": target["labels"][kept]}


def collate_pages(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    images, targets = zip(*batch)
    return list(images), list(targets)


class PaddedTargets:
    """Collate pages into one ``(B, 3, S, S)`` tensor and targets padded to ``max_boxes`` per page:
    ``boxes`` ``(B, M, 4)`` float, ``labels`` ``(B, M)`` int32, ``present`` ``(B, M)`` bool.

    Done on the host, in the loader's workers, so the training step sees one shape every batch and
    never asks how many boxes a page has; boxes without area are dropped here, where torchvision
    would check for them on the device.
    """

    def __init__(self, max_boxes: int) -> None:
        if max_boxes < 1:
            raise ValueError(f"max_boxes must be at least 1, got {max_boxes}")
        self.max_boxes = max_boxes

    def __call__(self, batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, targets = zip(*batch)
        boxes = torch.zeros(len(batch), self.max_boxes, 4)
        labels = torch.zeros(len(batch), self.max_boxes, dtype=torch.int32)
        present = torch.zeros(len(batch), self.max_boxes, dtype=torch.bool)
        for index, target in enumerate(targets):
            page_boxes = target["boxes"].reshape(-1, 4).float()
            keep = (page_boxes[:, 2:] > page_boxes[:, :2]).all(1)
            page_boxes, page_labels = page_boxes[keep], target["labels"][keep]
            count = len(page_boxes)
            if count > self.max_boxes:
                raise DataError(f"a training page has {count} boxes, more than max_boxes={self.max_boxes} "
                                "(raise --data.max_boxes)")
            boxes[index, :count], labels[index, :count], present[index, :count] = page_boxes, page_labels, True
        return torch.stack(images), {"boxes": boxes, "labels": labels, "present": present}
