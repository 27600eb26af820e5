"""User facade of the detector: load a checkpoint, find signatures, initials, redactions and dates on pages."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torchvision.ops import box_iou
from torchvision.transforms.functional import to_pil_image
from tqdm.auto import tqdm

from signver_torch.checkpoints import load_model
from signver_torch.data.detection import CLASS_NAMES, DetectionPages, read_detection_dataset, split_pages
from signver_torch.data.page_transforms import letterbox
from signver_torch.detector.model import build_detector
from signver_torch.errors import CheckpointError, SignVerError
from signver_torch.extractor.api import best_device
from signver_torch.io import ImageSource, load_image_tensor
from signver_torch.metrics import DetectionMetrics

#: Pages smaller than this (either side) hold nothing to detect: an empty result, not an error.
MIN_PAGE_SIDE = 16


def load_detector(name_or_path: str | os.PathLike = "default") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The RetinaNet of a detector checkpoint (fp32, CPU) built from its card, and the card."""

    def build(card: dict[str, Any]) -> torch.nn.Module:
        architecture = dict(card["architecture"])
        return build_detector(architecture.pop("architecture"), **architecture)

    return load_model("detector", name_or_path, build)


class Detector:
    """Finds signatures (1), initials (2), redactions (3) and dates (4) on pages of any size.

    Example::

        detector = Detector().load("default")
        boxes, scores, classes, detections = detector.detect(page)   # SignVer's tuple
        [found] = detector.predict([page])                            # torchvision-style, pixels
    """

    def __init__(self, device: str | torch.device | None = None, batch_size: int = 4) -> None:
        self.device = torch.device(device) if device is not None else best_device()
        self.batch_size = batch_size
        self.model: torch.nn.Module | None = None
        self.card: dict[str, Any] = {}
        self.image_size = 640

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "default", **kwargs: Any) -> "Detector":
        return cls(**kwargs).load(name_or_path)

    def load(self, name_or_path: str | os.PathLike = "default") -> "Detector":
        """Load a shipped checkpoint by name (``"default"``) or a ``.safetensors`` path."""
        model, card = load_detector(name_or_path)
        self.model = model.eval().to(self.device)
        self.image_size = int(card["architecture"]["image_size"])
        self.card = card
        return self

    @torch.inference_mode()
    def predict(
        self, images: Sequence[ImageSource], score_threshold: float = 0.3, progress: bool = False
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per page as torchvision dicts (``boxes`` xyxy in the page's pixels, ``scores``, ``labels``)."""
        if self.model is None:
            raise CheckpointError("no checkpoint loaded (call load() first)")
        if isinstance(images, (str, bytes, os.PathLike)) or not isinstance(images, Sequence):
            raise SignVerError("predict() takes a list of pages: wrap a single page in a list")
        pages = [
            load_image_tensor(item, "RGB", name=None if isinstance(item, (str, os.PathLike)) else f"page {i}")
            for i, item in enumerate(images)
        ]
        results: list[dict[str, torch.Tensor]] = []
        starts = range(0, len(pages), self.batch_size)
        for start in tqdm(starts, desc="detecting", unit="batch", file=sys.stderr, disable=not progress, leave=False):
            group = pages[start : start + self.batch_size]
            boxed = [letterbox(page, self.image_size) for page in group]
            outputs = self.model([image.to(self.device) for image, _ in boxed])
            for page, (_, scale), output in zip(group, boxed, outputs):
                keep = output["scores"] >= score_threshold
                if min(page.shape[-2:]) < MIN_PAGE_SIDE:
                    keep = torch.zeros_like(keep)
                height, width = page.shape[-2:]
                boxes = (output["boxes"][keep] / scale).cpu()
                boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
                boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
                results.append({"boxes": boxes, "scores": output["scores"][keep].cpu(), "labels": output["labels"][keep].cpu()})
        return results

    def detect(self, image: ImageSource, score_threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """SignVer's call: ``(boxes [ymin, xmin, ymax, xmax] normalised to 0..1, scores, classes 1-4, count)``."""
        page = load_image_tensor(image, "RGB")
        [found] = self.predict([page], score_threshold)
        height, width = page.shape[-2:]
        boxes = found["boxes"].numpy()
        normalised = np.stack([boxes[:, 1] / height, boxes[:, 0] / width, boxes[:, 3] / height, boxes[:, 2] / width], axis=1)
        return normalised.astype(np.float32), found["scores"].numpy(), found["labels"].numpy().astype(np.int64), len(boxes)

    @property
    def sha256(self) -> str:
        return str(self.card.get("sha256", ""))


#: Box colours per class in pictures (signature, initials, redaction, date).
CLASS_COLOURS = {1: (220, 30, 30), 2: (30, 90, 220), 3: (20, 150, 40), 4: (230, 140, 0)}


def draw_detections(page: Image.Image, found: Mapping[str, torch.Tensor]) -> Image.Image:
    """The page with each detection's box, class and score drawn on it."""
    canvas = page.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 400))
    font = ImageFont.load_default(max(10, round(max(canvas.size) / 60)))
    for box, score, label in zip(found["boxes"].tolist(), found["scores"].tolist(), found["labels"].tolist()):
        colour = CLASS_COLOURS.get(int(label), (0, 0, 0))
        draw.rectangle(box, outline=colour, width=width)
        text = f"{CLASS_NAMES.get(int(label), label)} {score:.2f}"
        left, top = box[0], max(0, box[1] - font.size - 4)
        draw.rectangle(draw.textbbox((left, top), text, font=font), fill=colour)
        draw.text((left, top), text, fill=(255, 255, 255), font=font)
    return canvas


def summarize(found: Mapping[str, torch.Tensor]) -> dict[str, bool | int]:
    """Whether a page is signed, initialled, redacted, dated (and how many of each were found)."""
    labels = found["labels"].tolist()
    summary: dict[str, bool | int] = {}
    for label, name in CLASS_NAMES.items():
        summary[f"n_{name}"] = labels.count(label)
    summary.update(
        signed=labels.count(1) > 0, initialled=labels.count(2) > 0, redacted=labels.count(3) > 0, dated=labels.count(4) > 0
    )
    return summary


def parse_class_map(text: str | None) -> dict[int, int] | None:
    """``"0:1,1:4"`` → ``{0: 1, 1: 4}`` (dataset class → SignVer label)."""
    if not text:
        return None
    try:
        return {int(a): int(b) for a, b in (pair.split(":") for pair in text.split(","))}
    except ValueError:
        raise SignVerError(f"--class-map {text!r}: expected pairs like 0:1,1:4 (dataset class:SignVer label)") from None


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
        {"box": [round(v, 1) for v in boxes[i].tolist()], "class": CLASS_NAMES[int(labels[i])], "best_iou": round(float(best_for_mark[i]), 3)}
        for i in (best_for_mark < 0.5).nonzero().flatten().tolist()
    ]
    labelled = torch.isin(found["labels"], torch.tensor(sorted(classes), dtype=found["labels"].dtype))
    confident = (found["scores"] >= FALSE_POSITIVE_SCORE) & labelled & (best_for_detection < 0.5)
    false_positives = [
        {"box": [round(v, 1) for v in found["boxes"][i].tolist()], "class": CLASS_NAMES[int(found["labels"][i])],
         "score": round(float(found["scores"][i]), 3), "best_iou": round(float(best_for_detection[i]), 3)}
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
