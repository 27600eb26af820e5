"""A searchable collection of documents: every page's detections, tags, signature crops and embeddings.

``signver index DIR --library LIB`` and the service's ``POST /api/library/documents`` fill it (through
``indexing.py``); it answers "which documents are signed and dated?" and "where does this person (or this example
signature) sign?". One SQLite file (WAL): each document is written in one transaction, so a crash or a
``kill -9`` while indexing loses only the document being written, never one already committed.

Search ranks signatures by their mean cosine distance to the query's references. The mean of
``1 - q·m`` over references ``q`` equals ``1 - q̄·m`` with ``q̄`` their mean, so one inner-product
search over the library answers it, exactly (torch) or with FAISS.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from signver_torch.detector.marks import TAGS, Detection, Mark, detections
from signver_torch.errors import NotFoundError, SignVerError
from signver_torch.matcher.gallery import Backend, SearchIndex, resolve_backend
from signver_torch.store import EmbeddingStore, now

#: Longest side of a stored page thumbnail, in pixels.
THUMBNAIL_SIZE = 320


class LibraryError(SignVerError):
    """The library file is missing or corrupt, or was asked something it cannot answer."""


class NotInLibraryError(LibraryError, NotFoundError):
    """No document, page or signature of that id is stored."""


class AlreadyIndexedError(LibraryError):
    """The document (the same bytes) is already stored, as ``document_id``."""

    def __init__(self, message: str, document_id: int) -> None:
        super().__init__(message)
        self.document_id = document_id


@dataclass(frozen=True)
class DocumentHit:
    """A document found by a signature search: its closest signature and how close."""

    document_id: int
    name: str
    page: int
    signature_id: int
    box: list[float]
    distance: float

    def as_dict(self) -> dict[str, Any]:
        return {"document_id": self.document_id, "name": self.name, "page": self.page, "signature_id": self.signature_id,
                "box_xyxy": [round(v, 1) for v in self.box], "distance": round(self.distance, 4)}


def png_bytes(image: Image.Image | np.ndarray, max_side: int | None = None) -> bytes:
    """PNG-encoded ``image`` (a PIL image or a grayscale array in [0, 1]), shrunk to ``max_side``."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
    if max_side is not None and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


@dataclass(frozen=True)
class PageRecord:
    """One page as every library stores it (the SQLite library and the Parquet shards of
    ``distributed.py``): size, tags, thumbnail, every mark and each signature's box, score, embedding and PNGs."""

    size: tuple[int, int]
    tags: dict[str, bool]
    thumbnail: bytes
    marks: list[tuple[int, float, list[float]]]  # (label, score, box xyxy) of every detection
    boxes: list[list[float]]  # the signatures, xyxy page pixels
    scores: list[float]
    embeddings: np.ndarray  # (len(boxes), D) float32
    crops: list[bytes]  # PNGs
    cleaned: list[bytes]

    @classmethod
    def of(cls, reading: Any) -> "PageRecord":
        """The stored form of a :class:`~signver_torch.pipeline.PageReading`."""
        return cls(tuple(reading.image.size), {tag: bool(reading.tags[tag]) for tag in TAGS},
                   png_bytes(reading.image, THUMBNAIL_SIZE),
                   [(int(mark.mark), float(mark.score), list(mark.box)) for mark in detections(reading.detections)],
                   [list(box) for box in reading.boxes], list(reading.scores),
                   np.asarray(reading.embeddings, np.float32).reshape(len(reading.boxes), -1) if reading.boxes
                   else np.zeros((0, 0), np.float32),
                   [png_bytes(crop) for crop in reading.crops], [png_bytes(clean) for clean in reading.cleaned])


def tag_filter(tags: Iterable[str]) -> list[tuple[str, bool]]:
    """``["signed", "not:dated"]`` → ``[("signed", True), ("dated", False)]``: what a document must carry (on any page)."""
    wanted = []
    for tag in tags:
        name = tag.removeprefix("not:")
        if name not in TAGS:
            raise LibraryError(f"unknown tag {tag!r}: one of {', '.join(TAGS)}, or not:<tag>")
        wanted.append((name, tag == name))
    return wanted


def rank_documents(index: SearchIndex, keys: Sequence[tuple[int, str, int, int, list[float]]], references: np.ndarray,
                   k: int, error: type[SignVerError]) -> list[DocumentHit]:
    """The ``k`` documents whose closest signature is nearest to ``references`` ``(R, D)`` (one or more
    embeddings of one writer), by mean cosine distance, best first; ``keys[i]`` names the document, page,
    signature and box of the index's row ``i``. Shared by every library."""
    query = np.atleast_2d(np.asarray(references, np.float32))
    if query.shape[1] != index.dimensions:
        raise error(f"query has {query.shape[1]} dimensions, the library's embeddings {index.dimensions}")
    wanted = max(k * 8, 64)
    while True:  # widen until k documents are found (one document may hold many close signatures) or all are seen
        order, similarity = index.search(query.mean(0, keepdims=True), wanted)
        best: dict[int, DocumentHit] = {}
        for position, score in zip(order.tolist(), similarity.tolist()):
            document, name, page, signature, box = keys[position]
            if document not in best:
                best[document] = DocumentHit(document, name, page, signature, box, 1.0 - float(score))
        if len(best) >= k or wanted >= index.size:
            return sorted(best.values(), key=lambda hit: hit.distance)[:k]
        wanted *= 4


class DocumentLibrary(EmbeddingStore):
    """Documents, their pages (tags, thumbnail), every detected mark, and each signature's crops and
    embedding, in one SQLite file built with one extractor checkpoint.

    Args:
        path: the SQLite file (created when ``create`` is true).
        extractor_sha256: sha256 of the extractor that embeds the signatures and the queries.
        backend: search with ``"faiss"``, exact ``"torch"``, or ``"auto"`` (FAISS when installed).
    """

    kind = "library"
    error = LibraryError
    missing_error = NotInLibraryError

    def __init__(self, path: str | os.PathLike, extractor_sha256: str, *, create: bool = True,
                 backend: Backend = "auto") -> None:
        self.missing_hint = f" (index documents first: signver index DIR --library {path})"
        self.backend = resolve_backend(backend, LibraryError)
        super().__init__(path, extractor_sha256, create=create)

    def _create_tables(self) -> None:
        for statement in """
            CREATE TABLE IF NOT EXISTS documents (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
                sha256 TEXT NOT NULL UNIQUE, n_pages INTEGER NOT NULL, indexed_at TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS pages (id INTEGER PRIMARY KEY,
                document_id INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE, number INTEGER NOT NULL,
                width INTEGER NOT NULL, height INTEGER NOT NULL, signed INTEGER NOT NULL, initialled INTEGER NOT NULL,
                redacted INTEGER NOT NULL, dated INTEGER NOT NULL, thumbnail BLOB NOT NULL);
            CREATE TABLE IF NOT EXISTS marks (id INTEGER PRIMARY KEY,
                page_id INTEGER NOT NULL REFERENCES pages (id) ON DELETE CASCADE, label INTEGER NOT NULL,
                score REAL NOT NULL, x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS signatures (id INTEGER PRIMARY KEY,
                page_id INTEGER NOT NULL REFERENCES pages (id) ON DELETE CASCADE, score REAL NOT NULL,
                x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,
                embedding BLOB NOT NULL, crop BLOB NOT NULL, cleaned BLOB NOT NULL);
            CREATE INDEX IF NOT EXISTS pages_document ON pages (document_id);
            CREATE INDEX IF NOT EXISTS marks_page ON marks (page_id);
            CREATE INDEX IF NOT EXISTS signatures_page ON signatures (page_id)
        """.split(";"):  # one by one: executescript would commit the opening transaction
            self._db.execute(statement)

    def find(self, sha256: str) -> int | None:
        """The id of the document with these bytes, if it is indexed."""
        row = self._db.execute("SELECT id FROM documents WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else int(row[0])

    def add(self, name: str, sha256: str, records: Sequence[PageRecord]) -> int:
        """Store one document (a :class:`PageRecord` per page) in one transaction; returns its id.
        ``name`` is a label only, never used as a path."""
        if not records:
            raise LibraryError(f"{name}: a document needs at least one page")
        with self._transaction():  # the check inside the write lock: another process may add the same bytes
            existing = self.find(sha256)
            if existing is not None:
                raise AlreadyIndexedError(f"{name}: already in the library (document {existing})", existing)
            document = self._db.execute("INSERT INTO documents (name, sha256, n_pages, indexed_at) VALUES (?, ?, ?, ?)",
                                        (Path(name).name or "document", sha256, len(records), now())).lastrowid
            for number, record in enumerate(records, start=1):
                page = self._db.execute(
                    "INSERT INTO pages (document_id, number, width, height, signed, initialled, redacted, dated, thumbnail) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (document, number, *record.size, *(int(record.tags[tag]) for tag in TAGS), record.thumbnail)).lastrowid
                self._db.executemany("INSERT INTO marks (page_id, label, score, x0, y0, x1, y1) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                     ((page, label, score, *box) for label, score, box in record.marks))
                self._db.executemany(
                    "INSERT INTO signatures (page_id, score, x0, y0, x1, y1, embedding, crop, cleaned) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    ((page, score, *box, embedding.tobytes(), crop, clean)
                     for box, score, embedding, crop, clean in zip(record.boxes, record.scores, record.embeddings,
                                                                   record.crops, record.cleaned)))
        return int(document)

    def remove(self, document_id: int) -> None:
        with self._transaction():
            if self._db.execute("DELETE FROM documents WHERE id = ?", (document_id,)).rowcount == 0:
                raise NotInLibraryError(f"{self.path}: no document {document_id}")

    def documents(self, tags: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Every document (newest first) with its tags; ``tags`` keeps those carrying all of them
        (``"not:signed"`` keeps those without)."""
        conditions = [f"{'' if on else 'NOT '}MAX({tag}) = 1" for tag, on in tag_filter(tags)]
        having = f" HAVING {' AND '.join(conditions)}" if conditions else ""
        rows = self._db.execute(
            f"SELECT d.id, d.name, d.n_pages, d.indexed_at, {', '.join(f'MAX({tag})' for tag in TAGS)}, "
            "(SELECT COUNT(*) FROM signatures s JOIN pages q ON s.page_id = q.id WHERE q.document_id = d.id) "
            f"FROM documents d JOIN pages p ON p.document_id = d.id GROUP BY d.id{having} ORDER BY d.id DESC").fetchall()
        return [{"id": row[0], "name": row[1], "n_pages": row[2], "indexed_at": row[3],
                 "tags": [tag for tag, on in zip(TAGS, row[4:8]) if on], "n_signatures": row[8]} for row in rows]

    def document(self, document_id: int) -> dict[str, Any]:
        """One document: its pages with tags, every mark and every signature (ids for their crops)."""
        row = self._db.execute("SELECT id, name, n_pages, indexed_at FROM documents WHERE id = ?", (document_id,)).fetchone()
        if row is None:
            raise NotInLibraryError(f"{self.path}: no document {document_id}")
        pages = []
        for page_id, number, width, height, *flags in self._db.execute(
                f"SELECT id, number, width, height, {', '.join(TAGS)} FROM pages WHERE document_id = ? ORDER BY number",
                (document_id,)).fetchall():
            marks = [Detection(tuple(box), Mark(label), score).as_dict(("class", "score", "box_xyxy"))
                     for label, score, *box in self._db.execute(
                         "SELECT label, score, x0, y0, x1, y1 FROM marks WHERE page_id = ? ORDER BY score DESC", (page_id,))]
            signatures = [{"id": sid, **Detection(tuple(box), Mark.SIGNATURE, score).as_dict(("score", "box_xyxy"))}
                          for sid, score, *box in self._db.execute(
                              "SELECT id, score, x0, y0, x1, y1 FROM signatures WHERE page_id = ? ORDER BY id", (page_id,))]
            pages.append({"id": page_id, "number": number, "size": [width, height],
                          "tags": [tag for tag, on in zip(TAGS, flags) if on], "marks": marks, "signatures": signatures})
        return {"id": row[0], "name": row[1], "n_pages": row[2], "indexed_at": row[3], "pages": pages}

    def thumbnail(self, page_id: int) -> bytes:
        row = self._db.execute("SELECT thumbnail FROM pages WHERE id = ?", (page_id,)).fetchone()
        if row is None:
            raise NotInLibraryError(f"{self.path}: no page {page_id}")
        return bytes(row[0])

    def signature_image(self, signature_id: int, kind: str = "crop") -> bytes:
        """A stored signature's PNG: the ``"crop"`` off the page or its ``"cleaned"`` version."""
        if kind not in ("crop", "cleaned"):
            raise LibraryError(f"signature image kind must be 'crop' or 'cleaned', not {kind!r}")
        row = self._db.execute(f"SELECT {kind} FROM signatures WHERE id = ?", (signature_id,)).fetchone()
        if row is None:
            raise NotInLibraryError(f"{self.path}: no signature {signature_id}")
        return bytes(row[0])

    def _search_index(self) -> tuple[list[tuple[int, str, int, int, list[float]]], SearchIndex | None]:
        """Every signature (document id, name, page number, signature id, box) and their embeddings
        indexed, rebuilt only after the file changed."""
        def build() -> tuple[list[tuple[int, str, int, int, list[float]]], SearchIndex | None]:
            rows = self._db.execute(
                "SELECT d.id, d.name, p.number, s.id, s.x0, s.y0, s.x1, s.y1, s.embedding FROM signatures s "
                "JOIN pages p ON s.page_id = p.id JOIN documents d ON p.document_id = d.id ORDER BY s.id").fetchall()
            keys = [(row[0], row[1], row[2], row[3], list(row[4:8])) for row in rows]
            return keys, SearchIndex(np.stack([np.frombuffer(row[8], np.float32) for row in rows]), self.backend) if rows else None

        return self._cached(build)

    def search(self, references: np.ndarray, k: int = 10) -> list[DocumentHit]:
        """The ``k`` documents whose closest signature is nearest to ``references`` ``(R, D)`` (one or
        more embeddings of one writer), by mean cosine distance, best first."""
        keys, index = self._search_index()
        return [] if index is None else rank_documents(index, keys, references, k, LibraryError)

    def embedding(self, signature_id: int) -> np.ndarray:
        row = self._db.execute("SELECT embedding FROM signatures WHERE id = ?", (signature_id,)).fetchone()
        if row is None:
            raise NotInLibraryError(f"{self.path}: no signature {signature_id}")
        return np.frombuffer(row[0], np.float32).copy()


#: What moved to ``indexing.py``, still answered here.
_INDEXING = ("DOCUMENT_SUFFIXES", "Indexed", "document_files", "index_document", "index_files")


def __getattr__(name: str) -> Any:
    if name in _INDEXING:
        from signver_torch import indexing

        return getattr(indexing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
