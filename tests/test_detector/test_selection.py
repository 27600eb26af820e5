"""The detector's host steps without torch (``detector/selection.py``, ``detector/exported.py``), held to torch and
torchvision on the fixture's real pages: the selection after the network, and the letterbox before it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.ops import batched_nms

from signver_torch.detector.api import Detector
from signver_torch.detector.exported import letterboxed_array
from signver_torch.detector.selection import DetectionSelection, box_iou, nms
from signver_torch.detector.transforms import letterbox
from signver_torch.io import load_image_array, load_image_tensor


def torchvision_selection(selection: DetectionSelection, boxes: torch.Tensor, scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """torchvision's RetinaNet post-processing, as ``RetinaNet.postprocess_detections`` writes it."""
    classes, kept = scores.shape[-1], []
    for level_boxes, level_scores in zip(boxes.split(list(selection.levels)), scores.split(list(selection.levels))):
        flat = level_scores.flatten()
        candidates = torch.where(flat > selection.score_thresh)[0]
        top, order = flat[candidates].topk(min(selection.topk_candidates, len(candidates)))
        candidates = candidates[order]
        kept.append((level_boxes[candidates // classes], top, candidates % classes))
    found_boxes, found_scores, labels = (torch.cat(column) for column in zip(*kept))
    keep = batched_nms(found_boxes, found_scores, labels, selection.nms_thresh)[: selection.detections_per_img]
    return {"boxes": found_boxes[keep], "scores": found_scores[keep], "labels": labels[keep]}


def test_the_numpy_selection_is_torchvisions_on_real_pages(documents: Path) -> None:
    detector = Detector(device="cpu").load("default")
    pages = sorted((documents / "images").iterdir())[:6]
    with torch.inference_mode():
        boxes, scores = detector.loaded_network(torch.stack([letterbox(load_image_tensor(page, "RGB"), detector.image_size)[0] for page in pages]))
    found_any = 0
    for page_boxes, page_scores in zip(boxes, scores):
        expected = torchvision_selection(detector.selection, page_boxes, page_scores)
        found = detector.selection(page_boxes.numpy(), page_scores.numpy())
        assert found["labels"].tolist() == expected["labels"].tolist()
        np.testing.assert_allclose(found["scores"], expected["scores"].numpy(), atol=1e-6)
        np.testing.assert_allclose(found["boxes"], expected["boxes"].numpy(), atol=1e-4)
        found_any += len(found["boxes"])
    assert found_any >= 6


def test_box_iou_and_nms_are_torchvisions() -> None:
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, (60, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 40, (60, 2))], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 60).astype(np.float32)
    from torchvision.ops import box_iou as torch_box_iou, nms as torch_nms

    np.testing.assert_allclose(box_iou(boxes, boxes[:7]), torch_box_iou(torch.from_numpy(boxes), torch.from_numpy(boxes[:7])).numpy(), atol=1e-6)
    assert nms(boxes, scores, 0.3).tolist() == torch_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.3).tolist()


def test_the_numpy_letterbox_is_torchs(documents: Path, tmp_path: Path) -> None:
    """PIL's antialiased bilinear (mode F) against torch's ``interpolate(antialias=True)``: a real page scaled down from
    1400 px and a small sample scaled up, both padded with white."""
    page = Image.open(sorted((documents / "images").iterdir())[0]).convert("RGB")
    large = tmp_path / "large.png"
    page.resize((1400, round(1400 * page.height / page.width))).save(large)
    for source in (large, documents.parent / "samples" / "signdoc.jpg"):
        expected, expected_scale = letterbox(load_image_tensor(source, "RGB"), 640)
        boxed, scale = letterboxed_array(load_image_array(source, "RGB"), 640)
        assert boxed.shape == (3, 640, 640) and scale == expected_scale
        assert float(np.abs(boxed - expected.numpy()).max()) <= 1e-3


def test_empty_boxes_and_tied_scores_go_as_in_torchvision() -> None:
    """Two empty boxes (IoU 0/0) both stay, as torchvision keeps them; equal scores of two classes come out in the
    boxes' order, as ``batched_nms`` gives them."""
    from torchvision.ops import nms as torch_nms

    boxes = np.array([[5, 5, 5, 9], [5, 5, 5, 9], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == torch_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).tolist() == [0, 1, 2]
    tied = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    same, labels = np.array([0.6, 0.6], np.float32), np.array([2, 1])
    expected = batched_nms(torch.from_numpy(tied), torch.from_numpy(same), torch.from_numpy(labels), 0.5).tolist()
    from signver_torch.detector.selection import batched_nms as numpy_batched_nms

    assert numpy_batched_nms(tied, same, labels, 0.5).tolist() == expected == [0, 1]
