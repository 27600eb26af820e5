"""What forms and offices print around a signature, drawn by the synthetic generators of several modules
(the cleaner's dirty pairs, the detector's pages): form words, Pillow's bundled font and rubber stamps."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Words printed on forms near signatures.
FORM_WORDS = (
    "Signature", "Signed", "Date", "Name", "Print name", "Authorized by", "Witness", "Approved",
    "Title", "Initials", "Received by", "Customer", "Applicant", "Employee", "Notary Public",
    "For and on behalf of", "X", "Sign here", "Page 1 of 2", "Confidential", "Total", "USD",
)
STAMP_WORDS = ("APPROVED", "RECEIVED", "PAID", "COPY", "VERIFIED", "NOTARY", "ORIGINAL", "FILED")


class FormPrinter:
    """Pillow's bundled font at any size (cached: nothing fetched) and rubber stamps."""

    def __init__(self) -> None:
        self._fonts: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] = {}

    def font(self, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        if size not in self._fonts:
            self._fonts[size] = ImageFont.load_default(size)  # Pillow's bundled font: nothing fetched
        return self._fonts[size]

    def stamp(self, dirt: Image.Image, rng: np.random.Generator, width: int, height: int) -> None:
        """A rubber stamp: a ring or box with a word, faint or strong, rotated, over the ink."""
        size = int(rng.integers(height // 2, height + height // 2))
        stamp = Image.new("L", (size * 2, size), 0)
        draw = ImageDraw.Draw(stamp)
        darkness = int(rng.uniform(0.2, 0.7) * 255)
        thickness = int(rng.integers(1, 4))
        if rng.random() < 0.5:
            draw.ellipse([2, 2, size * 2 - 3, size - 3], outline=darkness, width=thickness)
        else:
            draw.rectangle([2, 2, size * 2 - 3, size - 3], outline=darkness, width=thickness)
        font = self.font(max(8, size // 3))
        word = str(rng.choice(STAMP_WORDS))
        box = draw.textbbox((0, 0), word, font=font)
        draw.text(((size * 2 - (box[2] - box[0])) / 2, (size - (box[3] - box[1])) / 2 - box[1]), word, fill=darkness, font=font)
        stamp = stamp.rotate(rng.uniform(-30, 30), expand=True, resample=Image.BILINEAR)
        position = (int(rng.integers(-stamp.width // 2, width - stamp.width // 2)),
                    int(rng.integers(-stamp.height // 2, height - stamp.height // 2)))
        layer = Image.new("L", dirt.size, 0)
        layer.paste(stamp, position)
        dirt.paste(Image.fromarray(np.maximum(np.asarray(dirt), np.asarray(layer))))
