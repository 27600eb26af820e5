"""Indexing documents into a :class:`~signver_torch.library.DocumentLibrary`: every page of a document
(an image, a multi-page TIFF or a PDF) read by ``SignVer.read_page`` (detected, tagged, cropped,
cleaned, embedded) and stored in one transaction per document; a document already there (the same
bytes) is skipped.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from signver_torch.errors import SignVerError
from signver_torch.io import DEFAULT_MAX_PAGES, IMAGE_SUFFIXES, PDF_DPI, load_pages
from signver_torch.library import AlreadyIndexedError, DocumentLibrary, LibraryError, PageRecord

#: The file kinds ``signver index`` picks up in a folder.
DOCUMENT_SUFFIXES = (*IMAGE_SUFFIXES, ".pdf")


def document_files(folder: str | os.PathLike) -> list[Path]:
    """The documents in ``folder`` (recursively), by path."""
    root = Path(folder)
    if not root.is_dir():
        raise LibraryError(f"{root}: not a folder")
    return sorted(path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in DOCUMENT_SUFFIXES)


@dataclass
class Indexed:
    """What happened to one document: ``document_id`` when stored, ``skipped`` when already there, else ``error``."""

    name: str
    document_id: int | None = None
    n_pages: int = 0
    n_signatures: int = 0
    skipped: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in vars(self).items() if value not in (None, False)}


def document_digest(data: bytes) -> str:
    """A document's identity in every library: the sha256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def read_document(signver: Any, name: str, data: bytes, *, dpi: int = PDF_DPI,
                  max_pages: int = DEFAULT_MAX_PAGES) -> list[PageRecord | str]:
    """Every page of one document read by the models (``SignVer.read_page``) in its stored form, or, for a
    page the models could not read, the one-line reason. A document that cannot be opened raises its
    :class:`SignVerError`. The one reading both engines (this module and ``distributed.py``) share."""
    records: list[PageRecord | str] = []
    for number, page in enumerate(load_pages(data, dpi=dpi, max_pages=max_pages, name=name), start=1):
        try:
            records.append(PageRecord.of(signver.read_page(page)))
        except SignVerError as error:
            records.append(f"{name}: page {number}: {' '.join(str(error).split())}")
    return records


def index_document(signver: Any, library: DocumentLibrary, name: str, data: bytes, *, dpi: int = PDF_DPI,
                   max_pages: int = DEFAULT_MAX_PAGES) -> Indexed:
    """Read every page of one document (bytes of an image, a multi-page TIFF or a PDF) and store it.
    A document that cannot be read, or one of whose pages cannot, is reported in ``error``; nothing of it is stored."""
    digest = document_digest(data)
    existing = library.find(digest)
    if existing is not None:
        return Indexed(name, existing, skipped=True)
    try:
        records = read_document(signver, name, data, dpi=dpi, max_pages=max_pages)
        failed = [record for record in records if isinstance(record, str)]
        if failed:
            return Indexed(name, error=failed[0])
        document = library.add(name, digest, records)  # type: ignore[arg-type] (no failures left)
    except AlreadyIndexedError as error:  # added meanwhile by another writer
        return Indexed(name, error.document_id, skipped=True)
    except SignVerError as error:
        return Indexed(name, error=" ".join(str(error).split()))
    return Indexed(name, document, len(records), sum(len(record.boxes) for record in records))  # type: ignore[union-attr]


def index_files(signver: Any, library: DocumentLibrary, files: Sequence[str | os.PathLike],
                progress: Callable[[Indexed], None] | None = None, **options: Any) -> list[Indexed]:
    """Index each file in turn (one transaction each); ``progress`` is told after every file."""
    results = []
    for path in files:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            result = Indexed(str(path), error=f"{path}: cannot read ({error.strerror or error})")
        else:
            result = index_document(signver, library, str(path), data, **options)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


__all__ = ["DOCUMENT_SUFFIXES", "Indexed", "document_digest", "document_files", "index_document", "index_files", "read_document"]
