"""The cleaner's training data: synthetic dirty/clean signature pairs built from real signatures, and
its LightningDataModule.

A real signature (its paper made pure white, so only the ink is left) is placed on a patch; the patch
then gets what crops cut from real pages carry: ruled and signature lines (solid, dashed, dotted,
partial, several widths, slightly rotated), printed text and form labels crossing the ink, stamps,
uneven paper and illumination, blur, speckle and salt-and-pepper noise, JPEG artefacts and scanner
skew. The target is the same patch with the ink alone on white paper (skewed with it).

Everything is drawn from ``numpy.random.default_rng((seed, index))``: item ``i`` of a seed is the same
image on every machine, in every worker, in any order, so evaluation pairs are fixed by ``seed``.
"""

from __future__ import annotations

import io
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import lightning
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import DataLoader, Dataset

from signver_torch.data.forms import FORM_WORDS, FormPrinter
from signver_torch.data.ink import load_ink_maps
from signver_torch.data.samplers import StreamSampler, rank_and_world
from signver_torch.data.signatures import discover_signatures, writer_split
from signver_torch.errors import DataError


@dataclass(frozen=True)
class DirtConfig:
    """What the generator draws; probabilities per patch. Stored in the cleaner's checkpoint card."""

    height: int = 128
    width: int = 256
    #: signature size relative to fitting the patch, drawn uniformly; above 1 the patch shows part of
    #: the signature at a larger stroke width (crops come from pages scanned at many resolutions)
    min_scale: float = 0.5
    max_scale: float = 3.0
    #: darkness of the signature's ink on the dirty page, relative to the black target, drawn uniformly up to 1
    min_ink_strength: float = 0.35
    p_line: float = 0.8
    p_ruled: float = 0.25
    p_text: float = 0.6
    p_stamp: float = 0.25
    p_box: float = 0.2
    p_blur: float = 0.3
    p_jpeg: float = 0.4
    p_skew: float = 0.3
    p_salt_pepper: float = 0.3


class DirtSynthesizer(FormPrinter):
    """Draws one dirty/clean pair from an ink map (:func:`~signver_torch.data.ink.ink_only` output) and a random generator."""

    def __init__(self, config: DirtConfig | None = None) -> None:
        super().__init__()
        self.config = config or DirtConfig()

    def __call__(self, ink: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(dirty, clean)`` grayscale float32 arrays in ``[0, 1]``, paper light, ink dark."""
        cfg = self.config
        height, width = cfg.height, cfg.width
        clean = self._place(ink, rng, height, width)
        dirt = Image.new("L", (width, height), 0)  # darkness of everything that is not the signature
        draw = ImageDraw.Draw(dirt)
        ink_rows = np.nonzero(clean.any(1))[0]
        baseline = int(ink_rows.max()) if len(ink_rows) else height // 2
        if rng.random() < cfg.p_ruled:
            self._ruled_lines(draw, rng, width, height)
        if rng.random() < cfg.p_line:
            y = baseline + rng.integers(-height // 6, height // 10 + 1)
            self._line(draw, rng, width, int(np.clip(y, 2, height - 3)))
        if rng.random() < cfg.p_box:
            self._form_box(draw, rng, width, height)
        if rng.random() < cfg.p_text:
            for _ in range(rng.integers(1, 4)):
                self._text(draw, rng, width, height)
        if rng.random() < cfg.p_stamp:
            self.stamp(dirt, rng, width, height)
        # the pen on the page: real scans show ink anywhere from faint grey to black (the target stays black)
        pen = rng.uniform(cfg.min_ink_strength, 1.0)
        transmittance = (1 - clean * pen) * (1 - np.asarray(dirt, np.float32) / 255)
        dirty = transmittance * self._paper(rng, height, width)
        target = 1 - clean
        if rng.random() < cfg.p_skew:
            angle = rng.uniform(-3, 3)
            dirty, target = (_rotate(a, angle) for a in (dirty, target))
        dirty = self._scan_effects(dirty, rng)
        return dirty.astype(np.float32), target.astype(np.float32)

    def _place(self, ink: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """The ink scaled to the patch at a random size and position (parts may fall outside)."""
        cfg = self.config
        scale = rng.uniform(cfg.min_scale, cfg.max_scale) * min(height / ink.shape[0], width / ink.shape[1])
        size = (max(2, round(ink.shape[1] * scale)), max(2, round(ink.shape[0] * scale)))
        scaled = np.asarray(Image.fromarray(ink).resize(size, Image.BILINEAR))
        canvas = np.zeros((height, width), np.float32)
        top = int(rng.integers(min(0, height - size[1]), max(0, height - size[1]) + 1))
        left = int(rng.integers(min(0, width - size[0]), max(0, width - size[0]) + 1))
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + size[1], height), min(left + size[0], width)
        canvas[y0:y1, x0:x1] = scaled[y0 - top : y1 - top, x0 - left : x1 - left]
        return canvas

    @staticmethod
    def _line(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, y: int) -> None:
        """A signature or ruled line: solid, dashed or dotted, maybe partial, slightly sloped."""
        darkness = int(rng.uniform(0.35, 1.0) * 255)
        thickness = int(rng.choice([1, 1, 2, 2, 3, 4]))
        x0 = 0 if rng.random() < 0.6 else int(rng.integers(0, width // 2))
        x1 = width if rng.random() < 0.6 else int(rng.integers(width // 2, width + 1))
        slope = np.tan(np.radians(rng.uniform(-2, 2)))
        style = rng.choice(["solid", "solid", "dashed", "dotted"])
        dash, gap = (x1 - x0, 0) if style == "solid" else (
            (int(rng.integers(4, 14)), int(rng.integers(3, 8))) if style == "dashed" else (thickness, int(rng.integers(2, 5)))
        )
        x = x0
        while x < x1:
            end = min(x + dash, x1)
            draw.line([(x, y + (x - x0) * slope), (end, y + (end - x0) * slope)], fill=darkness, width=thickness)
            x = end + gap

    def _ruled_lines(self, draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
        spacing = int(rng.integers(max(8, height // 6), max(9, height // 2)))
        for y in range(int(rng.integers(0, spacing)), height, spacing):
            self._line(draw, rng, width, y)

    @staticmethod
    def _form_box(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
        """Cell borders of a form: a rectangle larger than the patch, or vertical rules."""
        darkness = int(rng.uniform(0.4, 1.0) * 255)
        thickness = int(rng.integers(1, 4))
        x0, x1 = int(rng.integers(-width // 4, width // 5)), int(rng.integers(width * 4 // 5, width * 5 // 4))
        y0, y1 = int(rng.integers(-height // 4, height // 5)), int(rng.integers(height * 4 // 5, height * 5 // 4))
        draw.rectangle([x0, y0, x1, y1], outline=darkness, width=thickness)

    def _text(self, draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
        """Printed words (form labels, names, numbers) placed anywhere, often across the ink."""
        if rng.random() < 0.6:
            words = str(rng.choice(FORM_WORDS))
        else:
            letters = string.ascii_letters + string.digits + " .,:/-"
            words = "".join(rng.choice(list(letters), int(rng.integers(4, 20))))
        size = int(rng.integers(max(7, height // 12), max(8, height // 4)))
        darkness = int(rng.uniform(0.4, 1.0) * 255)
        position = (int(rng.integers(-width // 4, width)), int(rng.integers(-size // 2, height)))
        draw.text(position, words, fill=darkness, font=self.font(size))

    @staticmethod
    def _paper(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Paper brightness with a smooth illumination gradient (uneven scanner light)."""
        level = rng.uniform(0.75, 1.0)
        gy, gx = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
        direction = rng.uniform(0, 2 * np.pi)
        gradient = (np.cos(direction) * gx + np.sin(direction) * gy) * rng.uniform(0, 0.15)
        return np.clip(level + gradient, 0.45, 1.0).astype(np.float32)

    def _scan_effects(self, page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config
        if rng.random() < 0.7:  # speckle: multiplicative grain of paper and sensor
            page = page * (1 + rng.normal(0, rng.uniform(0.01, 0.06), page.shape))
        if rng.random() < cfg.p_salt_pepper:
            amount = rng.uniform(0.001, 0.01)
            noise = rng.random(page.shape)
            page = np.where(noise < amount / 2, rng.uniform(0.0, 0.4), page)
            page = np.where(noise > 1 - amount / 2, 1.0, page)
        image = Image.fromarray((np.clip(page, 0, 1) * 255).astype(np.uint8))
        if rng.random() < cfg.p_blur:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
        if rng.random() < cfg.p_jpeg:
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=int(rng.integers(25, 90)))
            image = Image.open(buffer).convert("L")
        return np.asarray(image, np.float32) / 255


def _rotate(array: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate a ``[0, 1]`` page about its centre, filling with white paper."""
    image = Image.fromarray(array.astype(np.float32), mode="F")
    return np.asarray(image.rotate(degrees, resample=Image.BILINEAR, fillcolor=1.0), np.float32)


class DirtyPairs(Dataset):
    """``length`` dirty/clean pairs as ``(1, H, W)`` float tensors, item ``i`` fixed by ``(seed, i)``."""

    def __init__(
        self, ink_maps: Sequence[np.ndarray], length: int, seed: int = 0, config: DirtConfig | None = None
    ) -> None:
        if not ink_maps:
            raise DataError("no signatures to build dirty/clean pairs from")
        self.ink_maps = list(ink_maps)
        self.length = length
        self.seed = seed
        self.synthesizer = DirtSynthesizer(config)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, index))
        ink = self.ink_maps[int(rng.integers(len(self.ink_maps)))]
        dirty, clean = self.synthesizer(ink, rng)
        return torch.from_numpy(dirty)[None], torch.from_numpy(clean)[None]


#: Seed of the fixed validation/evaluation pairs (``signver evaluate cleaner``).
EVAL_SEED = 20261126
#: Seed of the training writers' pairs that fit a cleaner's tone curve (``signver calibrate cleaner``).
CALIBRATION_SEED = 20261127


#: Size of the index stream training pairs are drawn from (each index is a distinct pair).
STREAM_LENGTH = 2**31 - 1


class CleanerDataModule(lightning.LightningDataModule):
    """Dirty/clean pairs drawn on the fly from the training writers' signatures, fixed pairs from the held-out ones.

    Each epoch draws ``samples_per_epoch`` fresh pairs, shared out among the ranks (indices sampled
    from an unbounded stream, so no two epochs repeat); validation uses ``val_pairs`` pairs fixed by
    :data:`EVAL_SEED`, the same pairs ``signver evaluate cleaner`` builds from the same writers.
    """

    def __init__(
        self,
        data_dir: str | Path,
        train_writers: str | Sequence[str] | None = "1-32",
        val_writers: str | Sequence[str] | None = "33-40",
        height: int = 128,
        width: int = 256,
        batch_size: int = 16,
        samples_per_epoch: int = 2048,
        val_pairs: int = 256,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dirt = DirtConfig(height=height, width=width)
        self.train_set: DirtyPairs | None = None
        self.val_set: DirtyPairs | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        records = discover_signatures(hp.data_dir)
        train, val = writer_split(records, hp.train_writers, hp.val_writers)
        self.train_records, self.val_records = train, val
        self.train_set = DirtyPairs(load_ink_maps(train), STREAM_LENGTH, hp.seed, self.dirt)
        self.val_set = DirtyPairs(load_ink_maps(val), hp.val_pairs, EVAL_SEED, self.dirt)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        sampler = StreamSampler(STREAM_LENGTH, self.hparams.samples_per_epoch, self.hparams.seed, *rank_and_world(self.trainer))
        return DataLoader(
            self.train_set, self.hparams.batch_size, sampler=sampler, num_workers=self.hparams.num_workers,
            drop_last=True, persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "call setup() first"
        return DataLoader(self.val_set, self.hparams.batch_size * 2, num_workers=self.hparams.num_workers)
