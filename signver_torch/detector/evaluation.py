"""The detector's evaluation: mAP on labelled pages, and the pages it gets wrong (missed marks,
confident false positives), listed and drawn; its score threshold chosen on validation pages
(:func:`calibrate_detector`); its confident mistakes on the real training pages mined as hard
negatives for training (:func:`mine_negatives`)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.ops import box_iou
from torchvision.transforms.functional import to_pil_image
from tqdm.auto import tqdm

from signver_torch.data.detection import CLASS_NAMES, DetectionPages, read_detection_dataset, split_pages
from signver_torch.detector.api import DEFAULT_SCORE_THRESHOLD, Detector, draw_detections
from signver_torch.detector.marks import Detection, Mark
from signver_torch.errors import SignVerError
from signver_torch.metrics import DetectionMetrics, wilson_interval


#: A labelled mark is missed when no detection of its class above this score overlaps it at IoU 0.5.
MISS_SCORE = 0.05


def page_errors(
    found: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], classes: Collection[int] = tuple(CLASS_NAMES),
    threshold: float = DEFAULT_SCORE_THRESHOLD,
) -> dict[str, list[dict[str, Any]]]:
    """The labelled marks ``found`` misses (IoU < 0.5 with every detection of their class scoring at
    least ``MISS_SCORE``) and its confident false positives (score ≥ ``threshold``, the detector's
    operating threshold, IoU < 0.5 with every mark of their class), each with its box, class and best IoU. Only detections of
    ``classes`` (those the data set labels) can be false positives: a signatures-only set says nothing
    of the dates on its pages."""
    boxes, labels = target["boxes"].reshape(-1, 4).float(), target["labels"]
    same_class = labels[:, None] == found["labels"][None, :]
    overlap = box_iou(boxes, found["boxes"]).where(same_class, 0.0)  # (marks, detections), other classes 0
    # a zero row/column stands for "nothing to overlap": a page without detections, or without marks
    best_for_mark = F.pad(overlap.where(found["scores"] >= MISS_SCORE, 0.0), (0, 1)).amax(1)
    best_for_detection = F.pad(overlap, (0, 0, 0, 1)).amax(0)
    missed = [
        {**Detection(tuple(boxes[i].tolist()), Mark(int(labels[i]))).as_dict(("box", "class")), "best_iou": round(float(best_for_mark[i]), 3)}
        for i in (best_for_mark < 0.5).nonzero().flatten().tolist()
    ]
    labelled = torch.isin(found["labels"], torch.tensor(sorted(classes), dtype=found["labels"].dtype))
    confident = (found["scores"] >= threshold) & labelled & (best_for_detection < 0.5)
    false_positives = [
        {**Detection(tuple(found["boxes"][i].tolist()), Mark(int(found["labels"][i])), float(found["scores"][i])).as_dict(
            ("box", "class", "score"), score_digits=3), "best_iou": round(float(best_for_detection[i]), 3)}
        for i in confident.nonzero().flatten().tolist()
    ]
    return {"missed": missed, "false_positives": false_positives}


def ranked_matches(found: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                   label: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The detections of class ``label`` by score, highest first (ties in their order), whether each
    matched, and the page's marks of that class: each detection in turn takes the best still unmatched
    mark at IoU ≥ 0.5 (one to one). A threshold keeps a prefix of this list and its matches are the
    prefix's, so one ranking gives the counts at every threshold (:func:`operating_counts`, calibration)."""
    marks = target["boxes"].reshape(-1, 4).float()[target["labels"] == label]
    mine = found["labels"] == label
    scores, order = found["scores"][mine].sort(descending=True, stable=True)
    detections = found["boxes"][mine][order]
    overlap = box_iou(detections, marks) if len(marks) and len(detections) else torch.zeros(len(detections), len(marks))
    taken = torch.zeros(len(marks), dtype=torch.bool)
    matched = torch.zeros(len(detections), dtype=torch.bool)
    for index, row in enumerate(overlap):
        row = row.where(~taken, 0.0)
        if len(row) and row.max() >= 0.5:
            taken[row.argmax()] = matched[index] = True
    return scores, matched, len(marks)


def operating_counts(found: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], classes: Collection[int],
                     threshold: float = DEFAULT_SCORE_THRESHOLD) -> dict[int, list[int]]:
    """Per labelled class, ``[matched marks, marks, detections]`` at ``threshold`` (:func:`ranked_matches`)."""
    counts = {}
    for label in classes:
        scores, matched, marks = ranked_matches(found, target, label)
        keep = scores >= threshold
        counts[label] = [int(matched[keep].sum()), marks, int(keep.sum())]
    return counts


def operating_report(counts: Mapping[int, Sequence[int]], threshold: float = DEFAULT_SCORE_THRESHOLD) -> dict[str, Any]:
    """Recall and precision per class at ``threshold``, with 95% Wilson intervals (marks counted as independent)."""
    report: dict[str, Any] = {"threshold": threshold}
    for label, (matched, marks, detections) in sorted(counts.items()):
        report[CLASS_NAMES[label]] = {
            "recall": matched / marks if marks else None, "recall_ci": list(wilson_interval(matched, marks)),
            "precision": matched / detections if detections else None,
            "precision_ci": list(wilson_interval(matched, detections)),
            "marks": marks, "detections": detections,
        }
    return report


def draw_errors(page: Image.Image, found: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                threshold: float = DEFAULT_SCORE_THRESHOLD) -> Image.Image:
    """``draw_detections`` of the detections scoring at least ``threshold``, with the labelled boxes in black."""
    confident = found["scores"] >= threshold
    canvas = draw_detections(page, {key: value[confident] for key, value in found.items()})
    draw = ImageDraw.Draw(canvas)
    for box in target["boxes"].reshape(-1, 4).tolist():
        draw.rectangle(box, outline=(0, 0, 0), width=max(1, round(max(canvas.size) / 600)))
    return canvas


def evaluate_detector(
    data_dir: str | os.PathLike,
    checkpoint: str | os.PathLike = "default",
    *,
    class_map: Mapping[int, int] | None = None,
    held_out_every: int | None = None,
    device: str | None = None,
    progress: bool = True,
    errors_dir: str | os.PathLike | None = None,
    detector: Detector | None = None,
    backend: str = "torch",
) -> dict[str, Any]:
    """docs/design.md's detector contract on ``data_dir`` (YOLO, SignVerOD or COCO): mAP@0.5, COCO mAP,
    AP@0.5 per class, seconds per page, plus the count of missed marks and confident false positives
    (:func:`page_errors`). ``held_out_every=N`` scores only every N-th page by file name, the pages the
    recipes hold out of training. Recall, precision and confident false positives are counted at the
    checkpoint's score threshold (``at_threshold`` says which). ``errors_dir`` receives a picture of
    every page with an error (labelled boxes in black) and ``errors.json`` listing them. ``backend``: what runs
    the network (:class:`~signver_torch.facade.ModelFacade`)."""
    records = scored_pages(data_dir, class_map, held_out_every)
    detector = detector or Detector(device=device, backend=backend).load(checkpoint)
    threshold = detector.score_threshold
    metrics = DetectionMetrics(CLASS_NAMES)
    pages = DetectionPages(records)
    seconds = 0.0
    classes = {label for record in records for label in record.labels}
    errors: dict[str, dict[str, list[dict[str, Any]]]] = {}
    if errors_dir is not None:
        errors_dir = Path(errors_dir)
        errors_dir.mkdir(parents=True, exist_ok=True)
    counts = {label: [0, 0, 0] for label in classes}
    for index in tqdm(range(len(pages)), desc="detecting", unit="page", file=sys.stderr, disable=not progress):
        image, target = pages[index]
        began = time.perf_counter()
        [found] = detector.predict([image], score_threshold=0.0)
        seconds += time.perf_counter() - began
        metrics.update([found], [target])
        for label, page_counts in operating_counts(found, target, classes, threshold).items():
            counts[label] = [a + b for a, b in zip(counts[label], page_counts)]
        page = page_errors(found, target, classes, threshold)
        if page["missed"] or page["false_positives"]:
            errors[records[index].path.name] = page
            if errors_dir is not None:
                draw_errors(to_pil_image(image), found, target, threshold).save(errors_dir / f"{records[index].path.stem}.png")
    if errors_dir is not None:
        (errors_dir / "errors.json").write_text(json.dumps(errors, indent=1))
    return {
        **metrics.compute(),
        "n_images": len(records),
        "n_boxes": sum(len(r.boxes) for r in records),
        "missed": sum(len(page["missed"]) for page in errors.values()),
        "false_positives": sum(len(page["false_positives"]) for page in errors.values()),
        "at_threshold": {**operating_report(counts, threshold), "threshold_from": threshold_origin(detector)},
        "counts": {str(label): value for label, value in counts.items()},
        "seconds_per_image": seconds / len(records),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": detector.sha256,
        "backend": detector.backend,
        "precision": detector.precision,
        "data": str(data_dir),
        "pages": pages_text(held_out_every),
    }


def threshold_origin(detector: Detector) -> str:
    """Where the detector's score threshold comes from: its card's calibration, or the default."""
    if "score_threshold" in detector.card:
        return "the checkpoint's card (signver calibrate detector)"
    return f"the default {DEFAULT_SCORE_THRESHOLD} (the card has no score_threshold)"


def scored_pages(data_dir: str | os.PathLike, class_map: Mapping[int, int] | None, held_out_every: int | None) -> list[Any]:
    """The labelled pages of ``data_dir`` that are scored: every ``held_out_every``-th by file name, or all."""
    records = read_detection_dataset(data_dir, class_map)
    if held_out_every:
        _, records = split_pages(records, held_out_every)
    if not records:
        raise SignVerError(f"{data_dir}: no pages to evaluate")
    return records


def pages_text(held_out_every: int | None) -> str:
    """Which pages of a folder were scored, in words (the reports' ``pages``)."""
    return f"1 in {held_out_every} by file name (held out of training)" if held_out_every and held_out_every > 1 else "all"


def set_reading(folder: str | os.PathLike, held_out_every: int | None) -> tuple[Mapping[int, int] | None, int | None]:
    """How one of several folders is read: a folder drawn by ``signver synthesize`` (its pages never
    trained on) whole, its YOLO classes as SignVer's four; a real folder by ``held_out_every``."""
    from signver_torch.data.detection import SYNTHESIS_RECORD, parse_class_map
    from signver_torch.detector.data import YOLO_CLASS_MAP

    if (Path(folder) / SYNTHESIS_RECORD).is_file():
        return parse_class_map(YOLO_CLASS_MAP), None
    return None, held_out_every


def evaluate_detector_sets(
    data_dirs: Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike = "default",
    *,
    held_out_every: int | None = None,
    device: str | None = None,
    progress: bool = True,
    backend: str = "torch",
) -> dict[str, Any]:
    """:func:`evaluate_detector` on each folder and the counts at the operating threshold pooled over
    all, at the checkpoint's score threshold. ``held_out_every`` applies to real folders only (:func:`set_reading`)."""
    detector = Detector(device=device, backend=backend).load(checkpoint)
    sets: dict[str, dict[str, Any]] = {}
    for folder in data_dirs:
        class_map, every = set_reading(folder, held_out_every)
        sets[str(folder)] = evaluate_detector(folder, checkpoint, class_map=class_map, held_out_every=every,
                                              progress=progress, detector=detector)
    pooled: dict[int, list[int]] = {}
    for report in sets.values():
        for label, value in report["counts"].items():
            pooled[int(label)] = [a + b for a, b in zip(pooled.get(int(label), [0, 0, 0]), value)]
    pages = sum(report["n_images"] for report in sets.values())
    return {
        "sets": sets,
        "pooled": {
            "at_threshold": {**operating_report(pooled, detector.score_threshold), "threshold_from": threshold_origin(detector)},
            "n_images": pages,
            "n_boxes": sum(report["n_boxes"] for report in sets.values()),
            "seconds_per_image": sum(report["seconds_per_image"] * report["n_images"] for report in sets.values()) / pages,
        },
        "checkpoint": str(checkpoint), "checkpoint_sha256": detector.sha256, "backend": detector.backend,
        "precision": detector.precision,
    }


#: A mined negative overlaps every labelled signature of its page less than this (IoU).
NEGATIVE_IOU = 0.1


def mine_negatives(
    data_dir: str | os.PathLike,
    checkpoint: str | os.PathLike = "default",
    *,
    held_out_every: int = 3,
    threshold: float = DEFAULT_SCORE_THRESHOLD,
    max_iou: float = NEGATIVE_IOU,
    pages: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The detector's confident mistakes on the real *training* pages of ``data_dir`` (held-out pages are
    never read): signature detections scoring at least ``threshold`` that overlap every labelled signature
    of their page at IoU < ``max_iou`` (handwriting that is no signature, logos, stamps, script fonts).
    Returns the JSON the DataModule's ``negatives`` reads: each negative's page (file name), box (xyxy
    pixels) and score, with the checkpoint and the split it came from. ``pages`` reads only the first
    pages (a quick look)."""
    if held_out_every < 2:  # 1 would hold out every page, 0 or less none: the held-out pages must stay unread
        raise SignVerError(f"held_out_every must be at least 2, not {held_out_every}")
    records, _ = split_pages(read_detection_dataset(data_dir), held_out_every)
    records = records[:pages] if pages is not None else records
    if not records:
        raise SignVerError(f"{data_dir}: no training pages to mine")
    detector = Detector(device=device).load(checkpoint)
    negatives = []
    for record in tqdm(records, desc="mining negatives", unit="page", file=sys.stderr, disable=not progress):
        [found] = detector.predict([record.path], score_threshold=threshold)
        signatures = torch.tensor([box for box, label in zip(record.boxes, record.labels) if label == Mark.SIGNATURE])
        overlap = box_iou(found["boxes"], signatures.reshape(-1, 4))
        best = F.pad(overlap, (0, 1)).amax(1)  # a page without signatures overlaps nothing
        for index in ((found["labels"] == Mark.SIGNATURE) & (best < max_iou)).nonzero().flatten().tolist():
            negatives.append({"page": record.path.name, "box": [round(v, 1) for v in found["boxes"][index].tolist()],
                              "score": round(float(found["scores"][index]), 3)})
    return {
        "negatives": negatives, "n_pages": len(records), "threshold": threshold, "max_iou": max_iou,
        "data": str(data_dir), "held_out_every": held_out_every,
        "checkpoint": str(checkpoint), "checkpoint_sha256": detector.sha256,
    }
