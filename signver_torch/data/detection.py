"""Detection datasets: YOLO, SignVerOD (Kaggle CSV) and COCO JSON, all as torchvision targets.

Every dataset yields ``(image, target)`` with ``image`` a ``(3, H, W)`` float tensor in ``[0, 1]`` and
``target = {"boxes": (K, 4) float xyxy pixels, "labels": (K,) int64 in 1..4, "image_id": str}``.
Classes follow the original SignVer: 1 signature, 2 initials, 3 redaction, 4 date. Pages without
boxes are valid (an empty target). A malformed row, a box outside its image or a missing file is a
:class:`~signver_torch.errors.DataError` naming the file (and line).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from signver_torch.errors import DataError, ImageLoadError
from signver_torch.io import IMAGE_SUFFIXES, load_image_tensor

#: SignVer's detection classes (label → name); label 0 is never used (torchvision's background).
CLASS_NAMES = {1: "signature", 2: "initials", 3: "redaction", 4: "date"}
#: How far (in pixels) a box may reach past the image edge before it is an error, not rounding.
EDGE_TOLERANCE = 2.0


@dataclass(frozen=True)
class PageRecord:
    """One page: its image file and its boxes (xyxy pixels) with SignVer labels."""

    path: Path
    boxes: tuple[tuple[float, float, float, float], ...]
    labels: tuple[int, ...]


class DetectionPages(Dataset):
    """Pages of any layout as torchvision detection samples (see the module docstring)."""

    def __init__(self, records: Sequence[PageRecord]) -> None:
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor | str]]:
        record = self.records[index]
        image = load_image_tensor(record.path, "RGB")
        return image, target_of(record)


def target_of(record: PageRecord) -> dict[str, torch.Tensor | str]:
    return {
        "boxes": torch.tensor(record.boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(record.labels, dtype=torch.int64),
        "image_id": record.path.name,
    }


#: The file ``signver synthesize`` leaves in the folder it drew (pages: a YOLO folder; writers: writer folders): the
#: command that drew it (not a COCO file, not a writer).
SYNTHESIS_RECORD = "signver-synthesis.json"


def read_detection_dataset(root: str | Path, class_map: Mapping[int, int] | None = None) -> list[PageRecord]:
    """Read ``root`` in whichever layout it has: SignVerOD (``train.csv``/``test.csv`` + ``image_ids.csv``),
    COCO (a ``*.json`` with ``images``/``annotations``) or YOLO (``images/`` + ``labels/``).

    ``class_map`` maps the dataset's class ids to SignVer labels (YOLO default ``{0: 1}``: class 0 is
    a signature; COCO and SignVerOD default to their ids as they are).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: detection data folder not found")
    if (root / "image_ids.csv").is_file():
        return read_signver_od(root, class_map)
    coco = [path for path in sorted(root.glob("*.json")) if path.name != SYNTHESIS_RECORD]
    if coco:
        return read_coco(coco[0], class_map)
    if (root / "images").is_dir():
        return read_yolo(root, class_map)
    raise DataError(f"{root}: no detection layout found (YOLO images/+labels/, SignVerOD image_ids.csv, or COCO *.json)")


def _image_size(path: Path) -> tuple[int, int]:
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            return image.size
    except OSError as error:
        raise ImageLoadError(f"{path}: not a readable image ({error})") from error


def _checked_box(
    box: tuple[float, float, float, float], size: tuple[int, int], where: str
) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    width, height = size
    if not (x1 > x0 and y1 > y0):
        raise DataError(f"{where}: empty or inverted box {box}")
    if x0 < -EDGE_TOLERANCE or y0 < -EDGE_TOLERANCE or x1 > width + EDGE_TOLERANCE or y1 > height + EDGE_TOLERANCE:
        raise DataError(f"{where}: box {tuple(round(v, 1) for v in box)} lies outside the {width}x{height} image")
    return (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))


def _mapped(label: int, class_map: Mapping[int, int] | None, where: str) -> int:
    mapped = class_map.get(label) if class_map is not None else label
    if mapped not in CLASS_NAMES:
        known = f" (class map {dict(class_map)})" if class_map is not None else ""
        raise DataError(f"{where}: class {label} is not one of SignVer's 1-4{known}")
    return mapped


def read_yolo(root: Path, class_map: Mapping[int, int] | None = None) -> list[PageRecord]:
    """``images/<stem>.<ext>`` + ``labels/<stem>.txt`` (``class cx cy w h`` normalised); a page without
    a label file or with an empty one has no boxes."""
    class_map = {0: 1} if class_map is None else class_map
    images = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{root / 'images'}: no images")
    records = []
    for image in images:
        label_file = root / "labels" / f"{image.stem}.txt"
        boxes, labels = [], []
        if label_file.is_file():
            size = _image_size(image)
            for number, line in enumerate(label_file.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                where = f"{label_file}:{number}"
                try:
                    cls, cx, cy, w, h = line.split()
                    label, cx, cy, w, h = int(cls), float(cx), float(cy), float(w), float(h)
                except ValueError:
                    raise DataError(f"{where}: expected 'class cx cy w h', got {line.strip()!r}") from None
                box = ((cx - w / 2) * size[0], (cy - h / 2) * size[1], (cx + w / 2) * size[0], (cy + h / 2) * size[1])
                boxes.append(_checked_box(box, size, where))
                labels.append(_mapped(label, class_map, where))
        records.append(PageRecord(image, tuple(boxes), tuple(labels)))
    return records


def read_signver_od(root: Path, class_map: Mapping[int, int] | None = None, split: str | None = None) -> list[PageRecord]:
    """SignVerOD (Kaggle): ``image_ids.csv`` (``id,file_name,height,width``) and ``train.csv``/``test.csv``
    (``id,image_id,category_id,bbox,area``, bbox ``[x, y, w, h]`` normalised); images under ``images/``."""
    pages: dict[str, tuple[Path, tuple[int, int]]] = {}
    index = root / "image_ids.csv"
    image_dir = root / "images" if (root / "images").is_dir() else root
    for number, row in enumerate(_csv_rows(index, ("id", "file_name", "height", "width")), start=2):
        try:
            pages[row["id"]] = (image_dir / row["file_name"], (int(float(row["width"])), int(float(row["height"]))))
        except ValueError:
            raise DataError(f"{index}:{number}: height and width must be numbers") from None
    boxes: dict[str, list[tuple[tuple[float, float, float, float], int]]] = {key: [] for key in pages}
    splits = [root / f"{split}.csv"] if split else [p for p in (root / "train.csv", root / "test.csv") if p.is_file()]
    for table in splits:
        for number, row in enumerate(_csv_rows(table, ("image_id", "category_id", "bbox")), start=2):
            where = f"{table}:{number}"
            if row["image_id"] not in pages:
                raise DataError(f"{where}: image_id {row['image_id']} is not in {index.name}")
            try:
                x, y, w, h = (float(v) for v in json.loads(row["bbox"]))
                label = int(float(row["category_id"]))
            except (ValueError, TypeError):
                raise DataError(f"{where}: bbox must be [x, y, w, h] and category_id a number") from None
            path, size = pages[row["image_id"]]
            box = (x * size[0], y * size[1], (x + w) * size[0], (y + h) * size[1])
            boxes[row["image_id"]].append((_checked_box(box, size, where), _mapped(label, class_map, where)))
    if split:  # only the pages of that split
        listed = {row["image_id"] for row in _csv_rows(splits[0], ("image_id",))}
        pages = {key: value for key, value in pages.items() if key in listed}
    records = []
    for key, (path, _) in sorted(pages.items(), key=lambda item: item[1][0].name):
        if not path.is_file():
            raise DataError(f"{path}: image file listed in {index.name} not found")
        found = boxes[key]
        records.append(PageRecord(path, tuple(b for b, _ in found), tuple(label for _, label in found)))
    return records


def _csv_rows(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in required if column not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        return list(reader)


def read_coco(path: Path, class_map: Mapping[int, int] | None = None) -> list[PageRecord]:
    """COCO JSON (``images``, ``annotations`` with ``bbox`` ``[x, y, w, h]`` in pixels); images beside it
    or under ``images/``."""
    try:
        coco = json.loads(path.read_text())
        images = {image["id"]: image for image in coco["images"]}
        annotations = coco.get("annotations", [])
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not a COCO detection file ({error})") from error
    image_dir = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    found: dict[int, list[tuple[tuple[float, float, float, float], int]]] = {key: [] for key in images}
    for number, annotation in enumerate(annotations):
        where = f"{path}: annotation {number}"
        try:
            image = images[annotation["image_id"]]
            x, y, w, h = (float(v) for v in annotation["bbox"])
            label = int(annotation["category_id"])
            size = (int(image["width"]), int(image["height"]))
        except (KeyError, ValueError, TypeError) as error:
            raise DataError(f"{where}: malformed ({error})") from error
        found[annotation["image_id"]].append((_checked_box((x, y, x + w, y + h), size, where), _mapped(label, class_map, where)))
    records = []
    for key, image in sorted(images.items(), key=lambda item: str(item[1].get("file_name"))):
        file = image_dir / str(image.get("file_name"))
        if not file.is_file():
            raise DataError(f"{file}: image file listed in {path.name} not found")
        records.append(PageRecord(file, tuple(b for b, _ in found[key]), tuple(label for _, label in found[key])))
    return records


def split_pages(records: Sequence[PageRecord], every: int = 3) -> tuple[list[PageRecord], list[PageRecord]]:
    """A fixed train/held-out split of real pages: every ``every``-th page (sorted by file name) is held out."""
    ordered = sorted(records, key=lambda record: record.path.name)
    return [r for i, r in enumerate(ordered) if i % every != every - 1], ordered[every - 1 :: every]


__all__ = [
    "CLASS_NAMES",
    "DetectionPages",
    "PageRecord",
    "read_coco",
    "read_detection_dataset",
    "read_signver_od",
    "read_yolo",
    "split_pages",
    "target_of",
]


def parse_class_map(text: str | None) -> dict[int, int] | None:
    """``"0:1,1:4"`` → ``{0: 1, 1: 4}`` (dataset class → SignVer label)."""
    if not text:
        return None
    try:
        return {int(a): int(b) for a, b in (pair.split(":") for pair in text.split(","))}
    except ValueError:
        raise DataError(f"--class-map {text!r}: expected pairs like 0:1,1:4 (dataset class:SignVer label)") from None
