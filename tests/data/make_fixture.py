"""Build the small real test fixture in ``tests/data`` from the full shared data.

    python tests/data/make_fixture.py [--source ../shared/data]   # default: $SIGNVER_DATA or ../shared/data

Files are copied byte for byte (no re-encoding: the PIL modes of the scans are part of what the tests
check). The selection is fixed below, so a rerun gives the same files; ``MANIFEST.json`` records each
file's source path and sha256, and ``README.md`` the provenance and licences.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: CEDAR writer -> (genuine numbers, forgery numbers). 1-2 are training writers of the shipped models
#: (ink maps, calibration); 35-39 are held-out writers (39 is the examples' writer, scanned as RGBA).
CEDAR = {
    1: (range(1, 4), range(1, 4)),
    2: (range(1, 4), range(1, 4)),
    35: (range(1, 6), range(1, 6)),
    36: (range(1, 6), range(1, 6)),
    37: (range(1, 6), range(1, 6)),
    39: (range(1, 6), range(1, 6)),
}
#: Dutch SigComp 2011 writers from the validation range (037-048): first genuine and forged files.
DUTCH = {"037": (5, 4), "040": (5, 4), "044": (5, 4)}
#: Cross-media Chinese writers from the validation range (055-075) -> the names they wrote (each on four media).
CHINESE = {"070": ("n01", "n02", "n03"), "071": ("n01", "n02", "n03"), "072": ("n01", "n02", "n03")}
CHINESE_MEDIA = ("paper", "ipad", "phone-hand", "phone-table")
#: Real pages: the first 12 of the shipped detector's held-out pages (every 3rd by file name), so
#: the shipped checkpoint never trained on any of them.
DOCUMENT_PAGES = 12
SAMPLES = ("original_2_11.png", "original_2_12.png", "forgeries_2_12.png", "test_lines.png", "signdoc.jpg",
           "signed_page.png")

README = """# Test fixture: a small slice of the real data

Made by `python tests/data/make_fixture.py` from the full data folder (`../shared/data`); every file is
a byte-for-byte copy, listed with its source and sha256 in `MANIFEST.json`. The layout mirrors the full
folder, so every loader reads it the same way. Tests that need the full data (accuracy over many
writers) use `../shared/data` or `$SIGNVER_DATA` and are skipped, with the reason, without it.

| folder | what | source and licence |
|---|---|---|
| `cedar/full_org`, `cedar/full_forg` | CEDAR writers {cedar_writers}: genuine and skilled forgeries ({cedar_files} PNGs, modes L, P and RGBA) | CEDAR signature database (University at Buffalo), for research use; redistributed by the original SignVer repository (fastforwardlabs/signver), from whose history these copies come |
| `dutch/<writer>/{{genuine,forged}}` | Dutch SigComp 2011 writers {dutch_writers} ({dutch_files} grey PNGs) | ICDAR 2011 SigComp (Kaggle "sign_data" copies on GitHub), for research use |
| `chinese/<writer>/genuine/n<NN>_<medium>.png` | cross-media Chinese writers {chinese_writers}: names {chinese_names} on paper, iPad and phone ({chinese_files} grey PNGs, longest side 256 px) | dishangti/Cross-media-Signatures (Luo et al. 2023), MIT |
| `documents/images`, `documents/labels` | {n_pages} real scanned pages (mostly Tobacco-800), 640x640, YOLO labels (class 0 = signature); all are held-out pages of the shipped detector | mapo80/signature-detection (dataset1), licence unstated |
| `samples/` | {samples} | victordibia/signver and EnzoSeason/signature_detection, MIT |

CEDAR writers 1-2 are training writers of the shipped models; 35-39 and the Dutch writers were held out
of the shipped extractor's training. The Chinese writers are validation writers of the three-source recipes.
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def selection(source: Path) -> list[tuple[Path, str]]:
    """(source file, path inside the fixture) for every file of the fixture."""
    chosen = []
    for writer, (genuine, forged) in CEDAR.items():
        chosen += [(source / "cedar" / "full_org" / f"original_{writer}_{n}.png", f"cedar/full_org/original_{writer}_{n}.png") for n in genuine]
        chosen += [(source / "cedar" / "full_forg" / f"forgeries_{writer}_{n}.png", f"cedar/full_forg/forgeries_{writer}_{n}.png") for n in forged]
    for writer, (n_genuine, n_forged) in DUTCH.items():
        for kind, count in (("genuine", n_genuine), ("forged", n_forged)):
            for path in sorted((source / "dutch" / writer / kind).glob("*.png"))[:count]:
                chosen.append((path, f"dutch/{writer}/{kind}/{path.name}"))
    for writer, names in CHINESE.items():
        chosen += [(source / "chinese" / writer / "genuine" / f"{name}_{medium}.png", f"chinese/{writer}/genuine/{name}_{medium}.png")
                   for name in names for medium in CHINESE_MEDIA]
    pages = sorted((source / "documents" / "images").iterdir(), key=lambda p: p.name)[2::3][:DOCUMENT_PAGES]
    for page in pages:
        chosen.append((page, f"documents/images/{page.name}"))
        label = source / "documents" / "labels" / f"{page.stem}.txt"
        chosen.append((label, f"documents/labels/{label.name}"))
    chosen += [(source / "samples" / name, f"samples/{name}") for name in SAMPLES]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(os.environ.get("SIGNVER_DATA", HERE.parents[2] / "shared" / "data"))
    parser.add_argument("--source", type=Path, default=default, help=f"the full data folder (default: $SIGNVER_DATA or {default})")
    args = parser.parse_args()
    files = selection(args.source)
    missing = [str(src) for src, _ in files if not src.is_file()]
    if missing:
        raise SystemExit(f"make_fixture: {len(missing)} source files missing, e.g. {missing[0]}")
    for folder in ("cedar", "dutch", "chinese", "documents", "samples"):
        shutil.rmtree(HERE / folder, ignore_errors=True)
    manifest = {}
    for src, rel in files:
        target = HERE / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        manifest[rel] = {"source": str(src.relative_to(args.source)), "sha256": sha256(target)}
    (HERE / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (HERE / "README.md").write_text(README.format(
        cedar_writers=", ".join(map(str, CEDAR)), cedar_files=sum(r.startswith("cedar/") for r in manifest),
        dutch_writers=", ".join(DUTCH), dutch_files=sum(r.startswith("dutch/") for r in manifest),
        chinese_writers=", ".join(CHINESE), chinese_names=", ".join(sorted({n for names in CHINESE.values() for n in names})),
        chinese_files=sum(r.startswith("chinese/") for r in manifest),
        n_pages=DOCUMENT_PAGES, samples=", ".join(f"`{name}`" for name in SAMPLES)))
    size = sum((HERE / rel).stat().st_size for rel in manifest)
    print(f"wrote {len(manifest)} files ({size / 2**20:.1f} MiB) to {HERE}")


if __name__ == "__main__":
    main()
