"""Handwriting on synthetic pages: the marks pasted with their exact ink boxes, and the ink they are cut from.

:class:`Marks` is what every page layout pastes through: a mark is scaled, placed where it overlaps no
other mark, and boxed by the tight box of its own ink (its pixels above :data:`INK_LEVEL`), which it
keeps (``pieces``) so a later warp (:mod:`~signver_torch.detector.photo`) can box it again exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from signver_torch.data.forms import FormPrinter
from signver_torch.errors import DataError

#: Darkness above which a pasted pixel counts as ink for its box.
INK_LEVEL = 0.15
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

Box = tuple[float, float, float, float]


@dataclass
class Marks:
    """The labelled marks of one page: boxes (xyxy), labels, the spots they hold (no other mark is pasted
    over them) and each mark's ink as ``(left, top, mask)`` (``None`` for a filled rectangle: a redaction)."""

    boxes: list[Box] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    spots: list[Box] = field(default_factory=list)
    pieces: list[tuple[int, int, np.ndarray] | None] = field(default_factory=list)

    def add_rectangle(self, box: Box, label: int) -> None:
        """A filled rectangle (a redaction), boxed by itself."""
        self.boxes.append(box)
        self.labels.append(label)
        self.pieces.append(None)

    def paste(self, darkness: np.ndarray, ink: np.ndarray, width: float, rng: np.random.Generator, label: int,
              bottom_left: tuple[int, int] | None = None, may_overlap: Box | None = None,
              allowed: Callable[[Box], bool] | None = None) -> bool:
        """Scale ``ink`` to ``width`` pixels, paste it at ``bottom_left`` or else where it overlaps no
        other mark (but ``may_overlap``) and ``allowed`` accepts the spot (a real page's blank areas),
        record its ink box. A mark that would overlap another one is left out; returns whether the
        mark was pasted."""
        page_h, page_w = darkness.shape
        scale = width / ink.shape[1]
        size = (max(2, round(ink.shape[1] * scale)), max(2, round(ink.shape[0] * scale)))
        if size[0] >= page_w - 4 or size[1] >= page_h - 4:
            return False
        mark = np.asarray(Image.fromarray(ink).resize(size, Image.BILINEAR)) * rng.uniform(0.7, 1.0)
        candidates = [bottom_left] if bottom_left is not None else [
            (int(rng.integers(0, page_w - size[0])), int(rng.integers(size[1], page_h))) for _ in range(20)
        ]
        for left, bottom in candidates:  # a free spot; give up quietly on a crowded page
            left = min(max(left, 0), page_w - size[0])
            top = min(max(bottom - size[1], 0), page_h - size[1])
            spot = (left, top, left + size[0], top + size[1])
            if not any(overlaps(spot, other) for other in self.spots if other is not may_overlap) and (
                    allowed is None or allowed(spot)):
                break
        else:
            return False
        inked = mark > INK_LEVEL
        rows, cols = np.nonzero(inked)
        if len(rows) == 0:
            return False
        region = darkness[top : top + size[1], left : left + size[0]]
        np.maximum(region, mark, out=region)
        self.spots.append(spot)
        self.boxes.append((left + cols.min(), top + rows.min(), left + cols.max() + 1.0, top + rows.max() + 1.0))
        self.labels.append(label)
        self.pieces.append((left, top, inked))
        return True

    def paste_into(self, darkness: np.ndarray, ink: np.ndarray, slot: Box, rng: np.random.Generator, label: int,
                   fill: tuple[float, float] = (0.5, 0.95), max_height: float | None = None) -> bool:
        """Paste ``ink`` inside ``slot`` (a box or the room above a rule), as wide as ``fill`` of it at
        most and never taller than it (nor than ``max_height``), its bottom in the lower part of the slot."""
        slot_w, slot_h = slot[2] - slot[0], slot[3] - slot[1]
        aspect = ink.shape[0] / ink.shape[1]
        width = min(slot_w * rng.uniform(*fill), min(slot_h * 0.95, max_height or slot_h) / aspect)
        if width < 6:
            return False
        height = width * aspect
        left = slot[0] + rng.uniform(0, max(slot_w - width, 0))
        bottom = slot[3] - rng.uniform(0, max(slot_h - height, 0) * 0.5)
        return self.paste(darkness, ink, width, rng, label, bottom_left=(int(left), int(bottom)))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.boxes, np.float32).reshape(-1, 4), np.asarray(self.labels, np.int64)


def write_words(darkness: np.ndarray, ink_maps: Sequence[np.ndarray], rng: np.random.Generator,
                left: int, baseline: int, width: float, height: float) -> int:
    """A line of cursive "words" (pieces of real signatures) from ``left`` until ``width`` is used,
    bottoms near ``baseline``, ``height`` tall: handwriting that is no signature (notes, filled-in
    fields). Returns the right end of the last word."""
    page_h, page_w = darkness.shape
    x, end = left, min(left + width, page_w)
    while True:
        word = word_of_ink(ink_maps[int(rng.integers(len(ink_maps)))], rng)
        scale = height / word.shape[0] * rng.uniform(0.8, 1.2)
        shape = (max(2, round(word.shape[1] * scale)), max(2, round(word.shape[0] * scale)))
        if x + shape[0] > end or shape[1] >= page_h:
            return x
        y = min(max(baseline - shape[1] + int(rng.normal(0, height * 0.08)), 0), page_h - shape[1])
        region = darkness[y : y + shape[1], x : x + shape[0]]
        np.maximum(region, np.asarray(Image.fromarray(word).resize(shape, Image.BILINEAR))[: region.shape[0]], out=region)
        x += shape[0] + int(height * rng.uniform(0.3, 0.9))


def handwritten_date(printer: FormPrinter, rng: np.random.Generator) -> np.ndarray:
    """A date written with a pen: slanted, wobbling glyphs of uneven weight, as an ink map."""
    day, month, year = int(rng.integers(1, 29)), int(rng.integers(1, 13)), int(rng.integers(1960, 2030))
    text = str(rng.choice([
        f"{month}/{day}/{year % 100:02d}", f"{day}.{month:02d}.{year}", f"{day}/{month}/{year}",
        f"{MONTHS[month - 1]} {day}, {year}", f"{day}-{MONTHS[month - 1]}-{year % 100:02d}", f"{year}-{month:02d}-{day:02d}",
    ]))
    font = printer.font(int(rng.integers(16, 28)))
    canvas = Image.new("L", (int(font.size * len(text) * 0.8) + 20, int(font.size * 1.8)), 0)
    draw = ImageDraw.Draw(canvas)
    x = 6.0
    for char in text:  # each glyph its own baseline wobble and size
        glyph_font = printer.font(max(8, int(font.size * rng.uniform(0.85, 1.15))))
        draw.text((x, 4 + rng.normal(0, font.size * 0.06)), char, fill=255, font=glyph_font)
        x += draw.textlength(char, font=glyph_font) * rng.uniform(0.95, 1.25)
    shear = rng.uniform(0.1, 0.45)
    canvas = canvas.transform(canvas.size, Image.AFFINE, (1, shear, -shear * canvas.height / 2, 0, 1, 0), Image.BILINEAR)
    if rng.random() < 0.3:  # a broad pen
        canvas = canvas.filter(ImageFilter.MaxFilter(3))
    ink = cropped_to_ink(np.asarray(canvas, np.float32) / 255)
    if ink is None:
        raise DataError(f"could not draw the date {text!r}")
    return ink


def tick(rng: np.random.Generator, size: int) -> np.ndarray:
    """A pen's check mark or cross, ``size`` pixels square, as an ink map (handwriting that is no signature)."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    pen = max(1, round(size * rng.uniform(0.08, 0.16)))
    jitter = lambda v: v + rng.normal(0, size * 0.05)  # noqa: E731 - a hand's wobble
    if rng.random() < 0.7:
        draw.line([(jitter(size * 0.1), jitter(size * 0.55)), (jitter(size * 0.4), jitter(size * 0.9)),
                   (jitter(size * 0.95), jitter(size * 0.05))], fill=255, width=pen)
    else:
        draw.line([(jitter(size * 0.1), jitter(size * 0.1)), (jitter(size * 0.9), jitter(size * 0.9))], fill=255, width=pen)
        draw.line([(jitter(size * 0.9), jitter(size * 0.1)), (jitter(size * 0.1), jitter(size * 0.9))], fill=255, width=pen)
    return np.asarray(canvas, np.float32) / 255


def first_strokes(ink: np.ndarray) -> np.ndarray:
    """Initials: the left part of a signature (its first letters), cut at a column with little ink."""
    profile = (ink > INK_LEVEL).sum(0)
    width = ink.shape[1]
    lo, hi = int(width * 0.15), max(int(width * 0.4), int(width * 0.15) + 2)
    cut = lo + int(np.argmin(profile[lo:hi]))
    part = cropped_to_ink(ink[:, : max(cut, 4)])
    return ink if part is None else part


def word_of_ink(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A handwritten "word": a random run of 15-45% of a signature's columns (a few letters), cropped to its ink."""
    width = ink.shape[1]
    start = int(rng.integers(0, max(1, width // 2)))
    stop = min(width, start + max(4, int(width * rng.uniform(0.15, 0.45))))
    part = cropped_to_ink(ink[:, start:stop])
    return ink if part is None else part


def cropped_to_ink(darkness: np.ndarray) -> np.ndarray | None:
    """``darkness`` cut to the box of its ink, or None where it has none."""
    rows, cols = np.nonzero(darkness > INK_LEVEL)
    if len(rows) == 0:
        return None
    return darkness[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def overlaps(a: Sequence[float], b: Sequence[float], pad: float = 4) -> bool:
    return a[0] < b[2] + pad and b[0] < a[2] + pad and a[1] < b[3] + pad and b[1] < a[3] + pad
