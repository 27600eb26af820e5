"""A document library that scales: the Parquet shards of ``distributed.index`` plus an approximate index.

It answers :class:`~signver_torch.library.DocumentLibrary`'s reading calls (``find``, ``documents`` with tag
filters, ``document``, ``search`` by a person's references or an example's embedding, ``embedding``), so
callers need not know which library they hold; ``open_library`` picks by path (a file is SQLite, a folder is
shards). Search ranks through ``library.rank_documents``, over a flat index for small libraries and FAISS
IVF-PQ with exact re-ranking (``matcher/ann.py``) beyond, whose parameters and the shards it covers are in
the manifest; the index is rebuilt when the shards changed. A document stored twice (the same bytes under two
paths) is kept once, from the first shard by name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from signver_torch.detector.marks import TAGS, Detection, Mark
from signver_torch.distributed import (MANIFEST, document_number, open_manifest, shard_files, write_atomically,
                                       write_manifest)
from signver_torch.library import DocumentHit, LibraryError, NotInLibraryError, rank_documents, tag_filter
from signver_torch.matcher.ann import ApproximateIndex, build_index, default_parameters

_COLUMNS = ["source", "name", "document_sha256", "n_pages", "page", "width", "height", *TAGS, "mark_labels",
            "mark_scores", "mark_boxes", "signature_scores", "signature_boxes", "embeddings", "error", "indexed_at"]


class SignatureKeys(Sequence[tuple[int, str, int, int, list[float]]]):
    """``(document id, name, page, signature id, box)`` of each indexed signature, held as arrays (millions fit)."""

    def __init__(self, documents: np.ndarray, names: dict[int, str], pages: np.ndarray, boxes: np.ndarray) -> None:
        self.documents, self.names, self.pages, self.boxes = documents, names, pages, boxes

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, i: int) -> tuple[int, str, int, int, list[float]]:  # type: ignore[override]
        document = int(self.documents[i])
        return document, self.names[document], int(self.pages[i]), int(i), self.boxes[i].tolist()


class ShardLibrary:
    """The documents of a sharded library folder, searchable like the SQLite library.

    Args:
        path: the folder ``signver index --engine ray`` wrote.
        extractor_sha256: the extractor that embeds queries (a library of another one is refused).
    """

    def __init__(self, path: str | os.PathLike, extractor_sha256: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = Path(path)
        if not (self.path / MANIFEST).is_file():
            raise NotInLibraryError(f"{self.path}: no sharded library here (index documents first: "
                                    f"signver index DIR --library {path} --engine ray)")
        self.manifest = open_manifest(self.path, extractor_sha256)
        self.shards = shard_files(self.path)
        try:
            tables = [pq.read_table(shard, columns=_COLUMNS) for shard in self.shards]
        except (OSError, pa.ArrowException) as error:
            raise LibraryError(f"{self.path}: a shard cannot be read ({error})") from error
        rows = pa.concat_tables(tables).to_pylist() if tables else []
        self._documents: dict[int, dict[str, Any]] = {}
        self.errors: list[dict[str, Any]] = []
        vectors, documents, pages, boxes = [], [], [], []
        owner: dict[str, str] = {}
        for row in rows:
            digest = row["document_sha256"]
            if owner.setdefault(digest, row["source"]) != row["source"]:
                continue  # the same bytes again, under another path
            if row["error"]:
                self.errors.append({"source": row["source"], "page": row["page"], "error": row["error"]})
            if row["page"] == 0:
                continue
            number = document_number(digest)
            document = self._documents.setdefault(number, {
                "id": number, "name": row["name"], "sha256": digest, "n_pages": row["n_pages"],
                "indexed_at": row["indexed_at"], "pages": {}})
            document["pages"][row["page"]] = row
            for box, embedding in zip(row["signature_boxes"] or [], row["embeddings"] or []):
                vectors.append(embedding)
                documents.append(number)
                pages.append(row["page"])
                boxes.append(box)
        self._matrix = np.asarray(vectors, np.float32).reshape(len(vectors), -1)
        self.keys = SignatureKeys(np.asarray(documents, np.int64), {n: d["name"] for n, d in self._documents.items()},
                                  np.asarray(pages, np.int32), np.asarray(boxes, np.float64).reshape(-1, 4))
        self._index: Any = None

    def close(self) -> None:
        self._index = None

    def __enter__(self) -> "ShardLibrary":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def find(self, sha256: str) -> int | None:
        """The id of the document with these bytes, if it is indexed."""
        number = document_number(sha256)
        return number if number in self._documents and self._documents[number]["sha256"] == sha256 else None

    def documents(self, tags: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Every document with its tags (newest first); ``tags`` keeps those carrying all of them (``not:<tag>``: without)."""
        wanted = tag_filter(tags)
        listed = []
        for document in self._documents.values():
            carried = [tag for tag in TAGS if any(page[tag] for page in document["pages"].values())]
            if all((tag in carried) == on for tag, on in wanted):
                listed.append({"id": document["id"], "name": document["name"], "n_pages": document["n_pages"],
                               "indexed_at": document["indexed_at"], "tags": carried,
                               "n_signatures": sum(len(page["signature_boxes"] or []) for page in document["pages"].values())})
        return sorted(listed, key=lambda item: (item["indexed_at"], item["id"]), reverse=True)

    def document(self, document_id: int) -> dict[str, Any]:
        """One document: its pages with tags, every mark and every signature (with its id)."""
        if document_id not in self._documents:
            raise NotInLibraryError(f"{self.path}: no document {document_id}")
        stored = self._documents[document_id]
        first = {(int(d), int(p)): i for i, (d, p) in reversed(list(enumerate(zip(self.keys.documents, self.keys.pages))))}
        pages = []
        for number in sorted(stored["pages"]):
            page = stored["pages"][number]
            marks = sorted(((Mark(label), score, tuple(box)) for label, score, box in
                            zip(page["mark_labels"], page["mark_scores"], page["mark_boxes"])), key=lambda m: -m[1])
            start = first.get((document_id, number), 0)
            pages.append({"number": number, "size": [page["width"], page["height"]],
                          "tags": [tag for tag in TAGS if page[tag]],
                          "marks": [Detection(box, mark, score).as_dict(("class", "score", "box_xyxy")) for mark, score, box in marks],
                          "signatures": [{"id": start + i, **Detection(tuple(box), Mark.SIGNATURE, score).as_dict(("score", "box_xyxy"))}
                                         for i, (score, box) in enumerate(zip(page["signature_scores"], page["signature_boxes"]))]})
        return {"id": document_id, "name": stored["name"], "n_pages": stored["n_pages"], "indexed_at": stored["indexed_at"],
                "pages": pages}

    def embedding(self, signature_id: int) -> np.ndarray:
        if not 0 <= signature_id < len(self._matrix):
            raise NotInLibraryError(f"{self.path}: no signature {signature_id}")
        return self._matrix[signature_id].copy()

    def search_index(self, parameters: dict[str, Any] | None = None, progress: bool = False) -> Any:
        """The search index: the manifest's when it covers these shards, else built (``parameters``, or the
        default for this many signatures) and, when approximate, saved with its parameters (a flat one is not worth saving)."""
        if self._index is not None and parameters is None:
            return self._index
        shards = [shard.name for shard in self.shards]
        stored = self.manifest.get("index", {})
        folder = self.path / "index"
        if parameters is None and stored.get("shards") == shards and stored["parameters"]["kind"] != "flat" \
                and (folder / "ivfpq.faiss").is_file():
            self._index = ApproximateIndex.load(str(folder / "ivfpq.faiss"), self._matrix, stored["parameters"])
            return self._index
        parameters = parameters or default_parameters(len(self._matrix))
        self._index = build_index(self._matrix, parameters, progress)
        if isinstance(self._index, ApproximateIndex):
            folder.mkdir(exist_ok=True)
            write_atomically(folder / "ivfpq.faiss", lambda path: self._index.save(str(path)))
            self.manifest["index"] = {"parameters": parameters, "shards": shards, "n_signatures": len(self._matrix)}
            write_manifest(self.path, self.manifest)
        return self._index

    def search(self, references: np.ndarray, k: int = 10) -> list[DocumentHit]:
        """The ``k`` documents whose closest signature is nearest to ``references`` ``(R, D)``, best first."""
        if not len(self._matrix):
            return []
        return rank_documents(self.search_index(), self.keys, references, k, LibraryError)


def open_library(path: str | os.PathLike, extractor_sha256: str) -> Any:
    """The library at ``path``: a folder of shards (:class:`ShardLibrary`) or an SQLite file (``DocumentLibrary``)."""
    if Path(path).is_dir():
        return ShardLibrary(path, extractor_sha256)
    from signver_torch.library import DocumentLibrary

    return DocumentLibrary(path, extractor_sha256, create=False)


__all__ = ["ShardLibrary", "SignatureKeys", "open_library"]
