"""The detector's synthetic document pages, with exact boxes for all four classes.

A page is drawn like the real scans the detector meets (letters, forms and contracts resized to a
square): printed paragraphs, headings, tables and form fields; **signatures** pasted from real
training-writer signatures (their ink maps, see :func:`~signver_torch.data.ink.ink_only`);
**initials** (the first stroke group of a real signature, small, beside text or in a margin);
handwritten **dates** (digits and separators drawn with a slanted, wobbling pen); **redactions**
(filled black or grey bars over text); and scan effects over the whole page. Each box is the tight
box of what was drawn for it, so it covers exactly the pasted ink.

Item ``i`` of a seed is fixed by ``numpy.random.default_rng((seed, i))``, like the cleaner's pairs.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from signver_torch.data.forms import FORM_WORDS, FormPrinter
from signver_torch.errors import DataError

SIGNATURE, INITIALS, REDACTION, DATE = 1, 2, 3, 4
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: Lines above a letter's signature; the real pages (mostly letters) sign under one of these.
CLOSINGS = ("Sincerely,", "Sincerely yours,", "Very truly yours,", "Yours truly,", "Best regards,", "Thanks,",
            "Respectfully,", "Cordially,", "ACCEPTED:", "Approved by:", "Witness:", "By:")
TITLES = ("Vice President", "Director", "Secretary", "Manager, Marketing", "Research Administrator", "Ph.D.",
          "Senior Counsel", "Project Director", "Chairman", "Treasurer", "Associate Professor", "Sales Department")
#: Darkness above which a pasted pixel counts as ink for its box.
INK_LEVEL = 0.15


@dataclass(frozen=True)
class PageConfig:
    """Page size and how many marks of each class a page gets (drawn uniformly in ``[0, max]``)."""

    size: int = 640
    max_signatures: int = 3
    max_initials: int = 3
    max_dates: int = 2
    max_redactions: int = 3
    #: signature widths in pixels on the page, drawn log-uniformly (real pages: 36-330 px)
    min_signature_width: int = 40
    max_signature_width: int = 340
    #: chance that a printed block is a letter's signature block (closing, room to sign, typed name)
    signature_block_rate: float = 0.12
    #: chance of a handwritten note (unlabelled cursive lines; signed under it half of the time)
    handwritten_note_rate: float = 0.3
    #: chance that a loose signature has one or two more signed just under it (cheques, approval
    #: columns), each boxed apart although their ink nearly touches
    stacked_signature_rate: float = 0.15


@dataclass(frozen=True)
class PageLayers:
    """A synthetic page before scan effects: darkness of printed matter, of the labelled handwriting
    and of the unlabelled handwriting (notes), and the boxes."""

    printed: np.ndarray
    handwriting: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    notes: np.ndarray


class PageSynthesizer:
    """Draws one page: ``(gray page (H, W) float32 in [0, 1], boxes (K, 4) xyxy, labels (K,))``."""

    def __init__(self, config: PageConfig | None = None) -> None:
        self.config = config or PageConfig()
        self._printer = FormPrinter()  # the bundled font and the stamps the cleaner's pairs draw too

    def __call__(
        self, ink_maps: Sequence[np.ndarray], rng: np.random.Generator, signatures: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        layers = self.layers(ink_maps, rng, signatures)
        page = (1 - layers.printed) * (1 - layers.handwriting) * (1 - layers.notes)
        return self._scan(page, rng), layers.boxes, layers.labels

    def layers(
        self, ink_maps: Sequence[np.ndarray], rng: np.random.Generator, signatures: Sequence[np.ndarray] | None = None
    ) -> "PageLayers":
        """The page before scan effects: printed matter (with redactions) and handwriting, as darkness.

        ``signatures`` pastes exactly these ink maps as the page's signatures (an example page with a
        known signer); otherwise 0 to ``max_signatures`` are drawn from ``ink_maps``.
        """
        size = self.config.size
        handwriting = np.zeros((size, size), np.float32)
        printed = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(printed)
        text_lines, places = self._printed_layout(draw, rng, size)
        boxes: list[tuple[float, float, float, float]] = []
        labels: list[int] = []
        occupied: list[tuple[float, float, float, float]] = []

        for _ in range(int(rng.integers(0, self.config.max_redactions + 1))):
            self._redaction(draw, rng, text_lines, size, boxes, labels)
        # some signature blocks stay unsigned: a typed name alone is not a signature
        places = [place for place in places if rng.random() < 0.85]
        notes = np.zeros((size, size), np.float32)
        if rng.random() < self.config.handwritten_note_rate:
            self._handwritten_note(notes, ink_maps, rng, occupied, places)
        if signatures is not None:
            chosen = list(signatures)
        else:
            loose = max(0, int(rng.integers(0, self.config.max_signatures + 1)) - len(places))
            chosen = [ink_maps[int(rng.integers(len(ink_maps)))] for _ in range(len(places) + loose)]
        for index, ink in enumerate(chosen):
            if index < len(places):  # over its typed name, often touching it, like the real letters' signatures
                left, baseline = places[index]
                width = np.exp(rng.uniform(np.log(60), np.log(260)))
                self._paste(handwriting, ink, width, rng, SIGNATURE, boxes, labels, occupied, bottom_left=(left, baseline))
                continue
            width = np.exp(rng.uniform(np.log(self.config.min_signature_width), np.log(self.config.max_signature_width)))
            pasted = self._paste(handwriting, ink, width, rng, SIGNATURE, boxes, labels, occupied)
            if pasted and rng.random() < self.config.stacked_signature_rate:
                self._stack_signatures(handwriting, ink_maps, width, rng, boxes, labels, occupied)
        for _ in range(int(rng.integers(0, self.config.max_initials + 1))):
            ink = _first_strokes(ink_maps[int(rng.integers(len(ink_maps)))], rng)
            self._paste(handwriting, ink, rng.uniform(18, 60), rng, INITIALS, boxes, labels, occupied)
        for _ in range(int(rng.integers(0, self.config.max_dates + 1))):
            self._paste(handwriting, self._handwritten_date(rng), rng.uniform(50, 160), rng, DATE, boxes, labels, occupied)
        if rng.random() < 0.2:
            self._printer.stamp(printed, rng, size, size // 4)
        return PageLayers(
            np.asarray(printed, np.float32) / 255, handwriting,
            np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64), notes,
        )

    def _printed_layout(
        self, draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int
    ) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int]]]:
        """Headings, paragraphs, form fields, table rules and signature blocks; returns the boxes of
        the text lines and the places ``(left, baseline)`` left for signatures."""
        lines: list[tuple[int, int, int, int]] = []
        places: list[tuple[int, int]] = []
        y = int(rng.integers(10, 60))
        margin = int(rng.integers(20, 80))
        font_size = int(rng.integers(7, 13))
        font = self._printer.font(font_size)
        while y < size - 20:
            kind = rng.choice(["paragraph", "paragraph", "field", "heading", "gap", "table"])
            if kind == "gap":
                y += int(rng.integers(10, 60))
                continue
            if rng.random() < self.config.signature_block_rate:
                y = self._signature_block(draw, rng, size, margin, y, font, places)
                continue
            if kind == "heading":
                heading = self._printer.font(int(rng.integers(12, 22)))
                text = " ".join(_word(rng).upper() for _ in range(int(rng.integers(1, 4))))
                draw.text((margin + int(rng.integers(0, 150)), y), text, fill=255, font=heading)
                y += int(heading.size * 1.6)
            elif kind == "field":  # "Signature: ________"
                label = str(rng.choice(FORM_WORDS)) + ":"
                x = margin + int(rng.integers(0, size // 2))
                draw.text((x, y), label, fill=255, font=font)
                end = min(size - margin, x + int(rng.integers(120, 300)))
                draw.line([(x + font_size * len(label) * 0.6, y + font_size), (end, y + font_size)], fill=255, width=1)
                if rng.random() < 0.4:  # signed on the rule
                    places.append((int(x + font_size * len(label) * 0.6), y + font_size + int(rng.integers(-2, 6))))
                y += int(font_size * rng.uniform(2.5, 5))
            elif kind == "table":
                rows, top = int(rng.integers(2, 6)), y
                for _ in range(rows):
                    draw.line([(margin, y), (size - margin, y)], fill=255, width=1)
                    draw.text((margin + 4, y + 3), " ".join(_word(rng) for _ in range(int(rng.integers(2, 6)))), fill=255, font=font)
                    y += font_size + 8
                draw.line([(margin, y), (size - margin, y)], fill=255, width=1)
                draw.line([(margin, top), (margin, y)], fill=255, width=1)
                draw.line([(size - margin, top), (size - margin, y)], fill=255, width=1)
                y += 10
            else:
                for _ in range(int(rng.integers(1, 7))):
                    if y + font_size + 4 > size:
                        break
                    text, x = "", margin
                    right = size - margin - int(rng.integers(0, size // 3))
                    while draw.textlength(text, font=font) < right - x - 40:
                        text += _word(rng) + " "
                    draw.text((x, y), text, fill=255, font=font)
                    lines.append((x, y, int(x + draw.textlength(text, font=font)), y + font_size + 2))
                    y += int(font_size * 1.35)
                y += font_size
        return lines, places

    def _signature_block(self, draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, margin: int, y: int,
                         font: ImageFont.ImageFont, places: list[tuple[int, int]]) -> int:
        """A letter's closing, room to sign, the typed name and titles under it; one or two side by
        side (co-signers). The signature's place is recorded, its bottom near (often over) the name."""
        font_size = font.size
        columns = [margin + int(rng.integers(0, size // 2))]
        if rng.random() < 0.25 and columns[0] < size // 2 - 40:
            columns.append(columns[0] + size // 2 - int(rng.integers(0, 40)))
        name_y = y + font_size + int(rng.uniform(2, 6) * font_size)
        lines_below = int(rng.integers(0, 3))
        for x in columns:
            if rng.random() < 0.8:
                draw.text((x, y), str(rng.choice(CLOSINGS)), fill=255, font=font)
            name = f"{_word(rng).title()} {rng.choice(list(string.ascii_uppercase))}. {_word(rng).title()}"
            draw.text((x, name_y), name, fill=255, font=font)
            for line in range(lines_below):
                draw.text((x, name_y + int((line + 1) * font_size * 1.3)), str(rng.choice(TITLES)), fill=255, font=font)
            places.append((max(0, x + int(rng.integers(-15, 30))), name_y + int(rng.uniform(-0.3, 0.9) * font_size)))
        return name_y + int((lines_below + 1) * font_size * 1.3 + font_size * rng.uniform(1, 4))

    def _stack_signatures(self, darkness: np.ndarray, ink_maps: Sequence[np.ndarray], width: float, rng: np.random.Generator,
                          boxes: list, labels: list, occupied: list) -> None:
        """One or two signatures of other writers just under the last one pasted, left edges roughly
        aligned, the top of each reaching up to a quarter of its height into the one above."""
        for _ in range(int(rng.integers(1, 3))):
            above, above_spot = boxes[-1], occupied[-1]
            ink = ink_maps[int(rng.integers(len(ink_maps)))]
            new_width = width * rng.uniform(0.7, 1.3)
            height = ink.shape[0] * new_width / ink.shape[1]
            left = int(above[0] + rng.uniform(-0.15, 0.15) * width)
            bottom = int(above[3] + height * rng.uniform(0.75, 1.05))
            if bottom > darkness.shape[0]:  # no room under it
                return
            if not self._paste(darkness, ink, new_width, rng, SIGNATURE, boxes, labels, occupied,
                               bottom_left=(left, bottom), may_overlap=above_spot):
                return

    @staticmethod
    def _redaction(draw: ImageDraw.ImageDraw, rng: np.random.Generator, text_lines: list, size: int,
                   boxes: list, labels: list) -> None:
        """A filled black or grey bar, usually over part of a text line."""
        if text_lines and rng.random() < 0.8:
            x0, y0, x1, y1 = text_lines[int(rng.integers(len(text_lines)))]
            start = int(rng.integers(x0, max(x0 + 1, x1 - 40)))
            box = (start, y0 - 1, min(x1, start + int(rng.integers(30, 260))), y1 + 1)
        else:
            x0, y0 = int(rng.integers(0, size - 60)), int(rng.integers(0, size - 20))
            box = (x0, y0, min(size - 1, x0 + int(rng.integers(30, 300))), min(size - 1, y0 + int(rng.integers(8, 60))))
        box = (max(box[0], 0), max(box[1], 0), min(box[2], size - 1), min(box[3], size - 1))
        if box[2] - box[0] < 6 or box[3] - box[1] < 4:
            return
        draw.rectangle(box, fill=int(rng.choice([255, 255, 230, 180])))
        boxes.append(tuple(float(v) for v in (box[0], box[1], box[2] + 1, box[3] + 1)))
        labels.append(REDACTION)

    def _paste(self, darkness: np.ndarray, ink: np.ndarray, width: float, rng: np.random.Generator, label: int,
               boxes: list, labels: list, occupied: list, bottom_left: tuple[int, int] | None = None,
               may_overlap: tuple[float, ...] | None = None) -> bool:
        """Scale ``ink`` to ``width`` pixels, paste it at ``bottom_left`` or else where it overlaps no
        other mark (but ``may_overlap``), record its ink box. A mark that would overlap another one is
        left out; returns whether the mark was pasted."""
        scale = width / ink.shape[1]
        size = (max(2, round(ink.shape[1] * scale)), max(2, round(ink.shape[0] * scale)))
        if size[0] >= darkness.shape[1] - 4 or size[1] >= darkness.shape[0] - 4:
            return False
        mark = np.asarray(Image.fromarray(ink).resize(size, Image.BILINEAR)) * rng.uniform(0.7, 1.0)
        candidates = [bottom_left] if bottom_left is not None else [
            (int(rng.integers(0, darkness.shape[1] - size[0])), int(rng.integers(size[1], darkness.shape[0]))) for _ in range(20)
        ]
        for left, bottom in candidates:  # a free spot; give up quietly on a crowded page
            left = min(max(left, 0), darkness.shape[1] - size[0])
            top = min(max(bottom - size[1], 0), darkness.shape[0] - size[1])
            spot = (left, top, left + size[0], top + size[1])
            if not any(_overlaps(spot, other) for other in occupied if other is not may_overlap):
                break
        else:
            return False
        rows, cols = np.nonzero(mark > INK_LEVEL)
        if len(rows) == 0:
            return False
        region = darkness[top : top + size[1], left : left + size[0]]
        np.maximum(region, mark, out=region)
        occupied.append(spot)
        boxes.append((left + cols.min(), top + rows.min(), left + cols.max() + 1.0, top + rows.max() + 1.0))
        labels.append(label)
        return True

    @staticmethod
    def _handwritten_note(darkness: np.ndarray, ink_maps: Sequence[np.ndarray], rng: np.random.Generator,
                          occupied: list, places: list[tuple[int, int]]) -> None:
        """Lines of cursive "words" (pieces of real signatures) that no label covers: the real pages'
        handwritten letters and margin notes, which are not signatures. Half of the notes are signed
        a line or two under their last line, as a handwritten letter is."""
        size = darkness.shape[0]
        height = rng.uniform(9, 20)  # of a word, ascenders included
        width, rows = int(rng.uniform(120, size * 0.75)), int(rng.integers(1, 8))
        spacing = int(height * rng.uniform(1.3, 2.0))
        left, top = int(rng.integers(0, size - width)), int(rng.integers(0, max(1, size - rows * spacing - height)))
        spot = (left, top, left + width, top + rows * spacing + int(height))
        if any(_overlaps(spot, other) for other in occupied):
            return
        for row in range(rows):
            x, end = left, left + width * (rng.uniform(0.5, 1.0) if row == rows - 1 else 1.0)
            while True:
                word = _word_of_ink(ink_maps[int(rng.integers(len(ink_maps)))], rng)
                scale = height / word.shape[0] * rng.uniform(0.8, 1.2)
                shape = (max(2, round(word.shape[1] * scale)), max(2, round(word.shape[0] * scale)))
                if x + shape[0] > end:
                    break
                y = top + row * spacing + int(rng.normal(0, height * 0.08))
                y = min(max(y, 0), size - shape[1])
                region = darkness[y : y + shape[1], x : x + shape[0]]
                np.maximum(region, np.asarray(Image.fromarray(word).resize(shape, Image.BILINEAR))[: region.shape[0]], out=region)
                x += shape[0] + int(height * rng.uniform(0.3, 0.9))
        occupied.append(spot)
        if rng.random() < 0.5:
            places.append((left + int(rng.uniform(0, 0.5) * width), spot[3] + int(height * rng.uniform(2.0, 4.5))))

    def _handwritten_date(self, rng: np.random.Generator) -> np.ndarray:
        """A date written with a pen: slanted, wobbling glyphs of uneven weight, as an ink map."""
        day, month, year = int(rng.integers(1, 29)), int(rng.integers(1, 13)), int(rng.integers(1960, 2030))
        text = str(rng.choice([
            f"{month}/{day}/{year % 100:02d}", f"{day}.{month:02d}.{year}", f"{day}/{month}/{year}",
            f"{MONTHS[month - 1]} {day}, {year}", f"{day}-{MONTHS[month - 1]}-{year % 100:02d}", f"{year}-{month:02d}-{day:02d}",
        ]))
        font = self._printer.font(int(rng.integers(16, 28)))
        canvas = Image.new("L", (int(font.size * len(text) * 0.8) + 20, int(font.size * 1.8)), 0)
        draw = ImageDraw.Draw(canvas)
        x = 6.0
        for char in text:  # each glyph its own baseline wobble and size
            glyph_font = self._printer.font(max(8, int(font.size * rng.uniform(0.85, 1.15))))
            draw.text((x, 4 + rng.normal(0, font.size * 0.06)), char, fill=255, font=glyph_font)
            x += draw.textlength(char, font=glyph_font) * rng.uniform(0.95, 1.25)
        shear = rng.uniform(0.1, 0.45)
        canvas = canvas.transform(canvas.size, Image.AFFINE, (1, shear, -shear * canvas.height / 2, 0, 1, 0), Image.BILINEAR)
        if rng.random() < 0.3:  # a broad pen
            canvas = canvas.filter(ImageFilter.MaxFilter(3))
        ink = _cropped_to_ink(np.asarray(canvas, np.float32) / 255)
        if ink is None:
            raise DataError(f"could not draw the date {text!r}")
        return ink

    @staticmethod
    def _scan(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Paper tone, noise, blur, sometimes binarisation (fax-like scans) and JPEG."""
        page = page * rng.uniform(0.85, 1.0)
        if rng.random() < 0.5:
            page = page * (1 + rng.normal(0, rng.uniform(0.01, 0.05), page.shape))
        image = Image.fromarray((np.clip(page, 0, 1) * 255).astype(np.uint8))
        if rng.random() < 0.3:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
        if rng.random() < 0.3:
            threshold = int(rng.integers(100, 180))
            image = image.point(lambda v: 255 if v > threshold else 0)
        return np.asarray(image, np.float32) / 255


def _first_strokes(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Initials: the left part of a signature (its first letters), cut at a column with little ink."""
    profile = (ink > INK_LEVEL).sum(0)
    width = ink.shape[1]
    lo, hi = int(width * 0.15), max(int(width * 0.4), int(width * 0.15) + 2)
    cut = lo + int(np.argmin(profile[lo:hi]))
    part = _cropped_to_ink(ink[:, : max(cut, 4)])
    return ink if part is None else part


def _word_of_ink(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A handwritten "word": a random run of 15-45% of a signature's columns (a few letters), cropped to its ink."""
    width = ink.shape[1]
    start = int(rng.integers(0, max(1, width // 2)))
    stop = min(width, start + max(4, int(width * rng.uniform(0.15, 0.45))))
    part = _cropped_to_ink(ink[:, start:stop])
    return ink if part is None else part


def _cropped_to_ink(darkness: np.ndarray) -> np.ndarray | None:
    """``darkness`` cut to the box of its ink, or None where it has none."""
    rows, cols = np.nonzero(darkness > INK_LEVEL)
    if len(rows) == 0:
        return None
    return darkness[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _overlaps(a: tuple[float, ...], b: tuple[float, ...], pad: float = 4) -> bool:
    return a[0] < b[2] + pad and b[0] < a[2] + pad and a[1] < b[3] + pad and b[1] < a[3] + pad


def _word(rng: np.random.Generator) -> str:
    return "".join(rng.choice(list(string.ascii_lowercase), int(rng.integers(2, 10))))
