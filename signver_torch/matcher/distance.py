"""The one cosine distance, ``1 - cos``, between the rows of embeddings: in numpy or in torch.

Light on purpose (numpy only at import; torch is used when it is handed tensors), so the metrics, the
matcher's facade and the decision rules share it without importing anything heavier.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Bounds on a distance, ``(low, high)``, either None: rounding can step just outside ``[0, 2]``.
Clamp = tuple[float | None, float | None]


def cosine_distances(a: Any, b: Any = None, *, normalise: bool = False, clamp: Clamp = (None, None)) -> Any:
    """``(N, M)`` cosine distances ``1 - a·b`` between the rows of ``a`` and of ``b`` (of ``a`` with
    itself when ``b`` is None); a vector counts as one row.

    numpy arrays are computed in numpy and tensors in torch, each in the dtype it is given (a caller
    that wants float64 passes float64). ``normalise`` L2-normalises the rows first (the extractor's
    embeddings already are); ``clamp`` bounds the result.
    """
    if not hasattr(a, "detach"):  # not a torch tensor
        rows, bound = np.atleast_2d, np.clip

        def unit(matrix: Any) -> Any:
            return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    else:
        import torch  # already imported by whoever holds a tensor

        rows, bound = torch.atleast_2d, torch.clamp

        def unit(matrix: Any) -> Any:
            return torch.nn.functional.normalize(matrix, dim=1)
    left = unit(rows(a)) if normalise else rows(a)
    right = left if b is None else unit(rows(b)) if normalise else rows(b)
    distances = 1 - left @ right.T
    return distances if clamp == (None, None) else bound(distances, *clamp)


__all__ = ["Clamp", "cosine_distances"]
