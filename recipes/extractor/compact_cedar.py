"""Write a compact copy of a CEDAR-layout folder for machines reached through a small transfer.

Each scan becomes 8-bit grayscale with the paper set to pure white (Otsu split, the same first step
as the extractor's preprocessing), cropped to the ink with a 10 px margin and shrunk so its longest
side is at most ``--max-side``. CEDAR 173 MB → about 20 MB; the shipped extractor scores the same on
the copy as on the original scans.

    python recipes/extractor/compact_cedar.py ../shared/data/cedar .gpu/cedar
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from signver_torch.data.dirt import otsu_level
from signver_torch.io import load_image


def compact(source: Path, target: Path, max_side: int = 640, margin: int = 10) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    gray = np.asarray(load_image(source).convert("L"))
    ink = gray <= otsu_level(gray)
    rows, cols = np.nonzero(ink)
    top, bottom = max(rows.min() - margin, 0), rows.max() + margin + 1
    left, right = max(cols.min() - margin, 0), cols.max() + margin + 1
    image = Image.fromarray(np.where(ink, gray, 255).astype(np.uint8)[top:bottom, left:right])
    scale = max_side / max(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    image.save(target, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="CEDAR folder (full_org/, full_forg/)")
    parser.add_argument("target", type=Path)
    parser.add_argument("--max-side", type=int, default=640)
    args = parser.parse_args()
    files = sorted(args.source.glob("full_*/*.png"))
    if not files:
        parser.error(f"{args.source}: no full_org/ or full_forg/ PNGs")
    for path in tqdm(files, desc="compacting", unit="img"):
        compact(path, args.target / path.relative_to(args.source), args.max_side)


if __name__ == "__main__":
    main()
