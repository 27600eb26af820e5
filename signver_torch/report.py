"""A document's report: each signature found on the page with its verdict, and the picture of it
(the page with each box, each crop beside its cleaned version)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from signver_torch.claims import Verdict
from signver_torch.detector.marks import Mark
from signver_torch.io import ImageSource, load_image


@dataclass(frozen=True)
class SignatureVerdict:
    """One signature found on a page: where, how sure the detector is of it, and the verdict on it."""

    box: list[float]  # xyxy pixels on the page
    detector_score: float  # the detector's confidence
    verdict: Verdict  # the matcher's decision (its own ``score`` is the one compared with the threshold)
    crop: np.ndarray = field(repr=False)  # (H, W) grayscale in [0, 1]
    cleaned: np.ndarray = field(repr=False)

    @property
    def match(self) -> bool:
        return self.verdict.match

    def as_dict(self) -> dict[str, Any]:
        verdict = self.verdict
        return {"box_xyxy": [round(v, 1) for v in self.box], "detector_score": round(self.detector_score, 4),
                "distance": round(verdict.distance, 4), "rule": verdict.rule, "score": round(verdict.score, 4),
                "threshold": round(verdict.threshold, 4), "match": verdict.match}


@dataclass
class DocumentReport:
    page: str
    claimed: str  # the person id, or the reference files
    signatures: list[SignatureVerdict]

    @property
    def verdict(self) -> str:
        if not self.signatures:
            return "no signature found"
        return "signed by the claimed person" if any(s.match for s in self.signatures) else "not signed by the claimed person"

    def as_dict(self) -> dict[str, Any]:
        return {"page": self.page, "claimed": self.claimed, "verdict": self.verdict,
                "match": any(s.match for s in self.signatures), "signatures": [s.as_dict() for s in self.signatures]}


def report_picture(report: DocumentReport, page: ImageSource) -> Image.Image:
    """The page with each signature's box and verdict, and each crop beside its cleaned version."""
    image = load_image(page).convert("RGB")
    scale = 900 / max(image.size)
    shown = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    draw = ImageDraw.Draw(shown)
    font = ImageFont.load_default(15)
    green, red = (20, 150, 40), Mark.SIGNATURE.colour
    rows = []
    for number, signature in enumerate(report.signatures, start=1):
        colour = green if signature.match else red
        box = [v * scale for v in signature.box]
        draw.rectangle(box, outline=colour, width=3)
        draw.text((box[0], max(0, box[1] - 18)), f"#{number}", fill=colour, font=font)
        rows.append((number, signature, colour))
    panel_width = 520
    row_height = 150
    canvas = Image.new("RGB", (shown.width + panel_width, max(shown.height, 60 + row_height * len(rows))), "white")
    canvas.paste(shown, (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((shown.width + 10, 10), f"{report.verdict}\nclaimed: {report.claimed[:60]}", fill=(0, 0, 0), font=font)
    for index, (number, signature, colour) in enumerate(rows):
        top = 60 + index * row_height
        for column, array in enumerate((signature.crop, signature.cleaned)):
            tile = Image.fromarray((np.clip(array, 0, 1) * 255).astype(np.uint8)).convert("RGB")
            tile.thumbnail((240, 90))
            canvas.paste(tile, (shown.width + 10 + column * 250, top))
        verdict = signature.verdict
        text = (f"#{number} {'MATCH' if verdict.match else 'NO MATCH'}  {verdict.rule} score "
                f"{verdict.score:.3f} (threshold {verdict.threshold:.3f})")
        draw.text((shown.width + 10, top + 96), "crop                          cleaned", fill=(90, 90, 90), font=font)
        draw.text((shown.width + 10, top + 116), text, fill=colour, font=font)
    return canvas


__all__ = ["DocumentReport", "SignatureVerdict", "report_picture"]
