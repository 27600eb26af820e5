"""The detector's evaluation: mAP on labelled pages, and the pages it gets wrong (missed marks,
confident false positives), listed and drawn."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Collection, Mapping

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.ops import box_iou
from torchvision.transforms.functional import to_pil_image
from tqdm.auto import tqdm

from signver_torch.data.detection import CLASS_NAMES, DetectionPages, read_detection_dataset, split_pages
from signver_torch.detector.api import Detector, draw_detections
from signver_torch.detector.marks import Detection, Mark
from signver_torch.errors import SignVerError
from signver_torch.metrics import DetectionMetrics


#: A labelled mark is missed when no detection of its class above this score overlaps it at IoU 0.5.
MISS_SCORE = 0.05
#: A detection at or above this score (``predict``'s default) that overlaps no mark of its class is a false positive.
FALSE_POSITIVE_SCORE = 0.3


def page_errors(
    found: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], classes: Collection[int] = tuple(CLASS_NAMES)
) -> dict[str, list[dict[str, Any]]]:
    """The labelled marks ``found`` misses (IoU < 0.5 with every detection of their class scoring at
    least ``MISS_SCORE``) and its confident false positives (score ≥ ``FALSE_POSITIVE_SCORE``, IoU < 0.5
    with every mark of their class), each with its box, class and best IoU. Only detections of
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
    confident = (found["scores"] >= FALSE_POSITIVE_SCORE) & labelled & (best_for_detection < 0.5)
    false_positives = [
        {**Detection(tuple(found["boxes"][i].tolist()), Mark(int(found["labels"][i])), float(found["scores"][i])).as_dict(
            ("box", "class", "score"), score_digits=3), "best_iou": round(float(best_for_detection[i]), 3)}
        for i in confident.nonzero().flatten().tolist()
    ]
    return {"missed": missed, "false_positives": false_positives}


def draw_errors(page: Image.Image, found: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> Image.Image:
    """``draw_detections`` of the detections scoring at least ``FALSE_POSITIVE_SCORE``, with the labelled boxes in black."""
    confident = found["scores"] >= FALSE_POSITIVE_SCORE
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
) -> dict[str, Any]:
    """docs/design.md's detector contract on ``data_dir`` (YOLO, SignVerOD or COCO): mAP@0.5, COCO mAP,
    AP@0.5 per class, seconds per page, plus the count of missed marks and confident false positives
    (:func:`page_errors`). ``held_out_every=N`` scores only every N-th page by file name, the pages the
    recipes hold out of training. ``errors_dir`` receives a picture of every page with an error
    (labelled boxes in black) and ``errors.json`` listing them."""
    records = read_detection_dataset(data_dir, class_map)
    if held_out_every:
        _, records = split_pages(records, held_out_every)
    if not records:
        raise SignVerError(f"{data_dir}: no pages to evaluate")
    detector = Detector(device=device).load(checkpoint)
    metrics = DetectionMetrics(CLASS_NAMES)
    pages = DetectionPages(records)
    seconds = 0.0
    classes = {label for record in records for label in record.labels}
    errors: dict[str, dict[str, list[dict[str, Any]]]] = {}
    if errors_dir is not None:
        errors_dir = Path(errors_dir)
        errors_dir.mkdir(parents=True, exist_ok=True)
    for index in tqdm(range(len(pages)), desc="detecting", unit="page", file=sys.stderr, disable=not progress):
        image, target = pages[index]
        began = time.perf_counter()
        [found] = detector.predict([image], score_threshold=0.0)
        seconds += time.perf_counter() - began
        metrics.update([found], [target])
        page = page_errors(found, target, classes)
        if page["missed"] or page["false_positives"]:
            errors[records[index].path.name] = page
            if errors_dir is not None:
                draw_errors(to_pil_image(image), found, target).save(errors_dir / f"{records[index].path.stem}.png")
    if errors_dir is not None:
        (errors_dir / "errors.json").write_text(json.dumps(errors, indent=1))
    return {
        **metrics.compute(),
        "n_images": len(records),
        "n_boxes": sum(len(r.boxes) for r in records),
        "missed": sum(len(page["missed"]) for page in errors.values()),
        "false_positives": sum(len(page["false_positives"]) for page in errors.values()),
        "seconds_per_image": seconds / len(records),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": detector.sha256,
        "data": str(data_dir),
        "pages": f"1 in {held_out_every} by file name (held out of training)" if held_out_every else "all",
    }
