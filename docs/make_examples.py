"""Make the example files the README's Quickstart runs on (committed under examples/).

    python docs/make_examples.py --data ../shared/data/cedar --writer 39

Everything comes from a CEDAR writer that no shipped model trained on (writers 33-40 are held out):
``examples/contract.png`` is a synthetic page (the project's page generator) signed with one of the
writer's genuine signatures, ``examples/contract_forged.png`` the same kind of page signed with a
skilled forgery of it, and ``examples/references/`` three other genuine signatures of the writer as
clean crops. The scans themselves are not copied: each signature is its ink map (paper removed)
drawn on a new page or crop.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from signver_torch.data.ink import load_ink_maps
from signver_torch.data.signatures import discover_signatures, writer_split
from signver_torch.detector.pages import PageConfig, PageSynthesizer

ROOT = Path(__file__).resolve().parent.parent


def crop_image(ink: np.ndarray, margin: int = 12) -> Image.Image:
    page = np.pad(1.0 - ink, margin, constant_values=1.0)
    return Image.fromarray((page * 255).round().astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/cedar"))
    parser.add_argument("--writer", default="39")
    parser.add_argument("--out", type=Path, default=ROOT / "examples")
    args = parser.parse_args()
    [records] = writer_split(discover_signatures(args.data), args.writer)
    genuine = load_ink_maps([r for r in records if not r.forged][:4], max_side=480, progress=False)
    forged = load_ink_maps([r for r in records if r.forged][:1], max_side=480, progress=False)
    (args.out / "references").mkdir(parents=True, exist_ok=True)
    for number, ink in enumerate(genuine[1:], start=1):
        crop_image(ink).save(args.out / "references" / f"writer{args.writer}_{number}.png", optimize=True)
    synthesizer = PageSynthesizer(PageConfig(size=900, max_initials=1, max_dates=1, max_redactions=0,
                                             min_signature_width=220, max_signature_width=260))
    for name, ink, seed in (("contract.png", genuine[0], 7), ("contract_forged.png", forged[0], 8)):
        page, _, _ = synthesizer(genuine, np.random.default_rng(seed), signatures=[ink])
        Image.fromarray((page * 255).round().astype(np.uint8)).save(args.out / name, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
