"""The matcher: cosine distances between signature embeddings and same-writer decisions.

Embeddings are the extractor's L2-normalised 256-d vectors; the decision threshold is the one the
extractor checkpoint calibrated (its card's ``threshold``), so a distance and a threshold always come
from the same model.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

import numpy as np

from signver_torch.cards import verification_threshold
from signver_torch.checkpoints import read_card, resolve_checkpoint
from signver_torch.errors import SignVerError
from signver_torch.io import is_tensor
from signver_torch.matcher.distance import cosine_distances

if TYPE_CHECKING:
    import torch

#: How several references of one person combine into one distance.
Combine = Literal["mean", "min"]


def _as_matrix(vectors: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """``vectors`` as an ``(N, D)`` float32 array (numpy: the matcher never needs torch)."""
    matrix = np.asarray(vectors.detach().float().cpu() if is_tensor(vectors) else vectors, np.float32)  # type: ignore[union-attr]
    if matrix.ndim == 1:
        matrix = matrix[None]
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise SignVerError(f"{name}: expected an embedding (D,) or a batch (N, D), got shape {tuple(matrix.shape)}")
    if not np.isfinite(matrix).all():
        raise SignVerError(f"{name}: embeddings contain NaN or infinite values")
    return matrix


class Matcher:
    """SignVer's matcher: ``cosine_distance(a, b)`` and ``verify(a, b, threshold=None)``.

    Args:
        checkpoint: the extractor checkpoint whose calibrated threshold ``verify`` uses by default.
        threshold: a fixed threshold instead (cosine distance; accept when ``distance <= threshold``).
    """

    def __init__(self, checkpoint: str | os.PathLike = "default", threshold: float | None = None) -> None:
        self.checkpoint = checkpoint
        self._threshold = threshold

    @property
    def threshold(self) -> float:
        if self._threshold is None:
            weights = resolve_checkpoint("extractor", self.checkpoint).weights
            self._threshold = verification_threshold(read_card(weights), str(weights))
        return self._threshold

    @staticmethod
    def cosine_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float | np.ndarray:
        """``1 - cos(a, b)``: a float for two vectors, an ``(N, M)`` array for batches."""
        left, right = _as_matrix(a, "a"), _as_matrix(b, "b")
        if left.shape[1] != right.shape[1]:
            raise SignVerError(f"embedding sizes differ: {left.shape[1]} and {right.shape[1]}")
        distances = cosine_distances(left, right, normalise=True, clamp=(0, 2))
        return float(distances[0, 0]) if distances.size == 1 and np.ndim(a) == 1 and np.ndim(b) == 1 else distances

    def verify(self, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, threshold: float | None = None) -> bool:
        """Same writer? ``cosine_distance(a, b) <= threshold`` (the checkpoint's calibrated one by default)."""
        distance = self.cosine_distance(a, b)
        if not isinstance(distance, float):
            raise SignVerError("verify() compares two embeddings; use verify_references() for several references")
        return distance <= (self.threshold if threshold is None else threshold)

    def distance_to_references(
        self, query: np.ndarray | torch.Tensor, references: np.ndarray | torch.Tensor, combine: Combine = "mean"
    ) -> float:
        """One distance from a query to several references of one person: their ``mean`` (default) or ``min``.

        The mean is steadier against one odd reference; ``docs/matcher.md`` measures both.
        """
        distances = np.asarray(self.cosine_distance(_as_matrix(query, "query")[:1], references)).ravel()
        if combine == "mean":
            return float(distances.mean())
        if combine == "min":
            return float(distances.min())
        raise SignVerError(f"combine must be 'mean' or 'min', not {combine!r}")

    def verify_references(
        self,
        query: np.ndarray | torch.Tensor,
        references: np.ndarray | torch.Tensor,
        threshold: float | None = None,
        combine: Combine = "mean",
    ) -> tuple[bool, float]:
        """``(match, distance)`` of a query against several references of the claimed person."""
        distance = self.distance_to_references(query, references, combine)
        return distance <= (self.threshold if threshold is None else threshold), distance
