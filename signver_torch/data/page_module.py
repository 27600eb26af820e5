"""Detector data: fixed-size letterboxed pages (synthetic and real), augmentation, a LightningDataModule.

Every page leaves this module as a ``(3, S, S)`` tensor (``S`` = ``image_size``): the page is scaled to
fit and padded with paper, so batches have static shapes (what HPU graphs need) and the network's own
resize is the identity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import lightning
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from signver_torch.data.detection import DetectionPages, PageRecord, read_detection_dataset, split_pages
from signver_torch.data.dirt import load_ink_maps
from signver_torch.data.pages import PageConfig, SyntheticPages
from signver_torch.data.signatures import discover_signatures, writer_split

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


class PageDataModule(lightning.LightningDataModule):
    """Synthetic pages (all four classes, signatures from the training writers) plus, optionally, the
    real labelled pages of ``real_dir`` not held out. Validation: the held-out real pages (every
    ``held_out_every``-th by file name) and fixed synthetic pages from the validation writers.
    """

    def __init__(
        self,
        signatures_dir: str | Path,
        train_writers: str = "1-32",
        val_writers: str = "33-40",
        real_dir: str | Path | None = None,
        held_out_every: int = 3,
        real_repeat: int = 2,
        synthetic_pages: int = 1000,
        val_synthetic_pages: int = 64,
        image_size: int = 640,
        batch_size: int = 4,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_set: Dataset | None = None
        self.val_sets: list[Dataset] = []
        self.real_train: list[PageRecord] = []
        self.real_val: list[PageRecord] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        records = discover_signatures(hp.signatures_dir)
        train_writers, val_writers = writer_split(records, hp.train_writers, hp.val_writers)
        config = PageConfig(size=hp.image_size)
        parts: list[Dataset] = [SyntheticPages(load_ink_maps(train_writers), hp.synthetic_pages, hp.seed, config)]
        if hp.real_dir is not None:
            self.real_train, self.real_val = split_pages(read_detection_dataset(hp.real_dir), hp.held_out_every)
            parts += [Letterboxed(DetectionPages(self.real_train), hp.image_size)] * hp.real_repeat
            self.val_sets.append(Letterboxed(DetectionPages(self.real_val), hp.image_size))
        self.train_set = Augmented(ConcatDataset(parts), hp.seed)
        self.val_sets.append(SyntheticPages(load_ink_maps(val_writers), hp.val_synthetic_pages, hp.seed + 10_000, config))

    @property
    def val_names(self) -> list[str]:
        return (["real"] if self.hparams.real_dir is not None else []) + ["synthetic"]

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        self.train_set.epoch = self.trainer.current_epoch if self.trainer is not None else 0  # type: ignore[attr-defined]
        generator = torch.Generator().manual_seed(self.hparams.seed * 1000 + (self.trainer.global_rank if self.trainer else 0))
        return DataLoader(
            self.train_set, self.hparams.batch_size, shuffle=True, generator=generator, drop_last=True,
            collate_fn=collate_pages, num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> list[DataLoader]:
        return [
            DataLoader(dataset, self.hparams.batch_size, collate_fn=collate_pages, num_workers=self.hparams.num_workers)
            for dataset in self.val_sets
        ]
