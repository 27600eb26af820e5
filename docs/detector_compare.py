"""Draws docs/images/detector_default_vs_layouts.png: one validation page of each family (and one real held-out
letter), the shipped ``default`` detector's signatures on the left and ``layouts``' on the right, each at its
card's score threshold. Labelled signatures are grey, found ones green (on a label) or red (not on one).

    recipes/detector/validation_sets.sh VS 20
    OMP_NUM_THREADS=1 python docs/detector_compare.py VS
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torchvision.ops import box_iou

from signver_torch.data.detection import read_detection_dataset, split_pages
from signver_torch.detector.api import Detector
from signver_torch.detector.evaluation import set_reading
from signver_torch.detector.marks import Mark

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("sheet", "sheet_photo", "form", "form_photo", "cheque", "contract")
WIDTH = 420


def panel(detector: Detector, path: Path, labelled: torch.Tensor, title: str) -> Image.Image:
    """``path`` scaled to :data:`WIDTH` with the labelled and the found signature boxes drawn over it."""
    page = Image.open(path).convert("RGB")
    [found] = detector.predict([page])
    boxes = found["boxes"][found["labels"] == Mark.SIGNATURE]
    scale = WIDTH / page.width
    image = page.resize((WIDTH, round(page.height * scale)))
    draw = ImageDraw.Draw(image)
    for box in labelled.tolist():
        draw.rectangle([v * scale for v in box], outline=(150, 150, 150), width=3)
    on_label = (box_iou(boxes, labelled) >= 0.5).any(1) if len(labelled) and len(boxes) else torch.zeros(len(boxes), dtype=torch.bool)
    for box, hit in zip(boxes.tolist(), on_label.tolist()):
        draw.rectangle([v * scale for v in box], outline=(0, 170, 0) if hit else (220, 0, 0), width=2)
    draw.rectangle([0, 0, WIDTH, 18], fill=(255, 255, 255))
    draw.text((4, 3), f"{title}: {int(on_label.sum())} of {len(labelled)} found, {int((~on_label).sum())} wrong", fill=(0, 0, 0))
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", type=Path, help="the folder recipes/detector/validation_sets.sh wrote")
    parser.add_argument("--documents", type=Path, default=ROOT.parent / "shared" / "data" / "documents")
    args = parser.parse_args()
    detectors = {name: Detector(device="cpu").load(name) for name in ("default", "layouts")}
    letters = [r for r in split_pages(read_detection_dataset(args.documents), 3)[1] if r.boxes]  # held out of training
    pages = [("real letter", letters[0])] + [(family, next(r for r in read_detection_dataset(args.sets / family, set_reading(args.sets / family, None)[0])
                                                            if r.labels.count(Mark.SIGNATURE) >= 2)) for family in FAMILIES]
    rows = []
    for family, record in pages:
        labelled = torch.as_tensor(record.boxes, dtype=torch.float32).reshape(-1, 4)[torch.as_tensor(record.labels) == Mark.SIGNATURE]
        panels = [panel(detector, record.path, labelled, f"{family}, {name} (score >= {detector.score_threshold:.2f})")
                  for name, detector in detectors.items()]
        row = Image.new("RGB", (2 * WIDTH + 8, max(p.height for p in panels)), "white")
        for column, image in enumerate(panels):
            row.paste(image, (column * (WIDTH + 8), 0))
        rows.append(row)
    sheet = Image.new("RGB", (rows[0].width, sum(r.height + 8 for r in rows)), "white")
    top = 0
    for row in rows:
        sheet.paste(row, (0, top))
        top += row.height + 8
    out = ROOT / "docs" / "images" / "detector_default_vs_layouts.png"
    sheet.quantize(128).save(out, optimize=True)
    print(out)


if __name__ == "__main__":
    main()
