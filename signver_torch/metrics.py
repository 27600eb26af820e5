"""Verification metrics (EER, AUC, FAR/FRR) and the writer-independent pair protocol.

Distances are "smaller = more alike"; a pair is accepted as the same writer when ``distance <= threshold``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from signver_torch.errors import DataError
from signver_torch.matcher.distance import cosine_distances


def verification_metrics(
    positive: torch.Tensor, negative: torch.Tensor, threshold: float | None = None
) -> dict[str, float]:
    """EER, AUC and FAR/FRR of same-writer (``positive``) and different (``negative``) pair distances.

    FAR/FRR are reported at ``threshold`` when given, else at the EER threshold. Tied distances are
    one operating point (no threshold separates them), so a collapsed model scores an EER of 0.5.

    Raises:
        DataError: there are no positive or no negative pairs.
    """
    from torchmetrics.functional.classification import binary_auroc  # evaluation only: torchmetrics brings scipy

    positive, negative = positive.flatten().double(), negative.flatten().double()
    if positive.numel() == 0 or negative.numel() == 0:
        raise DataError(
            f"cannot measure verification with {positive.numel()} same-writer and {negative.numel()} "
            "different-writer pairs (need at least 2 genuine signatures per writer and at least 2 writers)"
        )
    eer, eer_threshold = equal_error_rate(positive, negative)
    operating = eer_threshold if threshold is None else float(threshold)
    return {
        "eer": eer,
        "auc": float(binary_auroc(-torch.cat([positive, negative]), torch.cat([torch.ones_like(positive), torch.zeros_like(negative)]).long())),
        "threshold_at_eer": eer_threshold,
        "threshold": operating,
        "far": float((negative <= operating).double().mean()),
        "frr": float((positive > operating).double().mean()),
        "n_pos": int(positive.numel()),
        "n_neg": int(negative.numel()),
    }


def equal_error_rate(positive: torch.Tensor, negative: torch.Tensor) -> tuple[float, float]:
    """The EER of same-writer (``positive``) against different (``negative``) pair distances, and the
    distance where it is reached (interpolated between the two operating points around it)."""
    distances = torch.cat([positive, negative]).double()
    same = torch.cat([torch.ones_like(positive), torch.zeros_like(negative)]).double()
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
    return eer, float(thresholds[before] + weight * (thresholds[after] - thresholds[before]))


def bootstrap_eer_interval(
    positive: Sequence[torch.Tensor], negative: Sequence[torch.Tensor], resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% interval of the EER over writers: resample writers with replacement (each bringing all its
    pairs), ``positive[i]``/``negative[i]`` being writer i's pair distances."""
    generator = torch.Generator().manual_seed(seed)
    n = len(positive)
    eers = []
    for _ in range(resamples):
        chosen = torch.randint(n, (n,), generator=generator).tolist()
        pos = torch.cat([positive[i] for i in chosen])
        neg = torch.cat([negative[i] for i in chosen])
        if pos.numel() and neg.numel():
            eers.append(equal_error_rate(pos, neg)[0])
    low, high = torch.tensor(eers, dtype=torch.double).quantile(torch.tensor([0.025, 0.975], dtype=torch.double)).tolist()
    return low, high


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float | None, float | None]:
    """Wilson's 95% score interval of a proportion (sound at 0 and 1, where the normal one is not); ``(None, None)`` without trials."""
    if trials == 0:
        return None, None
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    spread = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return round(max(0.0, centre - spread), 4), round(min(1.0, centre + spread), 4)


def cosine_distance_matrix(embeddings: torch.Tensor, others: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - cos`` between every row of ``embeddings`` and every row of ``others`` (default: itself), in float64."""
    return cosine_distances(embeddings.double(), None if others is None else others.double(), normalise=True, clamp=(0, None))


def writer_protocol_pairs(
    embeddings: torch.Tensor, writers: Sequence[str] | torch.Tensor, forged: Sequence[bool] | torch.Tensor,
    queries: torch.Tensor | None = None, texts: Sequence[str | None] | None = None,
) -> dict[str, list[torch.Tensor]]:
    """Pair distances of the writer-independent protocol, one tensor per writer (in sorted writer-index
    order; a pair belongs to the writer of its first signature), for pooling or resampling writers.

    Per writer: ``positive`` = all genuine–genuine pairs, ``skilled`` = all genuine–forgery pairs.
    ``random`` = genuine pairs across different writers. With ``texts`` (the text each signature
    declares, ``None`` where none), signatures that declare one are paired by content: their positives
    are a writer's pairs of the same text, and ``same_text`` holds the content-matched impostors (their
    text written by another writer, both orders). With ``queries`` (another embedding of each
    signature, e.g. of an altered scan), every pair compares a signature as in ``embeddings`` (the
    reference) with another as in ``queries`` (the query), both orders of each pair.
    """
    distance = cosine_distance_matrix(embeddings, queries)
    writer_ids = _writer_indices(writers)
    forged_mask = torch.as_tensor(forged, dtype=torch.bool)
    same_writer = writer_ids[:, None] == writer_ids[None, :]
    genuine = ~forged_mask
    both_genuine = genuine[:, None] & genuine[None, :]
    upper = torch.ones_like(distance, dtype=torch.bool).triu(1) if queries is None else ~torch.eye(len(distance), dtype=torch.bool)
    declared = torch.tensor([t is not None for t in texts]) if texts is not None else torch.zeros(len(distance), dtype=torch.bool)
    text_ids = _writer_indices([str(t) for t in texts]) if texts is not None else torch.zeros(len(distance), dtype=torch.long)
    by_content = declared[:, None] & declared[None, :]
    same_text = by_content & (text_ids[:, None] == text_ids[None, :])
    masks = {
        "positive": same_writer & upper & both_genuine & (~by_content | same_text),
        "skilled": same_writer & genuine[:, None] & forged_mask[None, :],
        "same_text": ~same_writer & same_text & both_genuine,
        "random": ~same_writer & upper & both_genuine,
    }
    rows = [writer_ids == w for w in writer_ids.unique()]
    return {kind: [distance[mask & row[:, None]] for row in rows] for kind, mask in masks.items()}


def writer_protocol_distances(
    embeddings: torch.Tensor, writers: Sequence[str] | torch.Tensor, forged: Sequence[bool] | torch.Tensor,
    queries: torch.Tensor | None = None, texts: Sequence[str | None] | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`writer_protocol_pairs` pooled over writers."""
    return {kind: torch.cat(parts) for kind, parts in writer_protocol_pairs(embeddings, writers, forged, queries, texts).items()}


def protocol_negatives(pairs: dict[str, list[torch.Tensor]]) -> tuple[str, list[torch.Tensor]]:
    """Which impostors a report uses and each writer's distances to them: skilled forgeries and
    same-text impostors where there are any (``"skilled"``, ``"same_text"`` or ``"skilled+same_text"``),
    else random forgeries (other writers' genuine signatures)."""
    kinds = [kind for kind in ("skilled", "same_text") if any(part.numel() for part in pairs[kind])]
    if not kinds:
        return "random", pairs["random"]
    return "+".join(kinds), [torch.cat([pairs[kind][i] for kind in kinds]) for i in range(len(pairs["positive"]))]


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
    resamples: int = 0,
    queries: torch.Tensor | None = None,
    texts: Sequence[str | None] | None = None,
) -> dict[str, float | str | None | list[float]]:
    """docs/design.md's extractor report: skilled-forgery EER/AUC/FAR/FRR plus ``eer_random``, and with
    ``resamples`` a 95% bootstrap interval of the EER over writers (``eer_ci``).

    Signatures that declare their ``texts`` are judged against content-matched impostors (the same
    text by other writers) beside any skilled forgeries; data with neither (genuine-only writer folders)
    falls back to random forgeries as the negatives; ``negatives`` in the report says which were used.
    """
    pairs = writer_protocol_pairs(embeddings, writers, forged, queries, texts)
    negatives, impostors = protocol_negatives(pairs)
    positive = torch.cat(pairs["positive"])
    report: dict[str, float | str | None | list[float]] = dict(verification_metrics(positive, torch.cat(impostors), threshold))
    report["negatives"] = negatives
    random = torch.cat(pairs["random"])
    report["eer_random"] = verification_metrics(positive, random)["eer"] if random.numel() else None
    report["n_writers"] = len(pairs["positive"])
    if resamples and negatives != "random":
        report["eer_ci"] = list(bootstrap_eer_interval(pairs["positive"], impostors, resamples))
    return report


def labelled_summary(labelled: list[tuple[bool, float]], threshold: float) -> dict[str, float | int]:
    """EER/AUC of labelled verdicts' ``(genuine, score)`` (both kinds needed), and FAR and FRR at the
    ``threshold`` the verdicts used: what ``signver verify --pairs`` prints after a labelled file."""
    positive = torch.tensor([distance for label, distance in labelled if label], dtype=torch.double)
    negative = torch.tensor([distance for label, distance in labelled if not label], dtype=torch.double)
    summary: dict[str, float | int] = {"n_labelled": len(labelled), "n_genuine": len(positive), "n_forged": len(negative),
                                       "threshold": threshold}
    if len(positive) and len(negative):
        metrics = verification_metrics(positive, negative, threshold)
        summary.update({key: metrics[key] for key in ("eer", "auc", "threshold_at_eer", "far", "frr")})
    elif len(negative):
        summary["far"] = float((negative <= threshold).double().mean())
    elif len(positive):
        summary["frr"] = float((positive > threshold).double().mean())
    return summary


def same_text_distances(
    embeddings: torch.Tensor,
    writers: Sequence[str],
    texts: Sequence[str],
    media: Sequence[str | None] | None = None,
    pairing: str = "any",
    positive_texts: str = "same",
    queries: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per writer, the same-text protocol's pair distances: ``positive`` = the writer's own pairs of
    the same text, ``negative`` = the writer's signatures against other writers' signatures of the
    same text (content-matched impostors: the same name in another hand).

    ``pairing`` restricts pairs by medium: ``"any"``, ``"same"`` (both on one medium) or ``"cross"``
    (two different media); ``media`` gives each signature's. ``positive_texts="any"`` takes every pair
    of the writer's as a positive (within one medium a name is often written once, so a writer's pairs
    there are of different names). ``queries`` compares references as in ``embeddings`` with queries
    as in ``queries``, as :func:`writer_protocol_distances` does. Returns two lists indexed by writer,
    for :func:`bootstrap_eer_interval`.
    """
    if positive_texts not in ("same", "any"):
        raise ValueError(f"positive_texts must be same or any, not {positive_texts!r}")
    if pairing not in ("any", "same", "cross"):
        raise ValueError(f"pairing must be any, same or cross, not {pairing!r}")
    distance = cosine_distance_matrix(embeddings, queries)
    writer_ids, text_ids = _writer_indices(writers), _writer_indices(texts)
    same_text = text_ids[:, None] == text_ids[None, :]
    same_writer = writer_ids[:, None] == writer_ids[None, :]
    allowed = torch.ones_like(same_text)
    if pairing != "any":
        medium_ids = _writer_indices([str(m) for m in media]) if media is not None else torch.zeros_like(text_ids)
        same_medium = medium_ids[:, None] == medium_ids[None, :]
        allowed = same_medium if pairing == "same" else ~same_medium
    upper = torch.ones_like(same_text).triu(1) if queries is None else ~torch.eye(len(distance), dtype=torch.bool)
    positive_mask = (same_text if positive_texts == "same" else torch.ones_like(same_text)) & same_writer & upper & allowed
    negative_mask = same_text & ~same_writer & allowed  # both orders: each writer owns its rows
    positive = [distance[positive_mask & (writer_ids == w)[:, None]] for w in writer_ids.unique()]
    negative = [distance[negative_mask & (writer_ids == w)[:, None]] for w in writer_ids.unique()]
    return positive, negative


def same_text_metrics(
    embeddings: torch.Tensor,
    writers: Sequence[str],
    texts: Sequence[str],
    media: Sequence[str | None] | None = None,
    pairing: str = "any",
    threshold: float | None = None,
    resamples: int = 0,
    positive_texts: str = "same",
    queries: torch.Tensor | None = None,
) -> dict[str, float | int | list[float]]:
    """EER, AUC and FAR/FRR of the same-text protocol (:func:`same_text_distances`), with a 95%
    bootstrap interval over writers (``eer_ci``) when ``resamples`` is given."""
    positive, negative = same_text_distances(embeddings, writers, texts, media, pairing, positive_texts, queries)
    report: dict[str, float | int | list[float]] = dict(verification_metrics(torch.cat(positive), torch.cat(negative), threshold))
    report["n_writers"] = len(positive)
    if resamples:
        report["eer_ci"] = list(bootstrap_eer_interval(positive, negative, resamples))
    return report


def ink_f1(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-page F1 of the ink pixels of ``predicted`` against ``target`` (``(N, 1, H, W)`` pages in ``[0, 1]``,
    dark ink on light paper), each page binarised on its own by :func:`~signver_torch.data.ink.ink_mask`."""
    from signver_torch.data.ink import ink_mask

    pred, true = (ink_mask((1.0 - pages.float()).clamp(0, 1)).flatten(1) for pages in (predicted, target))
    hits = (pred & true).sum(1).float()
    return 2 * hits / (pred.sum(1) + true.sum(1)).float().clamp_min(1)


def cleaning_metrics(cleaned: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-page PSNR (dB, capped at 100 for exact copies), SSIM and ink F1 against clean targets (``[0, 1]``)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    cleaned, target = cleaned.float(), target.float()
    return {
        "psnr": peak_signal_noise_ratio(cleaned, target, data_range=1.0, reduction="none", dim=(1, 2, 3)).clamp(max=100.0),
        "ssim": structural_similarity_index_measure(cleaned, target, data_range=1.0, reduction="none"),
        "ink_f1": ink_f1(cleaned, target),
    }


class DetectionMetrics(torch.nn.Module):
    """COCO box metrics of a detector: mAP@0.5:0.95 and mAP@0.5 overall, AP@0.5 per class.

    Two torchmetrics ``MeanAveragePrecision`` instances: COCO's full IoU sweep, and one at IoU 0.5
    whose per-class figures are the AP@0.5 the issue targets are stated in.
    """

    def __init__(self, class_names: dict[int, str], sync_on_compute: bool = True) -> None:
        super().__init__()
        from torchmetrics.detection import MeanAveragePrecision

        self.class_names = class_names
        common = {"box_format": "xyxy", "iou_type": "bbox", "sync_on_compute": sync_on_compute}
        self.coco = MeanAveragePrecision(**common)
        self.at_50 = MeanAveragePrecision(**common, iou_thresholds=[0.5], class_metrics=True)

    def update(self, predictions: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]]) -> None:
        predictions = [{key: p[key] for key in ("boxes", "scores", "labels")} for p in predictions]
        targets = [{key: t[key] for key in ("boxes", "labels")} for t in targets]
        self.coco.update(predictions, targets)
        self.at_50.update(predictions, targets)

    def compute(self) -> dict[str, float]:
        coco, at_50 = self.coco.compute(), self.at_50.compute()
        result = {"map50": float(coco["map_50"]), "map": float(coco["map"])}
        classes = at_50["classes"].flatten().tolist()
        for label, value in zip(classes, at_50["map_per_class"].flatten().tolist()):
            if value >= 0:  # torchmetrics reports -1 for a class with no labelled box
                result[f"map50_{self.class_names.get(int(label), label)}"] = float(value)
        return result

    def reset(self) -> None:
        self.coco.reset()
        self.at_50.reset()
