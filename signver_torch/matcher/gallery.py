"""An enrolled gallery: people's reference signature embeddings in one SQLite file.

Each row holds a person id, the embedding (float32 blob), the sha256 and name of the source image and
the enrolment time; the gallery's ``meta`` table holds the sha256 of the extractor checkpoint that
made every embedding. A gallery refuses an extractor with another sha256: embeddings of two models
live in different spaces and must never be compared.

With a background bank (the extractor checkpoint's, for its ``svm`` decision rule), the gallery also
keeps each person's writer-dependent model (table ``writer_models``), refitted in the same transaction
as an enrolment that changes the person's references, and refitted on use when it no longer matches
them or the bank.

Writes are transactions in WAL mode: an enrolment either lands whole or not at all, also when the
process dies half-way (tested with a killed subprocess). Galleries of schema 1 (no writer models) are
migrated when opened, in one transaction: a migration killed half-way leaves the schema-1 file as it
was. Search is exact (torch) or FAISS when
``faiss-cpu`` is installed (``pip install signver-torch[faiss]``); both return the same neighbours.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Literal, Sequence

import numpy as np

from signver_torch.errors import NotFoundError, SignVerError
from signver_torch.io import ImageSource, is_tensor
from signver_torch.matcher.decisions import WriterModel, fit_writer_model
from signver_torch.store import EmbeddingStore, now

if TYPE_CHECKING:
    import torch

SCHEMA_VERSION = "2"
#: The schemas this version reads; older ones are migrated when opened.
READABLE_SCHEMAS = ("1", "2")
Backend = Literal["auto", "torch", "faiss"]


class GalleryError(SignVerError):
    """The gallery file is missing, corrupt, or was asked something it cannot answer."""


class UnknownPersonError(GalleryError, NotFoundError):
    """No one of that id is enrolled."""


@dataclass(frozen=True)
class Match:
    person: str
    distance: float


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def source_digest(source: ImageSource) -> tuple[str, str]:
    """``(sha256, name)`` of an image source: the file's bytes for paths, the pixels otherwise."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest(), str(path)
        except OSError as error:
            raise SignVerError(f"{path}: cannot read ({error.strerror or error})") from error
    if isinstance(source, (bytes, bytearray)):
        return hashlib.sha256(source).hexdigest(), "bytes"
    array = np.asarray(source.detach().cpu() if is_tensor(source) else source)
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest(), f"array {array.shape}"


def resolve_backend(backend: Backend, error: type[SignVerError] = SignVerError) -> str:
    """``"auto"`` → FAISS when installed, else torch; an explicit ``"faiss"`` without FAISS is ``error``."""
    if backend == "faiss" and not faiss_available():
        raise error("backend 'faiss' needs faiss-cpu (pip install 'signver-torch[faiss]')")
    return ("faiss" if faiss_available() else "torch") if backend == "auto" else backend


class Gallery(EmbeddingStore):
    """People enrolled with reference signatures, searchable by embedding.

    Args:
        path: the SQLite file (created on first enrolment when ``create`` is true).
        extractor_sha256: sha256 of the extractor checkpoint that embeds queries and references.
        backend: ``"auto"`` (FAISS when installed, else torch), ``"torch"`` or ``"faiss"``.
    """

    kind = "gallery"
    error = GalleryError
    missing_error = UnknownPersonError
    schema_version = SCHEMA_VERSION
    readable_schemas = READABLE_SCHEMAS

    def __init__(
        self,
        path: str | os.PathLike,
        extractor_sha256: str,
        *,
        create: bool = True,
        backend: Backend = "auto",
        background: np.ndarray | None = None,
    ) -> None:
        self.missing_hint = f" (enrol someone first: signver enroll --gallery {path} ...)"
        self.backend = resolve_backend(backend, GalleryError)
        self.background = None if background is None else np.ascontiguousarray(background, np.float32)
        self._background_sha256 = "" if self.background is None else hashlib.sha256(self.background.tobytes()).hexdigest()
        super().__init__(path, extractor_sha256, create=create)

    def _create_tables(self) -> None:
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS signatures (id INTEGER PRIMARY KEY, person TEXT NOT NULL, "
            "embedding BLOB NOT NULL, source_sha256 TEXT NOT NULL, source TEXT NOT NULL, enrolled_at TEXT NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS signatures_person ON signatures (person)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS writer_models (person TEXT PRIMARY KEY, n_references INTEGER NOT NULL, "
            "background_sha256 TEXT NOT NULL, support BLOB NOT NULL, weights BLOB NOT NULL, bias REAL NOT NULL, "
            "gamma REAL NOT NULL, fitted_at TEXT NOT NULL)"
        )

    def _migrate(self, schema: str) -> None:
        """Schema 1 → 2: the writer models of everyone (with a background bank; without one they are
        fitted when first needed), then the schema number."""
        if self.background is not None:
            for person, _ in self.people():
                self._store_writer_model(person)
        super()._migrate(schema)

    def add(self, person: str | Sequence[str], embeddings: np.ndarray | torch.Tensor, sources: Sequence[tuple[str, str]]) -> int:
        """Store ``embeddings`` (N, D) of ``person`` (or one person id per row) with their ``(sha256, name)``
        sources, all or nothing."""
        people = [person] * len(sources) if isinstance(person, str) else list(person)
        people = [str(name).strip() for name in people]
        if not all(people):
            raise GalleryError("person id must not be empty")
        vectors = np.asarray(embeddings.detach().cpu() if is_tensor(embeddings) else embeddings, np.float32)
        if vectors.ndim != 2 or len(vectors) == 0 or not len(vectors) == len(sources) == len(people):
            raise GalleryError(f"expected N embeddings with N sources and person ids, got {vectors.shape}, {len(sources)}, {len(people)}")
        enrolled_at = now()
        with self._transaction():
            self._db.executemany(
                "INSERT INTO signatures (person, embedding, source_sha256, source, enrolled_at) VALUES (?, ?, ?, ?, ?)",
                ((name, vector.tobytes(), digest, label, enrolled_at) for name, vector, (digest, label) in zip(people, vectors, sources)),
            )
            if self.background is not None:  # the people who gained references get their models refitted
                for name in dict.fromkeys(people):
                    self._store_writer_model(name)
        return len(vectors)

    def remove(self, person: str) -> int:
        """Forget ``person``; returns how many signatures were removed (an unknown person is an error)."""
        with self._transaction():
            removed = self._db.execute("DELETE FROM signatures WHERE person = ?", (person,)).rowcount
            self._db.execute("DELETE FROM writer_models WHERE person = ?", (person,))
        if removed == 0:
            raise UnknownPersonError(f"{self.path}: no enrolled person {person!r}")
        return removed

    def signatures(self, person: str) -> list[dict[str, str]]:
        """``person``'s enrolled signatures: the source's name and sha256 and when it was enrolled."""
        rows = self._db.execute("SELECT source, source_sha256, enrolled_at FROM signatures WHERE person = ? ORDER BY id",
                                (person,)).fetchall()
        if not rows:
            raise UnknownPersonError(f"{self.path}: no enrolled person {person!r}")
        return [{"source": source, "sha256": digest, "enrolled_at": when} for source, digest, when in rows]

    def people(self) -> list[tuple[str, int]]:
        """``(person, number of signatures)`` for everyone enrolled, by name."""
        return [tuple(row) for row in self._db.execute("SELECT person, COUNT(*) FROM signatures GROUP BY person ORDER BY person")]

    def _rows(self, person: str | None = None) -> Iterator[tuple[str, bytes]]:
        query, args = ("SELECT person, embedding FROM signatures WHERE person = ? ORDER BY id", (person,)) if person else (
            "SELECT person, embedding FROM signatures ORDER BY id", ())
        try:
            yield from self._db.execute(query, args)
        except sqlite3.DatabaseError as error:
            raise GalleryError(f"{self.path}: not a readable gallery ({error})") from error

    def _search_index(self) -> tuple[list[str], SearchIndex]:
        """Everyone's embeddings indexed for search, rebuilt only after the file changed (any connection)."""
        def build() -> tuple[list[str], SearchIndex]:
            rows = list(self._rows())
            if not rows:
                raise GalleryError(f"{self.path}: the gallery is empty")
            matrix = np.stack([np.frombuffer(blob, np.float32) for _, blob in rows])
            return [person for person, _ in rows], SearchIndex(matrix, self.backend)

        return self._cached(build)

    def references(self, person: str) -> np.ndarray:
        """The enrolled embeddings of ``person`` (an unknown person is an error)."""
        rows = [np.frombuffer(blob, np.float32) for _, blob in self._rows(person)]
        if not rows:
            raise UnknownPersonError(f"{self.path}: no enrolled person {person!r}")
        return np.stack(rows)

    def writer_model(self, person: str) -> WriterModel | None:
        """``person``'s writer-dependent model against the background bank (``None`` without a bank):
        the stored one while it matches their references and the bank, else refitted and stored."""
        if self.background is None:
            return None
        references = self.references(person)
        row = self._db.execute(
            "SELECT n_references, background_sha256, support, weights, bias, gamma FROM writer_models WHERE person = ?",
            (person,)).fetchone()
        if row is not None and row[0] == len(references) and row[1] == self._background_sha256:
            return WriterModel.from_support(np.frombuffer(row[2], np.int32), np.frombuffer(row[3], np.float32), row[4], row[5],
                                            references, self.background)
        with self._transaction():
            return self._store_writer_model(person)

    def _store_writer_model(self, person: str) -> WriterModel:
        """Fit ``person``'s model and write it (inside the caller's transaction)."""
        references = self.references(person)
        model = fit_writer_model(references, self.background)  # type: ignore[arg-type]
        self._db.execute(
            "INSERT OR REPLACE INTO writer_models VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (person, len(references), self._background_sha256, model.support.astype(np.int32).tobytes(),
             model.weights.astype(np.float32).tobytes(), model.bias, model.gamma, now()))
        return model

    def search(self, query: np.ndarray | torch.Tensor, k: int = 5) -> list[Match]:
        """The ``k`` closest people to ``query``: each person's distance is that of their closest signature."""
        people, index = self._search_index()
        vector = np.asarray(query.detach().cpu() if is_tensor(query) else query, np.float32).reshape(1, -1)
        if vector.shape[1] != index.dimensions:
            raise GalleryError(f"query has {vector.shape[1]} dimensions, the gallery's embeddings {index.dimensions}")
        order, similarity = index.search(vector, max(k * 8, 64))
        best: dict[str, float] = {}
        for index, score in zip(order, similarity):
            best.setdefault(people[index], 1.0 - float(score))
        return [Match(person, distance) for person, distance in sorted(best.items(), key=lambda item: item[1])[:k]]


class SearchIndex:
    """Inner-product search over unit vectors: FAISS ``IndexFlatIP`` or an exact torch matrix product."""

    def __init__(self, matrix: np.ndarray, backend: str = "torch") -> None:
        self.backend = backend
        self.size, self.dimensions = matrix.shape
        if backend == "faiss":
            import faiss

            self._index = faiss.IndexFlatIP(matrix.shape[1])
            self._index.add(np.ascontiguousarray(matrix, np.float32))
        else:
            import torch  # the exact search: only a search imports it, never a verification

            self._matrix = torch.from_numpy(np.ascontiguousarray(matrix, np.float32))

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and cosine similarities of the ``k`` rows closest to ``query`` ``(1, D)``, best first."""
        k = min(k, self.size)
        if self.backend == "faiss":
            similarity, order = self._index.search(np.ascontiguousarray(query, np.float32), k)
            return order[0], similarity[0]
        similarity, order = (self._matrix @ self._matrix.new_tensor(query[0])).topk(k)
        return order.numpy(), similarity.numpy()
