"""User facade of the detector: load a checkpoint, find signatures, initials, redactions and dates on pages."""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from signver_torch.detector.exported import DEFAULT_SCORE_THRESHOLD, MIN_PAGE_SIDE, card_image_size, card_score_threshold  # noqa: F401 (public here too)
from signver_torch.detector.marks import Mark, detections, summarize  # noqa: F401 (summarize: public here too)
from signver_torch.detector.model import RetinaNetGraph, detector_from_card
from signver_torch.detector.selection import DetectionSelection, page_detections
from signver_torch.detector.transforms import letterbox
from signver_torch.errors import SignVerError
from signver_torch.facade import ExportGraph, ModelFacade
from signver_torch.io import ImageSource, load_image_tensor

class Detector(ModelFacade):
    """Finds signatures (1), initials (2), redactions (3) and dates (4) on pages of any size.

    Example::

        detector = Detector().load("default")
        boxes, scores, classes, detections = detector.detect(page)   # SignVer's tuple
        [found] = detector.predict([page])                            # torchvision-style, pixels
    """

    module = "detector"
    default_batch_size = 4
    int8_calibration_count = 64

    def __init__(self, device: str | torch.device | None = None, batch_size: int | None = None, backend: str = "torch") -> None:
        super().__init__(device, batch_size, backend)
        self.image_size = 640
        self.selection: DetectionSelection | None = None  # the host's step after the network
        self.score_threshold = DEFAULT_SCORE_THRESHOLD  # the card's, once loaded: what predict keeps by default

    def _build(self, card: dict[str, Any]) -> torch.nn.Module:
        return detector_from_card(card)

    def _configure(self, card: dict[str, Any], name_or_path: str | os.PathLike) -> None:
        self.image_size, self.score_threshold = card_image_size(card, name_or_path), card_score_threshold(card, name_or_path)

    def _torch_network(self, model: torch.nn.Module) -> RetinaNetGraph:
        network = RetinaNetGraph(model).eval()  # type: ignore[arg-type]
        with torch.inference_mode():  # one blank page: the pyramid's levels, hence the selection
            network(torch.ones(1, 3, self.image_size, self.image_size, device=self.device))
        self.selection = network.selection()
        return network

    def graph(self) -> ExportGraph:
        """Backbone, FPN, heads, box decoding and class probabilities in one graph; the selection on the host."""
        network = self._torch_network(self.loaded_model)
        size = self.image_size
        head = self.loaded_model.head
        # in int8, convolutions only (the box decoding is arithmetic on pixel coordinates), the class and box outputs in
        # float (docs/detector.md, "int8 on the CPU")
        return ExportGraph(network, torch.ones(2, 3, size, size), "pages", ["boxes", "scores"], {0: ("batch", 1)},
                           {"input": f"(N, 3, {size}, {size}) letterboxed pages in [0, 1] (white padding)",
                            "output": "boxes (N, A, 4) xyxy letterbox pixels, decoded and clipped; scores (N, A, C) class "
                            "probabilities", "selection": self.selection.as_dict()},  # type: ignore[union-attr]
                           quantized_ops=["Conv"], float_weights=[tuple(head.classification_head.cls_logits.weight.shape),
                                                                  tuple(head.regression_head.bbox_reg.weight.shape)])

    def calibration_inputs(self, files: Sequence[os.PathLike]) -> np.ndarray:
        """``files`` letterboxed to the network's square."""
        return np.stack([letterbox(load_image_tensor(path, "RGB"), self.image_size)[0].numpy() for path in files])

    @torch.inference_mode()
    def predict(
        self, images: Sequence[ImageSource], score_threshold: float | None = None, progress: bool = False
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per page as torchvision dicts (``boxes`` xyxy in the page's pixels, ``scores``, ``labels``),
        those scoring at least ``score_threshold`` (default: the checkpoint's, :attr:`score_threshold`)."""
        network = self.loaded_network
        threshold = self.score_threshold if score_threshold is None else score_threshold
        if isinstance(images, (str, bytes, os.PathLike)) or not isinstance(images, Sequence):
            raise SignVerError("predict() takes a list of pages: wrap a single page in a list")
        if self.exported is not None:  # an export: its host steps in numpy (ExportedDetector), as SignVer runs it
            self.exported.batch_size = self.batch_size
            return [{key: torch.from_numpy(value) for key, value in found.items()}
                    for found in self.exported.predict(images, threshold, progress)]
        pages = [
            load_image_tensor(item, "RGB", name=None if isinstance(item, (str, os.PathLike)) else f"page {i}")
            for i, item in enumerate(images)
        ]
        results: list[dict[str, torch.Tensor]] = []
        starts = range(0, len(pages), self.batch_size)
        for start in tqdm(starts, desc="detecting", unit="batch", file=sys.stderr, disable=not progress, leave=False):
            group = pages[start : start + self.batch_size]
            boxed = [letterbox(page, self.image_size) for page in group]
            all_boxes, all_scores = network(torch.stack([image for image, _ in boxed]).to(self.device))
            for page, (_, scale), boxes, scores in zip(group, boxed, all_boxes.cpu().numpy(), all_scores.cpu().numpy()):
                found = page_detections(self.selection(boxes, scores), scale, *page.shape[-2:], threshold, MIN_PAGE_SIDE)  # type: ignore[misc]
                results.append({key: torch.from_numpy(value) for key, value in found.items()})
        return results

    def detect(self, image: ImageSource, score_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """SignVer's call: ``(boxes [ymin, xmin, ymax, xmax] normalised to 0..1, scores, classes 1-4, count)``
        (``score_threshold`` as :meth:`predict`'s)."""
        page = load_image_tensor(image, "RGB")
        [found] = self.predict([page], score_threshold)
        height, width = page.shape[-2:]
        boxes = found["boxes"].numpy()
        normalised = np.stack([boxes[:, 1] / height, boxes[:, 0] / width, boxes[:, 3] / height, boxes[:, 2] / width], axis=1)
        return normalised.astype(np.float32), found["scores"].numpy(), found["labels"].numpy().astype(np.int64), len(boxes)


#: Box colours per class in pictures (signature, initials, redaction, date): each :class:`Mark`'s colour.
CLASS_COLOURS = {int(mark): mark.colour for mark in Mark}


def draw_detections(page: Image.Image, found: Mapping[str, Any]) -> Image.Image:
    """The page with each detection's box, class and score drawn on it."""
    canvas = page.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 400))
    font = ImageFont.load_default(max(10, round(max(canvas.size) / 60)))
    for detection in detections(found):
        box, colour = list(detection.box), detection.mark.colour
        draw.rectangle(box, outline=colour, width=width)
        text = f"{detection.mark.class_name} {detection.score:.2f}"
        left, top = box[0], max(0, box[1] - font.size - 4)
        draw.rectangle(draw.textbbox((left, top), text, font=font), fill=colour)
        draw.text((left, top), text, fill=(255, 255, 255), font=font)
    return canvas
