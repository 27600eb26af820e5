"""The detector's operating score threshold, chosen on labelled validation pages (``signver calibrate
detector``) and written into its card, so that the pipeline keeps what the measured recall and precision
describe instead of a fixed 0.3."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from signver_torch.checkpoints import resolve_checkpoint, update_card
from signver_torch.data.detection import DetectionPages
from signver_torch.detector.api import Detector
from signver_torch.detector.evaluation import operating_report, pages_text, ranked_matches, scored_pages, set_reading
from signver_torch.detector.marks import Mark
from signver_torch.errors import SignVerError

#: ``--held-out-every`` unless given: the recipes' split of the real pages.
HELD_OUT_EVERY = 3


def choose_threshold(scores: torch.Tensor, matched: torch.Tensor, marks: int, *, target_precision: float | None = None,
                     target_recall: float | None = None) -> tuple[float, str]:
    """The score threshold and the rule's words, from the signature detections of every page
    (``scores``, whether each ``matched`` a mark: :func:`ranked_matches`) and the pages' ``marks``.

    A threshold keeps the detections scoring at least it. Each candidate lies halfway between the lowest
    score kept and the highest dropped (0 below the lowest), never between tied scores, so that a
    backend's slightly different arithmetic keeps the same detections. The rule: the best F1 (the highest
    threshold among equals); with ``target_precision``, the lowest threshold whose precision reaches it
    (the most recall at that precision); with ``target_recall``, the highest whose recall reaches it
    (the most precision at that recall)."""
    if not marks:
        raise SignVerError("no labelled signatures on these pages: nothing to choose a threshold on")
    if not len(scores):
        raise SignVerError("no signature detections on these pages: nothing to choose a threshold on")
    scores, order = scores.double().sort(descending=True, stable=True)
    hits = matched[order].double().cumsum(0)
    kept = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    lower = torch.cat([scores[1:], scores.new_zeros(1)])
    candidates = (scores > lower).nonzero().flatten()
    recall, precision = hits[candidates] / marks, hits[candidates] / kept[candidates]
    if target_precision is not None:
        reached = candidates[precision >= target_precision]
        if not len(reached):
            raise SignVerError(f"no threshold reaches signature precision {target_precision:g} on these pages (at most "
                               f"{float(precision.max()):.3f}): lower --target-precision")
        index, rule = reached[-1], f"the lowest score threshold whose signature precision is at least {target_precision:g}"
    elif target_recall is not None:
        reached = candidates[recall >= target_recall]
        if not len(reached):
            raise SignVerError(f"no threshold reaches signature recall {target_recall:g} on these pages (at most "
                               f"{float(recall.max()):.3f}): lower --target-recall")
        index, rule = reached[0], f"the highest score threshold whose signature recall is at least {target_recall:g}"
    else:
        f1 = 2 * hits[candidates] / (kept[candidates] + marks)
        index, rule = candidates[f1.argmax()], "the best F1 of the signature class"
    return float((scores[index] + lower[index]) / 2), rule


def calibrate_detector(
    data_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike = "default",
    *,
    held_out_every: int = HELD_OUT_EVERY,
    target_precision: float | None = None,
    target_recall: float | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Choose the checkpoint's signature score threshold on labelled validation pages and write it into
    its card as ``score_threshold`` (atomically; the weights are untouched); returns the card.

    Real folders give their held-out pages (every ``held_out_every``-th by file name; 1: every page, for
    a folder never trained on), folders drawn by ``signver synthesize`` all of theirs (:func:`set_reading`).
    The signature detections of all pages are pooled and the threshold chosen by :func:`choose_threshold`.
    The card's ``score_threshold_calibration`` records how: the rule, the data and pages, recall and
    precision (95% Wilson intervals) and F1 at the threshold, exactly what ``signver evaluate detector``
    reports there, the checkpoint's sha256 and the command."""
    if target_precision is not None and target_recall is not None:
        raise SignVerError("--target-precision and --target-recall are two rules: give one")
    for name, value in (("--target-precision", target_precision), ("--target-recall", target_recall)):
        if value is not None and not 0 < value <= 1:
            raise SignVerError(f"{name} must be above 0 and at most 1, not {value}")
    if held_out_every < 1:
        raise SignVerError(f"--held-out-every must be at least 1 (1: every page), not {held_out_every}")
    weights = resolve_checkpoint("detector", checkpoint).weights
    folders = [data_dirs] if isinstance(data_dirs, (str, os.PathLike)) else list(data_dirs)
    readings = {str(folder): set_reading(folder, held_out_every) for folder in folders}
    # every folder read (and refused) before the network runs
    records = {folder: scored_pages(folder, class_map, every) for folder, (class_map, every) in readings.items()}
    detector = Detector(device=device).load(weights)
    scores, matched, marks = [], [], 0
    for folder, folder_records in records.items():
        pages = DetectionPages(folder_records)
        for index in tqdm(range(len(pages)), desc=f"scoring {folder}", unit="page", file=sys.stderr, disable=not progress):
            image, target = pages[index]
            [found] = detector.predict([image], score_threshold=0.0)
            page_scores, page_matched, page_marks = ranked_matches(found, target, Mark.SIGNATURE)
            scores.append(page_scores)
            matched.append(page_matched)
            marks += page_marks
    every_score, every_match = torch.cat(scores), torch.cat(matched)
    threshold, rule = choose_threshold(every_score, every_match, marks, target_precision=target_precision,
                                       target_recall=target_recall)
    keep = every_score >= threshold  # as predict and evaluate compare
    hits, detections = int(every_match[keep].sum()), int(keep.sum())
    at_threshold = operating_report({Mark.SIGNATURE: [hits, marks, detections]}, threshold)[Mark.SIGNATURE.class_name]
    command = ["calibrate", "detector", "--data", *readings, "--held-out-every", str(held_out_every),
               *(["--target-precision", f"{target_precision:g}"] if target_precision is not None else []),
               *(["--target-recall", f"{target_recall:g}"] if target_recall is not None else []),
               "--checkpoint", str(weights)]
    return update_card(weights, score_threshold=threshold, score_threshold_calibration={
        "rule": rule,
        "data": list(readings),
        "pages": {folder: f"{len(records[folder])} pages: {pages_text(every)}" for folder, (_, every) in readings.items()},
        "n_pages": sum(len(folder_records) for folder_records in records.values()),
        "signature": {**at_threshold, "f1": round(2 * hits / (marks + detections), 4)},
        "checkpoint_sha256": detector.sha256,
        "command": "signver " + shlex.join(command),
    })
