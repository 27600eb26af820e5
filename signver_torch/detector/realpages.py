"""Training pages made from the real ones (issue 33): more signatures on the real training pages, and the
detector's own confident mistakes on them shown to it, unlabelled, on synthetic pages.

:class:`RealPastes` pastes signatures onto the blank areas of real training pages: the ink of the training
writers, or a labelled signature cut from another real training page. Each new box is the tight box of its
own pasted ink (:class:`~signver_torch.detector.handwriting.Marks`), and the page's own labels stay as they
are: nothing is pasted over them. :class:`NegativePastes` pastes crops of a mined negatives file
(:func:`~signver_torch.detector.evaluation.mine_negatives`: handwriting that is no signature, logos, stamps,
script fonts the detector took for signatures) onto synthetic pages without a label, away from their marks.
Both read only the pages they are given: the DataModule gives them the real *training* pages, never the
held-out ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from signver_torch.data.detection import DetectionPages, PageRecord
from signver_torch.data.ink import ink_only
from signver_torch.detector.handwriting import Box, Marks
from signver_torch.detector.marks import Mark
from signver_torch.errors import DataError
from signver_torch.io import load_image

#: A real page's pixel this dark counts as print or writing: a pasted signature's spot must be (nearly) free of it.
PAGE_INK = 0.35
#: Share of a spot's pixels that may be that dark (scan specks) for the spot to count as blank.
SPECKS = 0.003
#: Share of the signatures pasted on a real page that are moved from another real page (the rest: writers' ink).
MOVED_SHARE = 0.5
#: Widths (pixels on a 640-pixel page) of the writers' signatures pasted on real pages, drawn log-uniformly
#: (the real labelled signatures: 10% under 90 px, median 160, 10% over 200).
REAL_WIDTHS = (60.0, 260.0)

#: A cut-out of a real page: its ink (darkness, paper 0) and its width as a share of its page's width.
Cut = tuple[np.ndarray, float]


class BlankAreas:
    """Whether a spot of a page holds next to no ink (``darkness`` above :data:`PAGE_INK`, ``pad`` pixels
    around it included): a summed-area table, so each spot costs four lookups."""

    def __init__(self, darkness: np.ndarray, pad: int = 6) -> None:
        inked = (darkness > PAGE_INK).astype(np.int64)
        self.table = np.pad(inked.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        self.pad = pad

    def __call__(self, spot: Box) -> bool:
        height, width = self.table.shape[0] - 1, self.table.shape[1] - 1
        x0, y0 = max(int(spot[0]) - self.pad, 0), max(int(spot[1]) - self.pad, 0)
        x1, y1 = min(int(spot[2]) + self.pad, width), min(int(spot[3]) + self.pad, height)
        t = self.table
        count = t[y1, x1] - t[y0, x1] - t[y1, x0] + t[y0, x0]
        return count <= SPECKS * (x1 - x0) * (y1 - y0)


def cut_ink(page: Image.Image, boxes: Sequence[Sequence[float]], blank: Sequence[Sequence[float]] = ()) -> list[Cut]:
    """The ink inside each of ``boxes`` (xyxy pixels) of ``page``, cut to itself, parts under ``blank``
    boxes (a page's labelled signatures, when the cut must hold none) set to paper; a box without ink is
    skipped."""
    gray = np.array(page.convert("L"))
    for x0, y0, x1, y1 in blank:
        gray[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = 255
    cuts = []
    for x0, y0, x1, y1 in boxes:
        crop = gray[max(int(y0), 0) : int(np.ceil(y1)), max(int(x0), 0) : int(np.ceil(x1))]
        if min(crop.shape) < 4:
            continue
        try:
            cuts.append((ink_only(Image.fromarray(crop), margin=0), crop.shape[1] / gray.shape[1]))
        except DataError:  # blank or all ink: nothing to paste
            continue
    return cuts


def paste_on(image: torch.Tensor, boxes: torch.Tensor, cuts: Sequence[Cut], rng: np.random.Generator, label: int,
             blank_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste ``cuts`` (at their share of the page's width, ±15%) on a ``(3, H, W)`` page, each
    where it overlaps none of ``boxes`` (nor another paste) and, with ``blank_only``, on a blank area;
    returns the page and the pasted marks' ink boxes. Ink darkens the page multiplicatively, as ink
    does paper."""
    layer = np.zeros(image.shape[-2:], np.float32)
    marks = Marks(spots=[tuple(box) for box in boxes.reshape(-1, 4).tolist()])
    allowed = BlankAreas(1 - image.mean(0).numpy()) if blank_only else None
    page_width = layer.shape[1]
    for ink, share in cuts:
        marks.paste(layer, ink, share * page_width * rng.uniform(0.85, 1.15), rng, label, allowed=allowed)
    pasted, _ = marks.arrays()
    return image * (1 - torch.from_numpy(layer)), torch.from_numpy(pasted)


class RealPastes(Dataset):
    """The real training pages ``repeat`` times over; a ``rate`` share of the items (drawn per item and
    epoch) get 1 to ``most`` signatures pasted on blank areas: half of them (:data:`MOVED_SHARE`) labelled
    signatures of *another* of ``records``, the rest ``ink_maps`` (the training writers), labelled
    :attr:`Mark.SIGNATURE` with exact boxes after the page's own."""

    def __init__(self, records: Sequence[PageRecord], ink_maps: Sequence[np.ndarray], rate: float, most: int,
                 seed: int = 0, repeat: int = 1) -> None:
        if not 0 <= rate <= 1 or most < 1:
            raise DataError(f"real pastes: the rate must be in [0, 1] and the most at least 1 (got {rate}, {most})")
        self.pages = DetectionPages(records)
        self.ink_maps, self.rate, self.most, self.seed, self.repeat, self.epoch = list(ink_maps), rate, most, seed, repeat, 0
        self.moved: list[tuple[int, Cut]] = []  # (page index, its signature)
        for index, record in enumerate(self.pages.records):
            signatures = [box for box, label in zip(record.boxes, record.labels) if label == Mark.SIGNATURE]
            if signatures:
                self.moved += [(index, cut) for cut in cut_ink(load_image(record.path), signatures)]
        if not self.ink_maps and not self.moved:
            raise DataError("real pastes: no signatures to paste (no writers' ink, no labelled real signatures)")

    def __len__(self) -> int:
        return len(self.pages) * self.repeat

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        page = index % len(self.pages)
        image, target = self.pages[page]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        if rng.random() >= self.rate:
            return image, target
        others = [cut for source, cut in self.moved if source != page]
        cuts = []
        for _ in range(int(rng.integers(1, self.most + 1))):
            if others and (not self.ink_maps or rng.random() < MOVED_SHARE):
                cuts.append(others[int(rng.integers(len(others)))])
            else:  # a writer's signature, as wide as the real ones
                ink = self.ink_maps[int(rng.integers(len(self.ink_maps)))]
                cuts.append((ink, np.exp(rng.uniform(*np.log(REAL_WIDTHS))) / 640))
        image, pasted = paste_on(image, target["boxes"], cuts, rng, int(Mark.SIGNATURE), blank_only=True)
        labels = torch.full((len(pasted),), int(Mark.SIGNATURE), dtype=target["labels"].dtype)
        return image, {**target, "boxes": torch.cat([target["boxes"].reshape(-1, 4), pasted]),
                       "labels": torch.cat([target["labels"], labels])}


def read_negatives(path: str | os.PathLike, records: Sequence[PageRecord]) -> list[Cut]:
    """The crops of a negatives file (:func:`~signver_torch.detector.evaluation.mine_negatives`) as ink,
    cut from ``records`` (the real training pages), any labelled signature of the page removed from them.
    A negative on another page (a held-out one, or another folder) is a :class:`DataError`."""
    try:
        negatives = json.loads(Path(path).read_text())["negatives"]
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{path}: not a negatives file ({error}); write one with `signver mine negatives`") from None
    by_name = {record.path.name: record for record in records}
    wanted: dict[str, list[list[float]]] = {}
    for item in negatives:
        if item["page"] not in by_name:
            raise DataError(f"{path}: {item['page']} is not a real training page here (held out, or of another folder); "
                            "mine again with the recipe's real_dir and held_out_every")
        wanted.setdefault(item["page"], []).append(item["box"])
    cuts = []
    for name, boxes in wanted.items():
        record = by_name[name]
        labelled = [box for box, label in zip(record.boxes, record.labels) if label == Mark.SIGNATURE]
        cuts += cut_ink(load_image(record.path), boxes, blank=labelled)
    if not cuts:
        raise DataError(f"{path}: no negatives to paste")
    return cuts


class NegativePastes(Dataset):
    """Synthetic pages of which a ``rate`` share (fixed per item, like the pages) get 1 to ``most`` mined
    negatives pasted without a label, overlapping none of the page's marks; boxes and labels unchanged."""

    def __init__(self, pages: Dataset, negatives: Sequence[Cut], rate: float, most: int, seed: int = 0) -> None:
        if not 0 <= rate <= 1 or most < 1:
            raise DataError(f"negative pastes: the rate must be in [0, 1] and the most at least 1 (got {rate}, {most})")
        self.pages, self.negatives, self.rate, self.most, self.seed = pages, list(negatives), rate, most, seed

    def __len__(self) -> int:
        return len(self.pages)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image, target = self.pages[index]
        rng = np.random.default_rng((self.seed, index, 1))  # a stream apart from the page's own (seed, index)
        if rng.random() >= self.rate:
            return image, target
        cuts = [self.negatives[int(rng.integers(len(self.negatives)))] for _ in range(int(rng.integers(1, self.most + 1)))]
        image, _ = paste_on(image, target["boxes"], cuts, rng, 0, blank_only=False)
        return image, target
