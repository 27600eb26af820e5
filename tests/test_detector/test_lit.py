"""The detector's LightningModule (``detector/lit.py``): where its weights start (the shipped extractor's
backbone, or a whole detector to fine-tune)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from signver_torch.detector.api import Detector
from signver_torch.errors import CheckpointError


def test_backbone_starts_from_the_shipped_extractor() -> None:
    from signver_torch.detector.lit import DetectorModule
    from signver_torch.checkpoints import load_model
    from signver_torch.extractor.model import extractor_from_card

    extractor, _ = load_model("extractor", "default", extractor_from_card)
    module = DetectorModule(image_size=128, init_backbone="default")
    body = module.model.backbone.body
    torch.testing.assert_close(body.layer3[1].conv2.weight, extractor.backbone.layer3[1].conv2.weight)
    torch.testing.assert_close(body.conv1.weight.sum(1), extractor.backbone.conv1.weight[:, 0], rtol=1e-3, atol=1e-4)
    with pytest.raises(CheckpointError, match="cannot initialise"):
        DetectorModule(architecture="retinanet_resnet50_fpn", image_size=128, init_backbone="default")


def test_fine_tuning_starts_from_a_whole_detector(small_checkpoint: Path) -> None:
    from signver_torch.detector.lit import DetectorModule

    state = Detector(device="cpu").load(small_checkpoint).model.state_dict()
    module = DetectorModule(image_size=256, init=str(small_checkpoint), init_backbone="default")
    for key, value in module.model.state_dict().items():  # every tensor, the backbone too, is the checkpoint's
        torch.testing.assert_close(value, state[key])
    larger = DetectorModule(image_size=320, init=str(small_checkpoint))  # the same weights, pages seen at 320 px
    assert larger.model.transform.min_size == (320,) and larger.model.transform.max_size == 320
    torch.testing.assert_close(larger.model.head.classification_head.cls_logits.weight, state["head.classification_head.cls_logits.weight"])
    with pytest.raises(CheckpointError, match="retinanet_resnet50_fpn"):
        DetectorModule(architecture="retinanet_resnet50_fpn", image_size=256, init=str(small_checkpoint))
