"""Draws docs/images/detector_realpaste.png: a real training page of the test fixture with signatures pasted on its
blank areas (``detector/realpages.py``: the fixture's CEDAR writers' ink, and signatures moved from the fixture's
other training pages); the page's own label in black, each pasted signature's box in its class colour.

    OMP_NUM_THREADS=1 python docs/detector_realpaste.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from signver_torch.data.detection import read_detection_dataset, split_pages
from signver_torch.data.ink import load_ink_maps
from signver_torch.data.signatures import discover_signatures
from signver_torch.detector.marks import Mark
from signver_torch.detector.realpages import RealPastes

ROOT = Path(__file__).resolve().parents[1]
PAGE = 3  # of the fixture's training pages: a letter with room to sign


def main() -> None:
    maps = load_ink_maps(discover_signatures(ROOT / "tests" / "data" / "cedar", "1-2"), progress=False)
    train, _ = split_pages(read_detection_dataset(ROOT / "tests" / "data" / "documents"), 3)
    image, target = RealPastes(train, maps, rate=1.0, most=4, seed=0)[PAGE]
    page = Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(page)
    own = len(train[PAGE].boxes)
    for index, box in enumerate(target["boxes"].tolist()):
        draw.rectangle(box, outline=(0, 0, 0) if index < own else Mark.SIGNATURE.colour, width=2)
    out = ROOT / "docs" / "images" / "detector_realpaste.png"
    page.quantize(64).save(out, optimize=True)
    print(out)


if __name__ == "__main__":
    main()
