"""The detector's training data: synthetic pages as a dataset (and written as a YOLO folder), real
pages letterboxed, page augmentation, collation and the LightningDataModule.

Every page leaves this module as a ``(3, S, S)`` tensor (``S`` = ``image_size``): the page is scaled to
fit and padded with paper (:func:`~signver_torch.detector.transforms.letterbox`), so batches have
static shapes (what HPU graphs need) and the network's own resize is the identity.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Sequence

import lightning
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm.auto import tqdm

from signver_torch.data.detection import CLASS_NAMES, DetectionPages, PageRecord, read_detection_dataset, split_pages
from signver_torch.data.ink import load_ink_maps
from signver_torch.data.samplers import ShuffledSampler, rank_and_world
from signver_torch.data.signatures import discover_signatures, writer_split
from signver_torch.detector.pages import PageConfig, PageSynthesizer
from signver_torch.detector.realpages import NegativePastes, RealPastes, read_negatives
from signver_torch.detector.transforms import letterbox
from signver_torch.errors import DataError

Target = dict[str, Any]


class SyntheticPages(Dataset):
    """``length`` synthetic pages as detection samples: ``(3, S, S)`` image and a torchvision target."""

    def __init__(self, ink_maps: Sequence[np.ndarray], length: int, seed: int = 0, config: PageConfig | None = None) -> None:
        if not ink_maps:
            raise DataError("no signatures to paste on synthetic pages")
        self.ink_maps = list(ink_maps)
        self.length = length
        self.seed = seed
        self.synthesizer = PageSynthesizer(config)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor | str]]:
        page, boxes, labels = self.synthesizer(self.ink_maps, np.random.default_rng((self.seed, index)))
        image = torch.from_numpy(page)[None].expand(3, -1, -1).contiguous()
        return image, {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels), "image_id": f"synthetic-{self.seed}-{index}"}


#: ``--class-map`` that reads :func:`write_yolo_pages` folders back as SignVer labels.
YOLO_CLASS_MAP = "0:1,1:2,2:3,3:4"


def write_yolo_pages(pages: SyntheticPages, root: str | os.PathLike, progress: bool = True) -> Path:
    """Save synthetic pages as a YOLO folder (``images/*.png``, ``labels/*.txt``, YOLO class = SignVer
    label − 1), so the evaluate command scores all four classes on them:
    ``signver evaluate detector --data ROOT --class-map 0:1,1:2,2:3,3:4``."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise DataError(f"{root}: exists and is not empty; choose a new folder for the pages")
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    for index in tqdm(range(len(pages)), desc="drawing pages", unit="page", file=sys.stderr, disable=not progress):
        image, target = pages[index]
        name = f"page-{pages.seed}-{index:05d}"
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(root / "images" / f"{name}.png")
        height, width = image.shape[-2:]
        lines = [
            f"{int(label) - 1} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}"
            for (x0, y0, x1, y1), label in zip(target["boxes"].tolist(), target["labels"].tolist())
        ]
        (root / "labels" / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
    (root / "classes.txt").write_text("".join(f"{CLASS_NAMES[label]}\n" for label in sorted(CLASS_NAMES)))
    return root


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


class PageDataModule(lightning.LightningDataModule):
    """Synthetic pages (all four classes, signatures from the training writers) plus, optionally, the
    real labelled pages of ``real_dir`` not held out. Validation: the held-out real pages (every
    ``held_out_every``-th by file name) and fixed synthetic pages from the validation writers.

    ``max_boxes`` pads every training page's boxes to that many on the host (:class:`PaddedTargets`):
    batches of one shape, which the detector's loss reads without a host sync; ``None`` keeps
    torchvision's list of targets. ``layouts`` mixes the synthetic page families (``{"letter": 0.4,
    "sheet": 0.2, ...}``, default letters only) and ``photo_rate`` photographs that share of them;
    synthetic validation pages use the same mix. Non-square families are letterboxed like real pages.

    Off by default: ``real_paste_rate`` pastes 1 to ``real_paste_max`` more signatures on that share of
    the real training pages' items (:class:`~signver_torch.detector.realpages.RealPastes`: the training
    writers' ink, or signatures moved from another real training page); ``negatives`` (a file written by
    ``signver mine negatives``) with ``negative_rate`` pastes 1 to ``negative_max`` of its crops, unlabelled,
    on that share of the synthetic training pages. Held-out pages are never pasted on, nor cut from.
    """

    def __init__(
        self,
        signatures_dir: list[str] | str | Path,
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
        max_boxes: int | None = None,
        layouts: dict[str, float] | None = None,
        photo_rate: float = 0.0,
        real_paste_rate: float = 0.0,
        real_paste_max: int = 3,
        negatives: str | Path | None = None,
        negative_rate: float = 0.0,
        negative_max: int = 2,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_collate = PaddedTargets(max_boxes) if max_boxes else collate_pages
        self.train_set: Dataset | None = None
        self.val_sets: list[Dataset] = []
        self.real_train: list[PageRecord] = []
        self.real_val: list[PageRecord] = []
        self.real_pastes: RealPastes | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        records = discover_signatures(hp.signatures_dir)
        train_writers, val_writers = writer_split(records, hp.train_writers, hp.val_writers)
        config = PageConfig(size=hp.image_size, layouts=hp.layouts or {"letter": 1.0}, photo_rate=hp.photo_rate)
        train_maps = load_ink_maps(train_writers)
        if hp.real_dir is not None:
            self.real_train, self.real_val = split_pages(read_detection_dataset(hp.real_dir), hp.held_out_every)
        synthetic: Dataset = SyntheticPages(train_maps, hp.synthetic_pages, hp.seed, config)
        if hp.real_paste_rate > 0 and hp.real_dir is None:
            raise DataError("real_paste_rate needs real_dir: the real training pages it pastes signatures on")
        if hp.negatives is not None and hp.negative_rate <= 0:
            raise DataError(f"{hp.negatives}: negatives are pasted only with negative_rate > 0 (it is {hp.negative_rate})")
        if hp.negative_rate > 0:
            if hp.negatives is None or hp.real_dir is None:
                raise DataError("negative_rate needs negatives (a file of `signver mine negatives`) and the real_dir it was mined on")
            synthetic = NegativePastes(synthetic, read_negatives(hp.negatives, self.real_train), hp.negative_rate,
                                       hp.negative_max, hp.seed)
        parts: list[Dataset] = [Letterboxed(synthetic, hp.image_size)]
        if hp.real_dir is not None:
            if hp.real_paste_rate > 0:  # the repeats in one dataset, so each repeat gets pastes of its own
                self.real_pastes = RealPastes(self.real_train, train_maps, hp.real_paste_rate, hp.real_paste_max, hp.seed,
                                              hp.real_repeat)
                parts.append(Letterboxed(self.real_pastes, hp.image_size))
            else:
                parts += [Letterboxed(DetectionPages(self.real_train), hp.image_size)] * hp.real_repeat
            self.val_sets.append(Letterboxed(DetectionPages(self.real_val), hp.image_size))
        self.train_set = Augmented(ConcatDataset(parts), hp.seed)
        self.val_sets.append(Letterboxed(SyntheticPages(load_ink_maps(val_writers), hp.val_synthetic_pages, hp.seed + 10_000,
                                                        config), hp.image_size))

    @property
    def val_names(self) -> list[str]:
        return (["real"] if self.hparams.real_dir is not None else []) + ["synthetic"]

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        self.train_set.epoch = epoch  # type: ignore[attr-defined]
        if self.real_pastes is not None:  # new pastes every epoch, like the augmentation
            self.real_pastes.epoch = epoch
        sampler = ShuffledSampler(len(self.train_set), self.hparams.seed, *rank_and_world(self.trainer))
        return DataLoader(
            self.train_set, self.hparams.batch_size, sampler=sampler, drop_last=True,
            collate_fn=self.train_collate, num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> list[DataLoader]:
        return [
            DataLoader(dataset, self.hparams.batch_size, collate_fn=collate_pages, num_workers=self.hparams.num_workers)
            for dataset in self.val_sets
        ]
