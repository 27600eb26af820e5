"""The RetinaNet builders (``detector/model.py``): signature anchors, the batched and padded losses equal
torchvision's per-page loss, host post-processing gives the same detections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from signver_torch.data.detection import DetectionPages, read_detection_dataset
from signver_torch.detector.api import Detector
from signver_torch.detector.data import Letterboxed, SyntheticPages
from signver_torch.detector.model import build_detector
from signver_torch.detector.pages import PageConfig
from signver_torch.detector.transforms import letterbox
from signver_torch.errors import DataError


@pytest.mark.parametrize("architecture", ["retinanet_lite", "retinanet_resnet50_fpn"])
def test_builders_give_retinanets_with_signature_anchors(architecture: str) -> None:
    model = build_detector(architecture, image_size=128)
    assert model.head.classification_head.num_classes == 5
    assert model.anchor_generator.num_anchors_per_location()[0] == 12
    model.train()
    target = [{"boxes": torch.tensor([[10.0, 20.0, 90.0, 40.0]]), "labels": torch.tensor([1])}]
    losses = model([torch.rand(3, 128, 128)], target)
    assert set(losses) == {"classification", "bbox_regression"} and all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match="unknown detector"):
        build_detector("yolo")


def test_batched_loss_equals_torchvisions_per_page_loss(documents: Path, ink_maps: list[np.ndarray]) -> None:
    """The whole-batch matching and losses give torchvision's values and gradients on real and
    synthetic pages, a page without boxes among them."""
    from torchvision.models.detection import RetinaNet

    records = read_detection_dataset(documents)
    real = Letterboxed(DetectionPages([r for r in records if r.boxes][:2] + [r for r in records if not r.boxes][:1]), 320)
    synthetic = SyntheticPages(ink_maps, 2, seed=3, config=PageConfig(size=320))
    pages = [real[i] for i in range(3)] + [synthetic[i] for i in range(2)]
    torch.manual_seed(0)
    model = build_detector("retinanet_lite", image_size=320).train()
    images, targets = model.transform([image for image, _ in pages], [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in pages])
    features = list(model.backbone(images.tensors).values())
    anchors = model.anchor_generator(images, features)
    losses = {}
    for name, compute in (("batched", model.compute_loss), ("torchvision", lambda *a: RetinaNet.compute_loss(model, *a))):
        outputs = {key: value.detach().requires_grad_() for key, value in model.head(features).items()}
        loss = compute(targets, outputs, anchors)
        sum(loss.values()).backward()
        losses[name] = (loss, outputs["cls_logits"].grad, outputs["bbox_regression"].grad)
    (batched, cls_grad, box_grad), (reference, cls_ref, box_ref) = losses["batched"], losses["torchvision"]
    assert sum(len(t["boxes"]) for t in targets) > 5 and reference["bbox_regression"] > 0
    for key in reference:
        torch.testing.assert_close(batched[key], reference[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cls_grad, cls_ref, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(box_grad, box_ref, rtol=1e-4, atol=1e-8)


def test_padded_batch_loss_equals_the_unpadded_one(documents: Path, ink_maps: list[np.ndarray]) -> None:
    """Boxes padded on the host to a fixed count (with a zero-area box the collate drops) give the
    losses and gradients of torchvision's list-of-targets forward, a page without boxes included."""
    from signver_torch.detector.data import PaddedTargets

    records = read_detection_dataset(documents)
    real = Letterboxed(DetectionPages([r for r in records if r.boxes][:2] + [r for r in records if not r.boxes][:1]), 256)
    synthetic = SyntheticPages(ink_maps, 2, seed=5, config=PageConfig(size=256))
    pages = [real[i] for i in range(3)] + [synthetic[i] for i in range(2)]
    degenerate = {**pages[0][1], "boxes": torch.cat([pages[0][1]["boxes"], torch.tensor([[50.0, 60.0, 50.0, 90.0]])]),
                  "labels": torch.cat([pages[0][1]["labels"], torch.tensor([2])])}
    padded_images, padded = PaddedTargets(24)([(pages[0][0], degenerate), *pages[1:]])
    assert padded_images.shape == (5, 3, 256, 256) and padded["boxes"].shape == (5, 24, 4)
    assert padded["labels"].dtype == torch.int32 and int(padded["present"].sum()) == sum(len(t["boxes"]) for _, t in pages)
    torch.manual_seed(0)
    model = build_detector("retinanet_lite", image_size=256).train()
    results = {}
    for name in ("padded", "torchvision"):
        model.zero_grad()
        if name == "padded":
            losses = model.padded_training_loss(padded_images, padded["boxes"], padded["labels"], padded["present"])
        else:
            losses = model([image for image, _ in pages], [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in pages])
        sum(losses.values()).backward()
        results[name] = (losses, model.head.classification_head.cls_logits.weight.grad.clone())
    (padded_losses, padded_grad), (reference, reference_grad) = results["padded"], results["torchvision"]
    assert reference["bbox_regression"] > 0
    for key in reference:
        torch.testing.assert_close(padded_losses[key], reference[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(padded_grad, reference_grad, rtol=1e-4, atol=1e-7)
    with pytest.raises(DataError, match="more than max_boxes=1"):
        PaddedTargets(1)(pages)


def test_host_postprocessing_gives_the_same_detections(small_checkpoint: Path, small_data: Path) -> None:
    from signver_torch.detector.model import detect_with_host_postprocessing
    from signver_torch.io import load_image_tensor

    detector = Detector(device="cpu").load(small_checkpoint)
    detector.model.score_thresh = 0.0  # an untrained head scores everything near its 0.01 prior
    pages = [letterbox(load_image_tensor(small_data / "samples" / "signdoc.jpg", "RGB"), 256)[0], torch.rand(3, 256, 256)]
    with torch.no_grad():
        expected = detector.model(pages)
    for got, want in zip(detect_with_host_postprocessing(detector.model, pages), expected):
        assert len(want["boxes"]) > 0
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(got[key], want[key])
