"""The detector's synthetic document pages, with exact boxes for all four classes.

A page is one of the families people sign (:data:`~signver_torch.detector.layouts.FAMILIES`). A
``letter`` is drawn like the real scans (letters resized to a square): printed paragraphs, headings,
tables, form fields and signature blocks; **signatures** pasted from real training-writer signatures
(their ink maps, see :func:`~signver_torch.data.ink.ink_only`); **initials** (the first stroke group of
a real signature); handwritten **dates**; **redactions** (filled bars over text). The other families
(signature sheets, forms, cheques, contracts: :mod:`~signver_torch.detector.layouts`) print their own
matter and say where handwriting goes; their slots are filled here. Then scan effects, or a phone
photo (:mod:`~signver_torch.detector.photo`). Each box is the tight box of what was drawn for it.

Item ``i`` of a seed is fixed by ``numpy.random.default_rng((seed, i))``, like the cleaner's pairs.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from signver_torch.data.forms import FORM_WORDS, FormPrinter
from signver_torch.detector.handwriting import (
    INK_LEVEL, Marks, first_strokes, handwritten_date, overlaps, tick, write_words,
)
from signver_torch.detector.layouts import FAMILIES, LAYOUTS, word
from signver_torch.detector.photo import photograph
from signver_torch.errors import DataError

SIGNATURE, INITIALS, REDACTION, DATE = 1, 2, 3, 4
#: Lines above a letter's signature; the real pages (mostly letters) sign under one of these.
CLOSINGS = ("Sincerely,", "Sincerely yours,", "Very truly yours,", "Yours truly,", "Best regards,", "Thanks,",
            "Respectfully,", "Cordially,", "ACCEPTED:", "Approved by:", "Witness:", "By:")
TITLES = ("Vice President", "Director", "Secretary", "Manager, Marketing", "Research Administrator", "Ph.D.",
          "Senior Counsel", "Project Director", "Chairman", "Treasurer", "Associate Professor", "Sales Department")
__all__ = ["FAMILIES", "INK_LEVEL", "PageConfig", "PageLayers", "PageSynthesizer", "layout_mix"]


def layout_mix(mix: Mapping[str, float] | None) -> dict[str, float]:
    """A mix of page families as weights summing to 1 (``None``: letters only); an unknown family or
    no positive weight is a :class:`DataError`."""
    mix = dict(mix or {"letter": 1.0})
    unknown = sorted(set(mix) - set(FAMILIES))
    if unknown:
        raise DataError(f"unknown page layout(s) {', '.join(unknown)}: choose from {', '.join(FAMILIES)}")
    total = sum(weight for weight in mix.values() if weight > 0)
    if total <= 0 or any(weight < 0 for weight in mix.values()):
        raise DataError(f"layout mix {mix}: weights must be non-negative with a positive sum")
    return {name: weight / total for name, weight in mix.items() if weight > 0}


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
    #: page families and their shares (:func:`layout_mix`); ``letter`` is the square page above
    layouts: Mapping[str, float] = field(default_factory=lambda: {"letter": 1.0})
    #: share of pages photographed with a phone (:func:`~signver_torch.detector.photo.photograph`) instead of scanned
    photo_rate: float = 0.0
    #: the other families' pages are ``size`` long at their longest side times a factor drawn from this
    #: range (small scans to large ones; the network letterboxes them all)
    scale_range: tuple[float, float] = (1.0, 1.0)


@dataclass(frozen=True)
class PageLayers:
    """A synthetic page before scan effects: darkness of printed matter, of the labelled handwriting
    and of the unlabelled handwriting (notes, filled-in words, check marks), the boxes, and each
    mark's ink (``(left, top, mask)``, ``None`` for a redaction) to box it again after a warp."""

    printed: np.ndarray
    handwriting: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    notes: np.ndarray
    pieces: tuple = ()
    layout: str = "letter"

    def page(self) -> np.ndarray:
        """The page as gray (paper 1) before scan effects."""
        return (1 - self.printed) * (1 - self.handwriting) * (1 - self.notes)


class PageSynthesizer:
    """Draws one page: ``(gray page (H, W) float32 in [0, 1], boxes (K, 4) xyxy, labels (K,))``."""

    def __init__(self, config: PageConfig | None = None) -> None:
        self.config = config or PageConfig()
        self.mix = layout_mix(self.config.layouts)
        self._printer = FormPrinter()  # the bundled font and the stamps the cleaner's pairs draw too

    def __call__(
        self, ink_maps: Sequence[np.ndarray], rng: np.random.Generator, signatures: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(gray page (H, W), boxes (K, 4) xyxy, labels (K,))``: scanned, or photographed (``photo_rate``)."""
        layers = self.layers(ink_maps, rng, signatures)
        if self.config.photo_rate > 0 and rng.random() < self.config.photo_rate:
            page, boxes = photograph(layers.page(), layers.boxes, layers.pieces, rng)
            return page, boxes, layers.labels
        return self._scan(layers.page(), rng), layers.boxes, layers.labels

    def layers(
        self, ink_maps: Sequence[np.ndarray], rng: np.random.Generator, signatures: Sequence[np.ndarray] | None = None,
        layout: str | None = None,
    ) -> "PageLayers":
        """The page before scan effects: printed matter (with redactions) and handwriting, as darkness.

        ``layout`` is the family (default: drawn from the configured mix). ``signatures`` pastes
        exactly these ink maps as a letter's signatures (an example page with a known signer);
        otherwise 0 to ``max_signatures`` are drawn from ``ink_maps``.
        """
        if layout is None:
            names = list(self.mix)
            layout = names[0] if len(names) == 1 else str(rng.choice(names, p=list(self.mix.values())))
        if layout != "letter":
            return self._family_page(layout, ink_maps, rng)
        size = self.config.size
        handwriting = np.zeros((size, size), np.float32)
        printed = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(printed)
        text_lines, places = self._printed_layout(draw, rng, size)
        marks = Marks()
        for _ in range(int(rng.integers(0, self.config.max_redactions + 1))):
            self._redaction(draw, rng, text_lines, (size, size), marks)
        # some signature blocks stay unsigned: a typed name alone is not a signature
        places = [place for place in places if rng.random() < 0.85]
        notes = np.zeros((size, size), np.float32)
        if rng.random() < self.config.handwritten_note_rate:
            self._handwritten_note(notes, ink_maps, rng, marks, places)
        if signatures is not None:
            chosen = list(signatures)
        else:
            loose = max(0, int(rng.integers(0, self.config.max_signatures + 1)) - len(places))
            chosen = [ink_maps[int(rng.integers(len(ink_maps)))] for _ in range(len(places) + loose)]
        for index, ink in enumerate(chosen):
            if index < len(places):  # over its typed name, often touching it, like the real letters' signatures
                left, baseline = places[index]
                width = np.exp(rng.uniform(np.log(60), np.log(260)))
                marks.paste(handwriting, ink, width, rng, SIGNATURE, bottom_left=(left, baseline))
                continue
            width = np.exp(rng.uniform(np.log(self.config.min_signature_width), np.log(self.config.max_signature_width)))
            pasted = marks.paste(handwriting, ink, width, rng, SIGNATURE)
            if pasted and rng.random() < self.config.stacked_signature_rate:
                self._stack_signatures(handwriting, ink_maps, width, rng, marks)
        for _ in range(int(rng.integers(0, self.config.max_initials + 1))):
            ink = first_strokes(ink_maps[int(rng.integers(len(ink_maps)))])
            marks.paste(handwriting, ink, rng.uniform(18, 60), rng, INITIALS)
        for _ in range(int(rng.integers(0, self.config.max_dates + 1))):
            marks.paste(handwriting, handwritten_date(self._printer, rng), rng.uniform(50, 160), rng, DATE)
        if rng.random() < 0.2:
            self._printer.stamp(printed, rng, size, size // 4)
        return PageLayers(np.asarray(printed, np.float32) / 255, handwriting, *marks.arrays(), notes, tuple(marks.pieces))

    def _family_page(self, layout: str, ink_maps: Sequence[np.ndarray], rng: np.random.Generator) -> "PageLayers":
        """A sheet, form, cheque or contract: its printed matter, its slots filled by hand (some left
        empty), a redaction or a stamp now and then."""
        size = round(self.config.size * rng.uniform(*self.config.scale_range))
        printed = LAYOUTS[layout](self._printer, rng, size)
        width, height = printed.image.size
        handwriting = np.zeros((height, width), np.float32)
        notes = np.zeros((height, width), np.float32)
        marks = Marks()
        unit = max(width, height) / 640
        for slot in printed.signatures:
            if rng.random() < 0.88:  # an empty box or line is no signature
                marks.paste_into(handwriting, ink_maps[int(rng.integers(len(ink_maps)))], slot, rng, SIGNATURE)
        for slot in printed.initials:
            if rng.random() < 0.7:
                ink = first_strokes(ink_maps[int(rng.integers(len(ink_maps)))])
                marks.paste_into(handwriting, ink, slot, rng, INITIALS, fill=(0.15, 0.4), max_height=rng.uniform(12, 26) * unit)
        for slot in printed.dates:  # written about twice as tall as the print
            if rng.random() < 0.7:
                marks.paste_into(handwriting, handwritten_date(self._printer, rng), slot, rng, DATE, fill=(0.4, 0.9),
                                 max_height=rng.uniform(12, 24) * unit)
        for x0, y0, x1, y1 in printed.words:  # names and amounts written in: handwriting, but no signature
            if rng.random() < 0.6:
                high = min(y1 - y0, 22 * unit)
                write_words(notes, ink_maps, rng, int(x0 + rng.uniform(0, 0.1) * (x1 - x0)), int(y1 - (y1 - y0) * 0.2),
                            (x1 - x0) * rng.uniform(0.3, 0.9), rng.uniform(0.5, 0.95) * high)
        for x0, y0, x1, y1 in printed.checks:
            if rng.random() < 0.5:
                mark = tick(rng, max(4, round((x1 - x0) * rng.uniform(1.0, 1.5))))
                top, left = max(0, int(y0 - (x1 - x0) * 0.3)), int(x0)
                region = notes[top : top + mark.shape[0], left : left + mark.shape[1]]
                np.maximum(region, mark[: region.shape[0], : region.shape[1]], out=region)
        draw = ImageDraw.Draw(printed.image)
        if printed.lines and rng.random() < 0.3:
            self._redaction(draw, rng, [tuple(map(int, line)) for line in printed.lines], (width, height), marks)
        if rng.random() < 0.15:
            self._printer.stamp(printed.image, rng, width, height // 6)
        return PageLayers(np.asarray(printed.image, np.float32) / 255, handwriting, *marks.arrays(), notes,
                          tuple(marks.pieces), layout)

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
                text = " ".join(word(rng).upper() for _ in range(int(rng.integers(1, 4))))
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
                    draw.text((margin + 4, y + 3), " ".join(word(rng) for _ in range(int(rng.integers(2, 6)))), fill=255, font=font)
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
                        text += word(rng) + " "
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
            name = f"{word(rng).title()} {rng.choice(list(string.ascii_uppercase))}. {word(rng).title()}"
            draw.text((x, name_y), name, fill=255, font=font)
            for line in range(lines_below):
                draw.text((x, name_y + int((line + 1) * font_size * 1.3)), str(rng.choice(TITLES)), fill=255, font=font)
            places.append((max(0, x + int(rng.integers(-15, 30))), name_y + int(rng.uniform(-0.3, 0.9) * font_size)))
        return name_y + int((lines_below + 1) * font_size * 1.3 + font_size * rng.uniform(1, 4))

    def _stack_signatures(self, darkness: np.ndarray, ink_maps: Sequence[np.ndarray], width: float, rng: np.random.Generator,
                          marks: Marks) -> None:
        """One or two signatures of other writers just under the last one pasted, left edges roughly
        aligned, the top of each reaching up to a quarter of its height into the one above."""
        for _ in range(int(rng.integers(1, 3))):
            above, above_spot = marks.boxes[-1], marks.spots[-1]
            ink = ink_maps[int(rng.integers(len(ink_maps)))]
            new_width = width * rng.uniform(0.7, 1.3)
            height = ink.shape[0] * new_width / ink.shape[1]
            left = int(above[0] + rng.uniform(-0.15, 0.15) * width)
            bottom = int(above[3] + height * rng.uniform(0.75, 1.05))
            if bottom > darkness.shape[0]:  # no room under it
                return
            if not marks.paste(darkness, ink, new_width, rng, SIGNATURE, bottom_left=(left, bottom), may_overlap=above_spot):
                return

    @staticmethod
    def _redaction(draw: ImageDraw.ImageDraw, rng: np.random.Generator, text_lines: list, page: tuple[int, int],
                   marks: Marks) -> None:
        """A filled black or grey bar, usually over part of a text line (``page``: width, height)."""
        width, height = page
        if text_lines and rng.random() < 0.8:
            x0, y0, x1, y1 = text_lines[int(rng.integers(len(text_lines)))]
            start = int(rng.integers(x0, max(x0 + 1, x1 - 40)))
            box = (start, y0 - 1, min(x1, start + int(rng.integers(30, 260))), y1 + 1)
        else:
            x0, y0 = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 20))
            box = (x0, y0, min(width - 1, x0 + int(rng.integers(30, 300))), min(height - 1, y0 + int(rng.integers(8, 60))))
        box = (max(box[0], 0), max(box[1], 0), min(box[2], width - 1), min(box[3], height - 1))
        if box[2] - box[0] < 6 or box[3] - box[1] < 4:
            return
        draw.rectangle(box, fill=int(rng.choice([255, 255, 230, 180])))
        marks.add_rectangle((float(box[0]), float(box[1]), box[2] + 1.0, box[3] + 1.0), REDACTION)

    @staticmethod
    def _handwritten_note(darkness: np.ndarray, ink_maps: Sequence[np.ndarray], rng: np.random.Generator,
                          marks: Marks, places: list[tuple[int, int]]) -> None:
        """Lines of cursive "words" (pieces of real signatures) that no label covers: the real pages'
        handwritten letters and margin notes, which are not signatures. Half of the notes are signed
        a line or two under their last line, as a handwritten letter is."""
        size = darkness.shape[0]
        height = rng.uniform(9, 20)  # of a word, ascenders included
        width, rows = int(rng.uniform(120, size * 0.75)), int(rng.integers(1, 8))
        spacing = int(height * rng.uniform(1.3, 2.0))
        left, top = int(rng.integers(0, size - width)), int(rng.integers(0, max(1, size - rows * spacing - height)))
        spot = (left, top, left + width, top + rows * spacing + int(height))
        if any(overlaps(spot, other) for other in marks.spots):
            return
        for row in range(rows):
            line_width = width * (rng.uniform(0.5, 1.0) if row == rows - 1 else 1.0)
            write_words(darkness, ink_maps, rng, left, top + row * spacing + int(height), line_width, height)
        marks.spots.append(spot)
        if rng.random() < 0.5:
            places.append((left + int(rng.uniform(0, 0.5) * width), spot[3] + int(height * rng.uniform(2.0, 4.5))))

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
