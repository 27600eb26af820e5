"""Signature datasets: the CEDAR layout and writer folders, writer-disjoint splits, labels.

Layouts (detected automatically by :func:`discover_signatures`):

* CEDAR: ``full_org/original_W_N.png`` and ``full_forg/forgeries_W_N.png`` (``ROOT`` may also be the
  folder that holds ``cedar/``).
* Writer folders (private signatures): ``ROOT/<writer>/genuine/*`` and optional ``ROOT/<writer>/forged/*``.

Each writer owns two classes, genuine and skilled-forged (``2 * i`` and ``2 * i + 1``), so metric
learning pushes a writer's forgeries away from the writer's genuine signatures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch.utils.data import Dataset

from signver_torch.errors import DataError
from signver_torch.io import load_image_tensor

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
_CEDAR_NAME = re.compile(r"^(original|forgeries)_(\d+)_(\d+)$")


@dataclass(frozen=True)
class SignatureRecord:
    path: Path
    writer: str
    forged: bool


def discover_signatures(root: str | Path, writers: str | Sequence[str] | None = None) -> list[SignatureRecord]:
    """List every signature under ``root`` in the CEDAR or writer-folder layout, sorted; only those of
    ``writers`` (a range/list as in :func:`writer_split`) when given."""
    if writers is not None:
        [records] = writer_split(discover_signatures(root), writers)
        return records
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: signature folder not found")
    if (root / "cedar" / "full_org").is_dir():
        root = root / "cedar"
    if (root / "full_org").is_dir():
        return _cedar_records(root)
    folders = [d for d in sorted(root.iterdir()) if (d / "genuine").is_dir()]
    if folders:
        return _writer_folder_records(folders)
    raise DataError(
        f"{root}: no signatures found; expected CEDAR (full_org/, full_forg/) or writer folders "
        "(<writer>/genuine/, optional <writer>/forged/)"
    )


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _cedar_records(root: Path) -> list[SignatureRecord]:
    records = []
    for folder in ("full_org", "full_forg"):
        if not (root / folder).is_dir():
            continue
        for path in _images_in(root / folder):
            match = _CEDAR_NAME.match(path.stem)
            if match is None:
                raise DataError(f"{path}: not a CEDAR file name (expected original_W_N or forgeries_W_N)")
            records.append(SignatureRecord(path, match.group(2), match.group(1) == "forgeries"))
    return sorted(records, key=lambda r: (writer_sort_key(r.writer), r.forged, r.path.name))


def _writer_folder_records(writers: Iterable[Path]) -> list[SignatureRecord]:
    records = []
    for writer in writers:
        genuine = _images_in(writer / "genuine")
        if not genuine:
            raise DataError(f"{writer / 'genuine'}: no images (every writer needs genuine signatures)")
        records += [SignatureRecord(path, writer.name, False) for path in genuine]
        if (writer / "forged").is_dir():
            records += [SignatureRecord(path, writer.name, True) for path in _images_in(writer / "forged")]
    return records


def writer_sort_key(writer: str) -> tuple[int, str]:
    return (int(writer), "") if writer.isdigit() else (10**9, writer)


def parse_writers(spec: str | Sequence[str | int] | None, available: Sequence[str] | None = None) -> list[str]:
    """Parse ``"1-32"``, ``"1-10,15,20-22"``, ``"alice,bob"`` or a list into writer ids.

    With ``available`` given, every requested writer must exist there.
    """
    if spec is None:
        if available is None:
            raise DataError("no writers given")
        return list(available)
    items = spec.split(",") if isinstance(spec, str) else [str(item) for item in spec]
    writers: list[str] = []
    for item in (item.strip() for item in items):
        if not item:
            continue
        bounds = re.fullmatch(r"(\d+)\s*-\s*(\d+)", item)
        if bounds and not (available is not None and item in available):  # a folder named "2019-2020"
            low, high = int(bounds.group(1)), int(bounds.group(2))
            if low > high:
                raise DataError(f"writer range {item!r} is empty (start after end)")
            writers += [str(w) for w in range(low, high + 1)]
        else:
            writers.append(item)
    if not writers:
        raise DataError(f"writer specification {spec!r} names no writers")
    if available is not None:
        missing = sorted(set(writers) - set(available), key=writer_sort_key)
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise DataError(f"writers not in the data: {shown}")
    return list(dict.fromkeys(writers))


def writers_text(writers: str | Sequence[str] | None) -> str | None:
    """``writers`` as written on a command line and in cards: a range/list string kept as is, a
    sequence joined by commas (``None`` stays ``None``)."""
    return writers if writers is None or isinstance(writers, str) else ",".join(map(str, writers))


def writer_split(
    records: Sequence[SignatureRecord], *splits: str | Sequence[str] | None
) -> list[list[SignatureRecord]]:
    """Filter ``records`` by each writer specification; the splits must not share a writer."""
    available = sorted({r.writer for r in records}, key=writer_sort_key)
    chosen = [set(parse_writers(spec, available)) for spec in splits]
    for i in range(len(chosen)):
        for j in range(i + 1, len(chosen)):
            shared = chosen[i] & chosen[j]
            if shared:
                raise DataError(
                    f"writer splits overlap (writer-independent evaluation needs disjoint writers): "
                    f"{', '.join(sorted(shared, key=writer_sort_key)[:10])}"
                )
    return [[r for r in records if r.writer in writers] for writers in chosen]


def class_labels(records: Sequence[SignatureRecord]) -> tuple[torch.Tensor, list[str]]:
    """Labels ``2 * writer_index + forged`` and the writer order they index."""
    writers = sorted({r.writer for r in records}, key=writer_sort_key)
    index = {w: i for i, w in enumerate(writers)}
    labels = torch.tensor([2 * index[r.writer] + int(r.forged) for r in records], dtype=torch.long)
    return labels, writers


class SignatureImages(Dataset):
    """Grayscale ``(1, H, W)`` tensors of ``records`` at their own size, with their class labels."""

    def __init__(self, records: Sequence[SignatureRecord]) -> None:
        if not records:
            raise DataError("no signatures selected")
        self.records = list(records)
        self.labels, self.writers = class_labels(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return load_image_tensor(self.records[index].path, "L"), int(self.labels[index])
