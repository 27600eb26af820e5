"""Printed layouts of the page families people sign besides letters: signature sheets, forms, cheques and
contracts.

Each family prints its matter (grids, cells, ruled fields, check boxes, clauses, a cheque's lines) and
says where handwriting goes (:class:`Printed`'s slots); the page synthesizer fills the slots with real
signatures, initials, dates, check marks and unlabelled handwritten words, each boxed by its own ink.
Sizes follow the paper: a page ``size`` pixels long at its longest side, A4 portrait for sheets, forms
and contracts, a cheque 2.4 times as wide as it is high. Nothing here reads a file.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from signver_torch.data.forms import FormPrinter

Box = tuple[float, float, float, float]
A4 = 2 ** 0.5
SHEET_TITLES = ("SPECIMEN SIGNATURES", "SIGNATURE SHEET", "AUTHORISED SIGNATORIES", "SIGNATURE CARD",
                "ATTENDANCE SHEET", "SAMPLE SIGNATURES", "Signature specimens")
FIELD_LABELS = ("Name", "Surname", "Address", "City", "Account no.", "Amount", "Reference", "Phone", "Employee ID",
                "Department", "Position", "Email", "Purpose", "Code", "Company", "Place")
SIGN_LABELS = ("Signature", "Signed", "Sign here", "Signature of applicant", "Authorized signature", "Customer signature",
               "Witness", "Approved by", "Received by", "X")
DATE_LABELS = ("Date", "Date signed", "Dated")
CHECK_WORDS = ("Yes", "No", "New", "Renewal", "Male", "Female", "Cash", "Cheque", "Card", "Other", "Urgent", "Copy")
PARTIES = ("the Company", "the Buyer", "the Seller", "the Tenant", "the Landlord", "the Contractor", "the Client")


@dataclass
class Printed:
    """A family's printed matter (darkness, 0-255) and where handwriting goes on it."""

    image: Image.Image
    signatures: list[Box] = field(default_factory=list)  #: room for a signature (a cell, or above a rule)
    initials: list[Box] = field(default_factory=list)
    dates: list[Box] = field(default_factory=list)
    words: list[Box] = field(default_factory=list)  #: filled in by hand, unlabelled (names, amounts)
    checks: list[Box] = field(default_factory=list)  #: check boxes a hand may tick, unlabelled
    lines: list[Box] = field(default_factory=list)  #: printed text lines (what redactions cover)


SLOT_KINDS = ("signatures", "initials", "dates", "words", "checks", "lines")


class Pen:
    """Draws printed matter at the page's scale: fonts and rules sized from the page's long side."""

    def __init__(self, printer: FormPrinter, image: Image.Image, rng: np.random.Generator) -> None:
        self.printer, self.rng, self.image = printer, rng, image
        self.draw = ImageDraw.Draw(image)
        self.unit = max(image.size) / 640  # one pixel of the real 640-px pages
        self.rule_width = max(1, round(self.unit * rng.uniform(0.8, 2.0)))
        self.text_size = max(7, round(self.unit * rng.uniform(7.5, 11)))

    def text(self, xy: tuple[float, float], text: str, scale: float = 1.0, printed: Printed | None = None) -> float:
        """Print ``text``; returns its right end (and records it as a line of ``printed``)."""
        font = self.printer.font(max(7, round(self.text_size * scale)))
        self.draw.text(xy, text, fill=255, font=font)
        right = xy[0] + self.draw.textlength(text, font=font)
        if printed is not None:
            printed.lines.append((xy[0], xy[1], right, xy[1] + font.size * 1.2))
        return right

    def line_of_text(self, x: float, y: float, right: float, printed: Printed, first: str = "") -> None:
        """A line of body text from ``x`` up to about ``right``."""
        font = self.printer.font(round(self.text_size * 0.9))
        text = first
        while self.draw.textlength(text + "mmmmmmmm", font=font) < right - x:
            text += word(self.rng) + " "
        self.text((x, y), text.rstrip(), scale=0.9, printed=printed)

    def rule(self, x0: float, x1: float, y: float) -> None:
        self.draw.line([(x0, y), (x1, y)], fill=255, width=self.rule_width)

    def box(self, box: Box) -> None:
        self.draw.rectangle(box, outline=255, width=self.rule_width)

    def field(self, x: float, y: float, label: str, right: float) -> Box:
        """``Label: ______`` with the rule on the text's baseline; returns the room above the rule."""
        start = self.text((x, y), label + ":") + self.unit * 4
        line_y = y + self.text_size * 1.1
        self.rule(start, right, line_y)
        return (start, line_y - self.text_size * self.rng.uniform(2.2, 4.0), right, line_y + self.unit * 3)


def word(rng: np.random.Generator) -> str:
    """A printed "word" of random letters (the text's content never matters to the detector)."""
    return "".join(rng.choice(list(string.ascii_lowercase), int(rng.integers(2, 10))))


def words(rng: np.random.Generator, low: int = 2, high: int = 8, title: bool = False) -> str:
    text = " ".join(word(rng) for _ in range(int(rng.integers(low, high))))
    return text.title() if title else text


def _slot_for(label: str, room: Box, printed: Printed) -> None:
    """A labelled field's room goes to the handwriting its label asks for."""
    if label in SIGN_LABELS:
        printed.signatures.append(room)
    elif label in DATE_LABELS:
        printed.dates.append(room)
    elif label == "Initials":
        printed.initials.append(room)
    else:
        printed.words.append(room)


def signature_sheet(printer: FormPrinter, rng: np.random.Generator, size: int) -> Printed:
    """A grid of boxes (or a numbered table) to sign in, one signature each, no body text."""
    width, height = round(size / A4), size
    printed = Printed(Image.new("L", (width, height), 0))
    pen = Pen(printer, printed.image, rng)
    margin = width * rng.uniform(0.05, 0.1)
    y = height * rng.uniform(0.03, 0.08)
    if rng.random() < 0.85:
        pen.text((margin, y), str(rng.choice(SHEET_TITLES)), scale=rng.uniform(1.4, 2.2), printed=printed)
        y += pen.text_size * 3.5
    for _ in range(int(rng.integers(0, 3))):  # "Account: ______" header fields
        printed.words.append(pen.field(margin, y, str(rng.choice(FIELD_LABELS)), width * rng.uniform(0.5, 0.9)))
        y += pen.text_size * 2.6
    bottom = height - height * rng.uniform(0.04, 0.12)
    if rng.random() < 0.3:  # an attendance table: number, printed name, signature, date
        rows = int(rng.integers(6, 16))
        row_h = (bottom - y) / rows
        columns = np.cumsum([0, 0.08, rng.uniform(0.3, 0.4), rng.uniform(0.3, 0.4)])
        columns = margin + (width - 2 * margin) * np.append(columns, 1.0) / max(columns[-1] + 0.2, 1.0)
        for row in range(rows):
            top = y + row * row_h
            for x0, x1 in zip(columns[:-1], columns[1:]):
                pen.box((x0, top, x1, top + row_h))
            pen.text((columns[0] + pen.unit * 3, top + row_h * 0.3), str(row + 1), printed=printed)
            pen.text((columns[1] + pen.unit * 3, top + row_h * 0.3), words(rng, 2, 3, title=True), printed=printed)
            pad = pen.unit * 2
            printed.signatures.append((columns[2] + pad, top + pad, columns[3] - pad, top + row_h - pad))
            printed.dates.append((columns[3] + pad, top + pad, columns[4] - pad, top + row_h - pad))
        return printed
    cols = int(rng.choice([1, 2, 2, 2, 3]))
    rows = int(rng.integers(3, 7))
    gap = 0.0 if rng.random() < 0.5 else width * rng.uniform(0.01, 0.04)  # a shared grid, or separate boxes
    cell_w = (width - 2 * margin - gap * (cols - 1)) / cols
    cell_h = min((bottom - y - gap * (rows - 1)) / rows, cell_w * rng.uniform(0.4, 0.9))
    captions = rng.random() < 0.6
    name_rule = rng.random() < 0.4
    for row in range(rows):
        for col in range(cols):
            x0, y0 = margin + col * (cell_w + gap), y + row * (cell_h + gap)
            pen.box((x0, y0, x0 + cell_w, y0 + cell_h))
            pad = pen.unit * 3
            room = [x0 + pad, y0 + pad, x0 + cell_w - pad, y0 + cell_h - pad]
            if captions:  # "Specimen 3" in the cell's corner
                pen.text((x0 + pad, y0 + pad), f"{rng.choice(['Specimen', 'Signature', 'No.'])} {row * cols + col + 1}",
                         scale=0.8, printed=printed)
                room[1] += pen.text_size * 1.3
            if name_rule:  # "Name: ____" along the cell's bottom
                name_y = y0 + cell_h - pen.text_size * 2
                printed.words.append(pen.field(x0 + pad, name_y, "Name", x0 + cell_w - pad))
                room[3] = name_y - pad
            if room[3] - room[1] > pen.unit * 10:
                printed.signatures.append(tuple(room))
    return printed


def form(printer: FormPrinter, rng: np.random.Generator, size: int) -> Printed:
    """A form: ruled fields, boxed fields, check boxes, a small table, a few lines of text, an approval table."""
    width, height = round(size / A4), size
    printed = Printed(Image.new("L", (width, height), 0))
    pen = Pen(printer, printed.image, rng)
    margin = width * rng.uniform(0.05, 0.1)
    right = width - margin
    y = height * rng.uniform(0.03, 0.07)
    pen.text((margin, y), words(rng, 1, 4).upper(), scale=rng.uniform(1.4, 2.0), printed=printed)
    y += pen.text_size * 3.5
    blocks = ["fields", "fields", "boxes", "checks", "table", "text", "approval"]
    limit = height - pen.text_size * 7  # room for the closing signature row
    while True:
        block = str(rng.choice(blocks))
        before = printed.image.copy(), {name: len(getattr(printed, name)) for name in SLOT_KINDS}, y
        if block == "fields":  # one to three "Label: ____" per row
            for _ in range(int(rng.integers(1, 4))):
                per_row = int(rng.integers(1, 4))
                column_w = (right - margin) / per_row
                for k in range(per_row):
                    label = str(rng.choice(FIELD_LABELS + SIGN_LABELS[:3] + DATE_LABELS[:1] + ("Initials",)))
                    room = pen.field(margin + k * column_w, y, label, margin + (k + 1) * column_w - pen.unit * 8)
                    _slot_for(label, room, printed)
                y += pen.text_size * rng.uniform(2.6, 3.6)
        elif block == "boxes":  # cells with a small caption, filled in below it
            cols, cell_h = int(rng.integers(2, 5)), pen.text_size * rng.uniform(3.5, 6)
            cell_w = (right - margin) / cols
            for k in range(cols):
                x0 = margin + k * cell_w
                pen.box((x0, y, x0 + cell_w, y + cell_h))
                label = str(rng.choice(FIELD_LABELS + SIGN_LABELS[:2] + DATE_LABELS[:1]))
                pen.text((x0 + pen.unit * 3, y + pen.unit * 2), label, scale=0.8, printed=printed)
                _slot_for(label, (x0 + pen.unit * 3, y + pen.text_size * 1.4, x0 + cell_w - pen.unit * 3,
                                  y + cell_h - pen.unit * 3), printed)
            y += cell_h + pen.text_size * 1.5
        elif block == "checks":  # [ ] Yes  [ ] No ...
            x = margin
            for _ in range(int(rng.integers(2, 6))):
                side = pen.text_size * 1.1
                pen.box((x, y, x + side, y + side))
                printed.checks.append((x, y, x + side, y + side))
                x = pen.text((x + side * 1.5, y), str(rng.choice(CHECK_WORDS)), printed=printed) + pen.unit * 20
                if x > right - pen.unit * 60:
                    break
            y += pen.text_size * 2.8
        elif block == "table":  # a header and rows of cells, filled in by hand
            cols, rows = int(rng.integers(3, 6)), int(rng.integers(2, 6))
            cell_w, row_h = (right - margin) / cols, pen.text_size * rng.uniform(2.0, 3.0)
            for r in range(rows + 1):
                for k in range(cols):
                    cell = (margin + k * cell_w, y + r * row_h, margin + (k + 1) * cell_w, y + (r + 1) * row_h)
                    pen.box(cell)
                    if r == 0:
                        pen.text((cell[0] + pen.unit * 3, cell[1] + row_h * 0.25), words(rng, 1, 2).title(), printed=printed)
                    elif rng.random() < 0.6:
                        printed.words.append((cell[0] + pen.unit * 3, cell[1] + pen.unit * 2, cell[2] - pen.unit * 3, cell[3] - pen.unit * 2))
            y += (rows + 1) * row_h + pen.text_size * 1.5
        elif block == "text":
            for _ in range(int(rng.integers(1, 4))):
                pen.line_of_text(margin, y, right - (right - margin) * rng.uniform(0, 0.3), printed)
                y += pen.text_size * 1.4
            y += pen.text_size
        else:
            y = _approval_table(pen, rng, printed, margin, right, y)
        if y > limit:  # the block did not fit: take it back, close the form
            printed.image.paste(before[0])
            for name, count in before[1].items():
                del getattr(printed, name)[count:]
            y = before[2]
            break
    sign_y = y + pen.text_size * 2.5  # every form ends signed and dated
    printed.signatures.append(pen.field(margin, sign_y, str(rng.choice(SIGN_LABELS)), margin + (right - margin) * 0.55))
    printed.dates.append(pen.field(margin + (right - margin) * 0.62, sign_y, "Date", right))
    return printed


def _approval_table(pen: Pen, rng: np.random.Generator, printed: Printed, margin: float, right: float, y: float) -> float:
    """Role | Name | Signature | Date, two to four rows: signatures in cells beside handwritten names."""
    share = np.array([0.22, 0.3, 0.3, 0.18])
    edges = margin + (right - margin) * np.concatenate([[0], np.cumsum(share)])
    row_h = pen.text_size * rng.uniform(3.2, 5.0)
    for k, title in enumerate(("Role", "Name", "Signature", "Date")):
        pen.box((edges[k], y, edges[k + 1], y + pen.text_size * 1.8))
        pen.text((edges[k] + pen.unit * 3, y + pen.unit * 2), title, printed=printed)
    y += pen.text_size * 1.8
    for _ in range(int(rng.integers(2, 5))):
        cells = [(edges[k], y, edges[k + 1], y + row_h) for k in range(4)]
        for cell in cells:
            pen.box(cell)
        pen.text((cells[0][0] + pen.unit * 3, y + row_h * 0.3), words(rng, 1, 2).title(), printed=printed)
        pad = pen.unit * 3
        inner = [(c[0] + pad, c[1] + pad, c[2] - pad, c[3] - pad) for c in cells]
        printed.words.append(inner[1])
        printed.signatures.append(inner[2])
        printed.dates.append(inner[3])
        y += row_h
    return y + pen.text_size * 1.5


def cheque(printer: FormPrinter, rng: np.random.Generator, size: int) -> Printed:
    """A bank cheque: payee, amount in figures and words, date, memo, one or two signature lines, the MICR line."""
    width, height = size, round(size / 2.4)
    printed = Printed(Image.new("L", (width, height), 0))
    pen = Pen(printer, printed.image, rng)
    pen.text_size = max(7, round(height * rng.uniform(0.035, 0.05)))
    if rng.random() < 0.6:  # the security pattern: faint waves over the paper
        tone = int(rng.uniform(10, 40))
        for k in range(int(rng.integers(20, 60))):
            phase, amp = rng.uniform(0, 6.3), height * rng.uniform(0.01, 0.05)
            base = height * k / 40
            xs = np.linspace(0, width, 60)
            pen.draw.line(list(zip(xs, base + amp * np.sin(xs / width * 12 + phase))), fill=tone, width=1)
    margin = width * 0.04
    pen.text((margin, height * 0.06), words(rng, 1, 3).upper() + " BANK", scale=1.6, printed=printed)
    pen.text((margin, height * 0.06 + pen.text_size * 2.2), words(rng, 2, 5).title(), scale=0.8, printed=printed)
    pen.text((width * 0.85, height * 0.06), f"{int(rng.integers(100, 9999)):04d}", printed=printed)
    printed.dates.append(pen.field(width * 0.62, height * 0.2, "Date", width - margin))
    printed.words.append(pen.field(margin, height * 0.36, "PAY TO THE ORDER OF", width * 0.72))
    amount = (width * 0.76, height * 0.31, width - margin, height * 0.31 + pen.text_size * 2.2)
    pen.text((amount[0] - pen.text_size, amount[1] + pen.unit * 2), "$", printed=printed)
    pen.box(amount)
    printed.words.append((amount[0] + pen.unit * 3, amount[1] + pen.unit * 2, amount[2] - pen.unit * 3, amount[3] - pen.unit * 2))
    words_y = height * 0.5
    pen.rule(margin, width * 0.82, words_y + pen.text_size * 1.1)
    pen.text((width * 0.84, words_y), "DOLLARS", printed=printed)
    printed.words.append((margin, words_y - pen.text_size * 2, width * 0.8, words_y + pen.text_size * 1.3))
    printed.words.append(pen.field(margin, height * 0.7, "MEMO", width * 0.45))
    signers = 1 if rng.random() < 0.7 else 2
    line_y = height * (0.78 if signers == 1 else 0.6)
    for k in range(signers):  # joint accounts sign one line under the other
        y = line_y + k * height * 0.18
        pen.rule(width * 0.55, width - margin, y)
        pen.text((width * 0.6, y + pen.unit * 2), "AUTHORIZED SIGNATURE", scale=0.6, printed=printed)
        printed.signatures.append((width * 0.55, y - height * rng.uniform(0.12, 0.2), width - margin, y + pen.unit * 4))
    micr = f"C{int(rng.integers(10**8, 10**9))}C {int(rng.integers(10**9, 10**10))}A {int(rng.integers(1000, 9999))}"
    pen.text((width * 0.15, height * 0.9), micr, scale=1.1, printed=printed)
    return printed


def contract(printer: FormPrinter, rng: np.random.Generator, size: int) -> Printed:
    """Numbered clauses, then the parties' signature blocks (signature, name, title, date), initials in the footer."""
    width, height = round(size / A4), size
    printed = Printed(Image.new("L", (width, height), 0))
    pen = Pen(printer, printed.image, rng)
    margin = width * rng.uniform(0.07, 0.12)
    right = width - margin
    y = height * rng.uniform(0.04, 0.08)
    pen.text((margin + (right - margin) * rng.uniform(0.1, 0.3), y), words(rng, 2, 4).upper(), scale=1.6, printed=printed)
    y += pen.text_size * 3
    blocks = int(rng.integers(1, 3))
    block_h = pen.text_size * 14
    body_end = height * rng.uniform(0.35, 0.85) - blocks * block_h * 0.5
    clause = 1
    while y < body_end:
        lines = int(rng.integers(2, 7))
        for line in range(lines):
            end = right if line < lines - 1 else right - (right - margin) * rng.uniform(0, 0.6)
            pen.line_of_text(margin, y, end, printed, first=f"{clause}. " if line == 0 else "")
            y += pen.text_size * 1.35
        y += pen.text_size * 0.8
        clause += 1
    y += pen.text_size * 2
    for _ in range(blocks):
        if y + block_h > height * 0.94:
            break
        columns = 2 if rng.random() < 0.7 else 1
        column_w = (right - margin) / columns
        for k in range(columns):
            x, row = margin + k * column_w, y
            pen.text((x, row), f"For and on behalf of {rng.choice(PARTIES)}", scale=0.9, printed=printed)
            row += pen.text_size * 1.5
            end = x + column_w - pen.unit * 15
            for label in ("Signature", "Name", "Title", "Date"):
                row += pen.text_size * (3.2 if label == "Signature" else 2.2)
                room = pen.field(x, row, label, end)
                if label != "Title":
                    _slot_for(label, room, printed)
        y += block_h
    if rng.random() < 0.6:  # "Initials: ____" and the page number in the footer
        foot = height - pen.text_size * 3
        printed.initials.append(pen.field(right - (right - margin) * 0.3, foot, "Initials", right))
        pen.text((margin, foot), f"Page {int(rng.integers(1, 5))} of {int(rng.integers(5, 9))}", scale=0.8, printed=printed)
    return printed


#: The families besides ``letter`` (drawn by ``pages.py`` itself): name -> printer of the layout.
LAYOUTS: dict[str, Callable[[FormPrinter, np.random.Generator, int], Printed]] = {
    "sheet": signature_sheet, "form": form, "cheque": cheque, "contract": contract,
}
FAMILIES = ("letter", *LAYOUTS)
