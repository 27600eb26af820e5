"""Verification metrics (EER, AUC, FAR/FRR) and the writer-independent pair protocol.

Distances are "smaller = more alike"; a pair is accepted as the same writer when ``distance <= threshold``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics.functional.classification import binary_auroc

from signver_torch.errors import DataError


def verification_metrics(
    positive: torch.Tensor, negative: torch.Tensor, threshold: float | None = None
) -> dict[str, float]:
    """EER, AUC and FAR/FRR of same-writer (``positive``) and different (``negative``) pair distances.

    FAR/FRR are reported at ``threshold`` when given, else at the EER threshold. Tied distances are
    one operating point (no threshold separates them), so a collapsed model scores an EER of 0.5.

    Raises:
        DataError: there are no positive or no negative pairs.
    """
    positive, negative = positive.flatten().double(), negative.flatten().double()
    if positive.numel() == 0 or negative.numel() == 0:
        raise DataError(
            f"cannot measure verification with {positive.numel()} same-writer and {negative.numel()} "
            "different-writer pairs (need at least 2 genuine signatures per writer and at least 2 writers)"
        )
    distances = torch.cat([positive, negative])
    same = torch.cat([torch.ones_like(positive), torch.zeros_like(negative)])
    order = distances.argsort()
    distances, same = distances[order], same[order]
    # operating points: accept every pair up to the last of each group of equal distances
    thresholds, counts = distances.unique_consecutive(return_counts=True)
    last = counts.cumsum(0) - 1
    far = torch.cat([same.new_zeros(1), (1 - same).cumsum(0)[last] / negative.numel()])
    frr = torch.cat([same.new_ones(1), 1 - same.cumsum(0)[last] / positive.numel()])
    thresholds = torch.cat([thresholds[:1] - 1e-6, thresholds])
    gap = far - frr  # -1 at the first point, +1 at the last
    after = int((gap >= 0).nonzero()[0])
    before = after - 1
    weight = float(-gap[before] / (gap[after] - gap[before]))
    eer = float(frr[before] + weight * (frr[after] - frr[before]))
    eer_threshold = float(thresholds[before] + weight * (thresholds[after] - thresholds[before]))
    operating = eer_threshold if threshold is None else float(threshold)
    return {
        "eer": eer,
        "auc": float(binary_auroc(-distances, same.long())),
        "threshold_at_eer": eer_threshold,
        "threshold": operating,
        "far": float((negative <= operating).double().mean()),
        "frr": float((positive > operating).double().mean()),
        "n_pos": int(positive.numel()),
        "n_neg": int(negative.numel()),
    }


def cosine_distance_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    normalised = torch.nn.functional.normalize(embeddings.double(), dim=1)
    return (1 - normalised @ normalised.T).clamp_min(0)


def writer_protocol_distances(
    embeddings: torch.Tensor, writers: Sequence[str] | torch.Tensor, forged: Sequence[bool] | torch.Tensor
) -> dict[str, torch.Tensor]:
    """Pair distances of the writer-independent protocol.

    Per writer: ``positive`` = all genuine–genuine pairs, ``skilled`` = all genuine–forgery pairs.
    ``random`` = genuine pairs across different writers.
    """
    distance = cosine_distance_matrix(embeddings)
    writer_ids = _writer_indices(writers)
    forged_mask = torch.as_tensor(forged, dtype=torch.bool)
    same_writer = writer_ids[:, None] == writer_ids[None, :]
    genuine = ~forged_mask
    upper = torch.ones_like(distance, dtype=torch.bool).triu(1)
    return {
        "positive": distance[same_writer & upper & genuine[:, None] & genuine[None, :]],
        "skilled": distance[same_writer & genuine[:, None] & forged_mask[None, :]],
        "random": distance[~same_writer & upper & genuine[:, None] & genuine[None, :]],
    }


def _writer_indices(writers: Sequence[str] | torch.Tensor) -> torch.Tensor:
    if isinstance(writers, torch.Tensor):
        return writers
    index: dict[str, int] = {}
    return torch.tensor([index.setdefault(str(w), len(index)) for w in writers])


def writer_protocol_metrics(
    embeddings: torch.Tensor,
    writers: Sequence[str] | torch.Tensor,
    forged: Sequence[bool] | torch.Tensor,
    threshold: float | None = None,
) -> dict[str, float | str | None]:
    """DESIGN.md's extractor report: skilled-forgery EER/AUC/FAR/FRR plus ``eer_random``.

    Data without forgeries (genuine-only writer folders) falls back to random forgeries as the
    negatives; ``negatives`` in the report says which were used.
    """
    pairs = writer_protocol_distances(embeddings, writers, forged)
    negatives = "skilled" if pairs["skilled"].numel() else "random"
    report: dict[str, float | str] = dict(verification_metrics(pairs["positive"], pairs[negatives], threshold))
    report["negatives"] = negatives
    report["eer_random"] = verification_metrics(pairs["positive"], pairs["random"])["eer"] if pairs["random"].numel() else None
    report["n_writers"] = int(_writer_indices(writers).unique().numel())
    return report
