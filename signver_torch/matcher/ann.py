"""Approximate inner-product search for large libraries: FAISS IVF-PQ candidates, re-ranked exactly.

The coarse quantizer and the product codes are trained on a seeded sample; a query probes ``nprobe`` lists,
takes ``rerank`` candidates by their compressed codes, and ranks them by their exact cosine similarity
against the float32 embeddings (which may be a memory map: only the candidates' rows are read). Below
``EXACT_BELOW`` vectors the flat index of ``gallery.SearchIndex`` is exact and fast enough.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from signver_torch.errors import SignVerError
from signver_torch.matcher.gallery import SearchIndex, faiss_available

#: Fewer embeddings than this are searched exactly (a flat index).
EXACT_BELOW = 50_000


def default_parameters(n: int) -> dict[str, Any]:
    """The index for ``n`` embeddings: flat below :data:`EXACT_BELOW`, else IVF-PQ with about
    ``sqrt(n)`` lists (a power of two), a quarter of them probed, 32 bytes a vector, trained on up to 64 vectors a list
    (benchmarks/library_scale.py measures recall and latency against nprobe)."""
    if n < EXACT_BELOW:
        return {"kind": "flat"}
    nlist = 2 ** round(math.log2(math.sqrt(n)))
    return {"kind": "ivfpq", "nlist": nlist, "m": 32, "nbits": 8, "nprobe": nlist // 4, "rerank": 256,
            "sample": min(n, 64 * nlist), "seed": 0}


class ApproximateIndex:
    """IVF-PQ over unit vectors with exact re-ranking; answers ``SearchIndex.search``'s call."""

    def __init__(self, matrix: np.ndarray, index: Any, parameters: dict[str, Any]) -> None:
        self.matrix, self._index, self.parameters = matrix, index, parameters
        self.size, self.dimensions = matrix.shape
        self._index.nprobe = int(parameters["nprobe"])

    @classmethod
    def train(cls, matrix: np.ndarray, parameters: dict[str, Any], progress: bool = False) -> "ApproximateIndex":
        """Train on a seeded sample of ``matrix`` (N, D) and add every row (in chunks, with a progress bar)."""
        if not faiss_available():
            raise SignVerError("an approximate index needs faiss-cpu (pip install 'signver-torch[faiss]')")
        import faiss
        from tqdm.auto import tqdm

        n, dimensions = matrix.shape
        if dimensions % parameters["m"]:
            raise SignVerError(f"IVF-PQ: {dimensions} dimensions do not split into m={parameters['m']} sub-vectors")
        if n < max(parameters["nlist"], 2 ** parameters["nbits"]):
            raise SignVerError(f"IVF-PQ with {parameters['nlist']} lists needs more than {n} embeddings to train on")
        sample = np.random.default_rng(parameters["seed"]).choice(n, min(n, parameters["sample"]), replace=False)
        quantizer = faiss.IndexFlatIP(dimensions)
        index = faiss.IndexIVFPQ(quantizer, dimensions, parameters["nlist"], parameters["m"], parameters["nbits"],
                                 faiss.METRIC_INNER_PRODUCT)
        index.train(np.ascontiguousarray(matrix[np.sort(sample)], np.float32))
        chunk = 65_536
        for start in tqdm(range(0, n, chunk), desc="index", unit="chunk", disable=not progress):
            index.add(np.ascontiguousarray(matrix[start:start + chunk], np.float32))
        return cls(matrix, index, parameters)

    def save(self, path: str) -> None:
        import faiss

        faiss.write_index(self._index, path)

    @classmethod
    def load(cls, path: str, matrix: np.ndarray, parameters: dict[str, Any]) -> "ApproximateIndex":
        import faiss

        return cls(matrix, faiss.read_index(path), parameters)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and exact cosine similarities of the ``k`` rows closest to ``query`` ``(1, D)`` among the
        candidates, best first."""
        k = min(k, self.size)
        query = np.ascontiguousarray(query, np.float32)
        _, candidates = self._index.search(query, max(k, int(self.parameters["rerank"])))
        candidates = np.sort(candidates[0][candidates[0] >= 0])  # sorted rows: a memory map reads forward
        similarity = np.asarray(self.matrix[candidates], np.float32) @ query[0]
        best = np.argsort(-similarity, kind="stable")[:k]
        return candidates[best], similarity[best]


def synthetic_embeddings(n_writers: int, per_writer: int, dimensions: int = 256, spread: float = 0.75,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors that sit like a library's signatures (``per_writer`` around a random centre per writer, noise of
    norm about ``spread``) and one fresh query per writer: what the index is measured and tested on."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_writers, dimensions), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    scale = np.float32(spread / np.sqrt(dimensions))
    points = np.repeat(centres, per_writer, 0)
    for start in range(0, len(points), 65_536):  # in place, in chunks: a million rows need no second copy
        block = points[start:start + 65_536]
        block += scale * rng.standard_normal(block.shape, dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    queries = centres + scale * rng.standard_normal(centres.shape, dtype=np.float32)
    return points, queries / np.linalg.norm(queries, axis=1, keepdims=True)


def build_index(matrix: np.ndarray, parameters: dict[str, Any], progress: bool = False) -> SearchIndex | ApproximateIndex:
    """The search index ``parameters`` describe (``default_parameters``' kinds) over ``matrix``."""
    if parameters["kind"] == "flat":
        return SearchIndex(np.asarray(matrix, np.float32), "faiss" if faiss_available() else "torch")
    return ApproximateIndex.train(matrix, parameters, progress)


__all__ = ["EXACT_BELOW", "ApproximateIndex", "build_index", "default_parameters", "synthetic_embeddings"]
