"""Signature datasets: the CEDAR layout and writer folders, writer-disjoint splits, labels.

Layouts (detected automatically by :func:`discover_signatures`):

* CEDAR: ``full_org/original_W_N.png`` and ``full_forg/forgeries_W_N.png`` (``ROOT`` may also be the
  folder that holds ``cedar/``).
* Writer folders (private signatures): ``ROOT/<writer>/genuine/*`` and optional ``ROOT/<writer>/forged/*``.

Several roots (sources) may be read together, in any mix of layouts: writer ids are then namespaced by
source, ``cedar:12`` and ``dutch:012``, so two sources' writers never merge, and writer specifications
name them the same way (``cedar:1-32,dutch:001-036``).

Each writer owns two classes, genuine and skilled-forged (``2 * i`` and ``2 * i + 1``), so metric
learning pushes a writer's forgeries away from the writer's genuine signatures.

A writer-folder file named ``n<NN>_<medium>`` (``n03_paper.png``) declares the text it writes (``n03``)
and the medium it was written on (``paper``): other writers' signatures of the same text are then
content-matched impostors (the same name in another hand), and classes may be (writer, text).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence, Union

import torch
from torch.utils.data import Dataset

from signver_torch.errors import DataError
from signver_torch.io import IMAGE_SUFFIXES, load_image_tensor

_CEDAR_NAME = re.compile(r"^(original|forgeries)_(\d+)_(\d+)$")
_TEXT_NAME = re.compile(r"^(n\d+)_(.+)$")


#: One data folder or several (sources): a path, or a sequence of paths.
DataRoots = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]
SOURCE_SEPARATOR = ":"


@dataclass(frozen=True)
class SignatureRecord:
    path: Path
    writer: str
    forged: bool

    @property
    def source(self) -> str:
        """The source the writer comes from (``""`` when a single folder was read)."""
        return source_of_writer(self.writer)

    @property
    def text(self) -> str | None:
        """The text the file declares by its name (``n03_paper.png`` → ``n03``), else ``None``."""
        match = _TEXT_NAME.match(self.path.stem)
        return match.group(1) if match else None

    @property
    def medium(self) -> str | None:
        """The medium the file declares by its name (``n03_paper.png`` → ``paper``), else ``None``."""
        match = _TEXT_NAME.match(self.path.stem)
        return match.group(2) if match else None


def source_of_writer(writer: str) -> str:
    """The source of a namespaced writer id (``cedar:12`` → ``cedar``; ``""`` for a bare id)."""
    return writer.rpartition(SOURCE_SEPARATOR)[0]


def data_roots(data: DataRoots) -> list[Path]:
    """The folders of ``data``: one path, or several."""
    roots = [Path(data)] if isinstance(data, (str, os.PathLike)) else [Path(root) for root in data]
    if not roots:
        raise DataError("no data folder given")
    return roots


def data_text(data: DataRoots) -> str:
    """``data`` as a command line and a card write it: the folders separated by spaces."""
    return " ".join(str(root) for root in data_roots(data))


def source_names(roots: Sequence[Path]) -> list[str]:
    """A short name per source: its folder's name (``cedar``, ``dutch``), numbered where two agree."""
    names = [(root.name or str(root)).lower().replace(SOURCE_SEPARATOR, "_") for root in roots]
    return [name if names.count(name) == 1 else f"{name}{names[:i].count(name) + 1}" for i, name in enumerate(names)]


def discover_signatures(root: DataRoots, writers: str | Sequence[str] | None = None) -> list[SignatureRecord]:
    """List every signature under ``root`` (one folder or several, each in the CEDAR or writer-folder
    layout), sorted; only those of ``writers`` (a range/list as in :func:`writer_split`) when given.
    With several folders, writer ids are namespaced by source (``cedar:12``)."""
    if writers is not None:
        [records] = writer_split(discover_signatures(root), writers)
        return records
    roots = data_roots(root)
    if len(roots) > 1:
        return [replace(record, writer=f"{name}{SOURCE_SEPARATOR}{record.writer}")
                for name, folder in zip(source_names(roots), roots) for record in _discover_folder(folder)]
    return _discover_folder(roots[0])


def _discover_folder(root: Path) -> list[SignatureRecord]:
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


def writer_sort_key(writer: str) -> tuple[str, int, str]:
    """Sources in name order, then numeric ids by value, then the other names."""
    source, _, name = writer.rpartition(SOURCE_SEPARATOR)
    return (source, int(name), "") if name.isdigit() else (source, 10**9, name)


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
        source, separator, name = item.rpartition(SOURCE_SEPARATOR)
        prefix = f"{source.strip()}{separator}"
        bounds = re.fullmatch(r"(\d+)\s*-\s*(\d+)", name.strip())
        if bounds and not (available is not None and item in available):  # a folder named "2019-2020"
            low, high = int(bounds.group(1)), int(bounds.group(2))
            if low > high:
                raise DataError(f"writer range {item!r} is empty (start after end)")
            width = len(bounds.group(1)) if bounds.group(1).startswith("0") else 0  # Dutch ids: 001-036
            writers += [f"{prefix}{w:0{width}d}" for w in range(low, high + 1)]
        else:
            writers.append(f"{prefix}{name.strip()}")
    if not writers:
        raise DataError(f"writer specification {spec!r} names no writers")
    if available is not None:
        missing = sorted(set(writers) - set(available), key=writer_sort_key)
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            sources = sorted({w.rpartition(SOURCE_SEPARATOR)[0] for w in available} - {""})
            hint = f" (writers are named by source: {', '.join(f'{s}:ID' for s in sources)})" if sources else ""
            raise DataError(f"writers not in the data: {shown}{hint}")
    return list(dict.fromkeys(writers))


def writers_text(writers: str | Sequence[str] | None) -> str | None:
    """``writers`` as written on a command line and in cards: a range/list string kept as is, a
    sequence joined by commas (``None`` stays ``None``)."""
    return writers if writers is None or isinstance(writers, str) else ",".join(map(str, writers))


def compact_writers(writers: Sequence[str]) -> str:
    """``["1", "2", "3", "7"]`` → ``"1-3,7"``; ``["cedar:1", "cedar:2", "dutch:001", "dutch:002"]`` →
    ``"cedar:1-2,dutch:001-002"``: the inverse of :func:`parse_writers` (other names are listed as they are)."""
    parts: list[str] = []
    run: list[str] = []  # consecutive numbers of one source, written alike (same zero padding)

    def close() -> None:
        if run:
            source, _, first = run[0].rpartition(SOURCE_SEPARATOR)
            prefix = f"{source}{SOURCE_SEPARATOR}" if source else ""
            parts.append(run[0] if len(run) == 1 else f"{prefix}{first}-{run[-1].rpartition(SOURCE_SEPARATOR)[2]}")
            run.clear()

    for writer in sorted(writers, key=writer_sort_key):
        source, _, name = writer.rpartition(SOURCE_SEPARATOR)
        if not name.isdigit():
            close()
            parts.append(writer)
            continue
        if run:
            last_source, _, last = run[-1].rpartition(SOURCE_SEPARATOR)
            padded = last.startswith("0") or name.startswith("0")
            if last_source == source and int(name) == int(last) + 1 and (not padded or len(name) == len(last)):
                run.append(writer)
                continue
            close()
        run.append(writer)
    close()
    return ",".join(parts)


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


#: What a training class is: a writer, or a writer writing one declared text (:attr:`SignatureRecord.text`).
CLASS_KINDS = ("writer", "writer_text")


def class_key(record: SignatureRecord, classes: str = "writer") -> str:
    """The class ``record`` belongs to: its writer, or with ``classes="writer_text"`` its writer and
    declared text (``chinese:003/n05``; records without a declared text keep the writer)."""
    if classes not in CLASS_KINDS:
        raise DataError(f"classes must be one of {', '.join(CLASS_KINDS)}, not {classes!r}")
    return f"{record.writer}/{record.text}" if classes == "writer_text" and record.text else record.writer


def class_labels(records: Sequence[SignatureRecord], classes: str = "writer") -> tuple[torch.Tensor, list[str]]:
    """Labels ``2 * class_index + forged`` and the class order they index (writers, or (writer, text)
    keys with ``classes="writer_text"``, :func:`class_key`)."""
    keys = sorted({class_key(r, classes) for r in records}, key=_class_sort_key)
    index = {k: i for i, k in enumerate(keys)}
    labels = torch.tensor([2 * index[class_key(r, classes)] + int(r.forged) for r in records], dtype=torch.long)
    return labels, keys


def _class_sort_key(key: str) -> tuple[tuple[str, int, str], str]:
    writer, _, text = key.partition("/")
    return writer_sort_key(writer), text


def decode_labels(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The writer index and the forged flag of each :func:`class_labels` label."""
    return labels // 2, labels % 2 == 1


class SignatureImages(Dataset):
    """Grayscale ``(1, H, W)`` tensors of ``records`` at their own size, with their class labels."""

    def __init__(self, records: Sequence[SignatureRecord], classes: str = "writer") -> None:
        if not records:
            raise DataError("no signatures selected")
        self.records = list(records)
        self.labels, self.writers = class_labels(self.records, classes)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return load_image_tensor(self.records[index].path, "L"), int(self.labels[index])
