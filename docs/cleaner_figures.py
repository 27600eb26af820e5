"""Draw the cleaner's pictures in docs/ and measure the real ruled-line pair.

    pip install matplotlib   # docs only, not a dependency of the library
    python docs/cleaner_figures.py --data ../shared/data --checkpoint default

Writes ``docs/cleaner_pairs.png`` (a contact sheet of the synthetic generator: dirty input, clean
target, from CEDAR training writers 1-32) and ``docs/cleaner_before_after.png`` (real crops: the
ruled-line sample and signatures cut from the real scanned pages by their labelled boxes, before
and after cleaning) and ``docs/cleaner_hardest.png`` (the evaluation pairs of writers 33-40 the
checkpoint cleans worst, by PSNR: where its remaining error is). Prints the ink F1 of the real pair ``samples/test_lines.png`` →
``samples/original_2_12.png`` before and after cleaning (both binarised by Otsu).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from signver_torch.cleaner.api import Cleaner  # noqa: E402
from signver_torch.cleaner.data import EVAL_SEED, DirtyPairs  # noqa: E402
from signver_torch.data.ink import load_ink_maps  # noqa: E402
from signver_torch.data.signatures import discover_signatures  # noqa: E402
from signver_torch.io import load_image_tensor  # noqa: E402
from signver_torch.metrics import cleaning_metrics, ink_f1  # noqa: E402

DOCS = Path(__file__).resolve().parent


def draw_pairs(data: Path, out: Path, rows: int = 8, columns: int = 3) -> None:
    records = discover_signatures(data / "cedar", "1-32")
    pairs = DirtyPairs(load_ink_maps(records[::16]), rows * columns, seed=0)
    figure, axes = plt.subplots(rows, columns * 2, figsize=(columns * 5.2, rows * 1.35))
    for index in range(rows * columns):
        dirty, clean = pairs[index]
        row, column = divmod(index, columns)
        for offset, (page, title) in enumerate(((dirty, "dirty input"), (clean, "target"))):
            axis = axes[row, column * 2 + offset]
            axis.imshow(page[0], cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=9)
    figure.suptitle("Synthetic dirty/clean pairs (seed 0) from CEDAR training writers", fontsize=11)
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    plt.close(figure)


def document_crops(data: Path, count: int) -> list[tuple[str, torch.Tensor]]:
    """Signature crops cut from real scanned pages by their YOLO boxes (with a small margin)."""
    crops = []
    for label in sorted((data / "documents" / "labels").glob("*.txt")):
        lines = [line.split() for line in label.read_text().splitlines() if line.strip()]
        if not lines:
            continue
        image = next((data / "documents" / "images").glob(label.stem + ".*"))
        page = load_image_tensor(image, "L")
        height, width = page.shape[-2:]
        _, cx, cy, w, h = map(float, lines[0])
        x0, x1 = int((cx - w * 0.6) * width), int((cx + w * 0.6) * width)
        y0, y1 = int((cy - h * 0.7) * height), int((cy + h * 0.7) * height)
        crop = page[:, max(y0, 0) : y1, max(x0, 0) : x1]
        if min(crop.shape[-2:]) >= 24:
            crops.append((image.name[:18], crop))
        if len(crops) == count:
            break
    return crops


def draw_before_after(cleaner: Cleaner, data: Path, out: Path, pages: int = 7) -> dict[str, float]:
    dirty = load_image_tensor(data / "samples" / "test_lines.png", "L")
    truth = load_image_tensor(data / "samples" / "original_2_12.png", "L")
    crops = [("samples/test_lines.png", dirty), *document_crops(data, pages)]
    cleaned = cleaner.clean_pages([crop for _, crop in crops])
    scores = {
        "ink_f1_before": float(ink_f1(dirty[None], truth[None])),
        "ink_f1_after": float(ink_f1(cleaned[0][None], truth[None])),
    }
    figure, axes = plt.subplots(len(crops), 2, figsize=(9, 1.6 * len(crops)))
    for row, ((name, crop), result) in enumerate(zip(crops, cleaned)):
        for column, (page, title) in enumerate(((crop, "before"), (result, "after"))):
            axis = axes[row, column]
            axis.imshow(page[0], cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(f"{title}: {name}" if column == 0 else title, fontsize=8)
    figure.suptitle(
        f"Cleaner on real crops (ink F1 of the ruled-line pair: {scores['ink_f1_before']:.3f} → {scores['ink_f1_after']:.3f})",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    plt.close(figure)
    return scores


def draw_hardest(cleaner: Cleaner, data: Path, out: Path, count: int = 6, n_pairs: int = 256) -> None:
    """The ``count`` pairs of ``signver evaluate cleaner``'s set (same seed and size) with the lowest PSNR."""
    pairs = DirtyPairs(load_ink_maps(discover_signatures(data / "cedar", "33-40"), progress=False), n_pairs, EVAL_SEED)
    dirty, clean = (torch.stack(column) for column in zip(*(pairs[i] for i in range(n_pairs))))
    cleaned = torch.stack(cleaner.clean_pages(list(dirty)))
    psnr = cleaning_metrics(cleaned, clean)["psnr"]
    figure, axes = plt.subplots(count, 3, figsize=(12, 1.75 * count))
    for row, index in enumerate(psnr.argsort()[:count].tolist()):
        for column, (page, title) in enumerate(((dirty, "dirty input"), (cleaned, "cleaned"), (clean, "target"))):
            axis = axes[row, column]
            axis.imshow(page[index, 0], cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(f"pair {index}: {title}" + (f" ({psnr[index]:.1f} dB)" if column == 1 else ""), fontsize=8)
    figure.suptitle(f"The {count} hardest of {n_pairs} evaluation pairs (writers 33-40, mean PSNR {psnr.mean():.2f} dB)", fontsize=10)
    figure.tight_layout()
    figure.savefig(out, dpi=80)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--checkpoint", default="default")
    args = parser.parse_args()
    draw_pairs(args.data, DOCS / "cleaner_pairs.png")
    cleaner = Cleaner(max_side=None).load(args.checkpoint)  # every crop at its own resolution, as the figures were drawn
    scores = draw_before_after(cleaner, args.data, DOCS / "cleaner_before_after.png")
    draw_hardest(cleaner, args.data, DOCS / "cleaner_hardest.png")
    print(json.dumps(scores))


if __name__ == "__main__":
    main()
