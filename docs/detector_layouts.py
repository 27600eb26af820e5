"""Draws docs/images/detector_layout_<family>.png: one synthetic page of each family (and a phone photo of a
signature sheet) with its boxes, signatures of the fixture's CEDAR writers.

    OMP_NUM_THREADS=1 python docs/detector_layouts.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from signver_torch.data.ink import load_ink_maps
from signver_torch.data.signatures import discover_signatures
from signver_torch.detector.layouts import FAMILIES
from signver_torch.detector.marks import Mark
from signver_torch.detector.pages import PageConfig, PageSynthesizer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    maps = load_ink_maps(discover_signatures(ROOT / "tests" / "data" / "cedar", "1-2"), progress=False)
    out = ROOT / "docs" / "images"
    out.mkdir(exist_ok=True)
    for family, photo in [(family, 0.0) for family in FAMILIES] + [("sheet", 1.0)]:
        synthesizer = PageSynthesizer(PageConfig(size=720, layouts={family: 1.0}, photo_rate=photo))
        page, boxes, labels = synthesizer(maps, np.random.default_rng((2026, 1)))
        image = Image.fromarray((page * 255).astype(np.uint8)).convert("RGB")
        draw = ImageDraw.Draw(image)
        for box, label in zip(boxes.tolist(), labels.tolist()):
            draw.rectangle(box, outline=Mark(label).colour, width=2)
        name = f"detector_layout_{family}{'_photo' if photo else ''}.png"
        image.quantize(64).save(out / name, optimize=True)
        print(out / name)


if __name__ == "__main__":
    main()
