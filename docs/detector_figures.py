"""Draw the detector's pictures in docs/.

    python docs/detector_figures.py --data ../shared/data                 # synthetic pages only
    python docs/detector_figures.py --data ../shared/data --checkpoint default

Writes ``docs/detector_synthetic_pages.png`` (generated pages with their exact boxes, colour per class)
and, with ``--checkpoint``, ``docs/detector_real_pages.png`` (held-out real pages and the samples,
annotated by the detector, with the labelled boxes in black).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from signver_torch.data.detection import read_detection_dataset, split_pages
from signver_torch.data.ink import load_ink_maps
from signver_torch.data.signatures import discover_signatures, writer_split
from signver_torch.detector.api import CLASS_COLOURS, Detector, draw_detections
from signver_torch.detector.data import SyntheticPages
from signver_torch.detector.pages import PageConfig

DOCS = Path(__file__).resolve().parent


def tile(images: list[Image.Image], columns: int, size: int) -> Image.Image:
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * size, rows * size), "white")
    for index, image in enumerate(images):
        image = image.copy()
        image.thumbnail((size - 6, size - 6))
        sheet.paste(image, ((index % columns) * size + 3, (index // columns) * size + 3))
    return sheet


def synthetic_sheet(data: Path, out: Path) -> None:
    [records] = writer_split(discover_signatures(data / "cedar"), "1-32")
    pages = SyntheticPages(load_ink_maps(records[::24], progress=False), 6, seed=0, config=PageConfig(size=640))
    drawn = []
    for index in range(len(pages)):
        image, target = pages[index]
        page = Image.fromarray((image[0].numpy() * 255).astype(np.uint8)).convert("RGB")
        draw = ImageDraw.Draw(page)
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            draw.rectangle(box, outline=CLASS_COLOURS[label], width=3)
        drawn.append(page)
    tile(drawn, 3, 480).save(out)


def real_sheet(detector: Detector, data: Path, out: Path, count: int = 6) -> None:
    _, held_out = split_pages(read_detection_dataset(data / "documents"), 3)
    chosen = [r for r in held_out if r.boxes][:count - 2]
    drawn = []
    for record in chosen:
        page = Image.open(record.path).convert("RGB")
        [found] = detector.predict([page])
        annotated = draw_detections(page, found)
        draw = ImageDraw.Draw(annotated)
        for box in record.boxes:
            draw.rectangle([box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3], outline=(0, 0, 0), width=1)
        drawn.append(annotated)
    for sample in ("signdoc.jpg", "signed_page.png"):
        page = Image.open(data / "samples" / sample).convert("RGB")
        [found] = detector.predict([page])
        drawn.append(draw_detections(page, found))
    tile(drawn, 3, 520).save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--checkpoint", help="also annotate real pages with this detector")
    args = parser.parse_args()
    synthetic_sheet(args.data, DOCS / "detector_synthetic_pages.png")
    if args.checkpoint:
        real_sheet(Detector().load(args.checkpoint), args.data, DOCS / "detector_real_pages.png")


if __name__ == "__main__":
    main()
