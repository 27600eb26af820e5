"""Detector networks: torchvision RetinaNet with anchors shaped for signatures (wide, short boxes).

``retinanet_resnet50_fpn`` is the configuration the original SignVer trained on Gaudi; ``retinanet_lite``
is a ResNet-18 FPN with a narrower head for CPU use. Both are torchvision ``RetinaNet`` models (a
subclass that computes the training loss for the whole batch at once) with 4 object classes
(1 signature, 2 initials, 3 redaction, 4 date; label 0 unused) and random initial weights: nothing is
downloaded.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import box_iou, clip_boxes_to_image, sigmoid_focal_loss
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from signver_torch.detector.selection import DetectionSelection

#: Object classes plus torchvision's unused label 0.
NUM_CLASSES = 5
#: Anchor heights over widths: signatures and dates are 3-10x wider than tall (real pages: 0.1-0.7).
ASPECT_RATIOS = (0.125, 0.25, 0.5, 1.0)
DETECTOR_BUILDERS: dict[str, Any] = {}


def signature_anchors(sizes: tuple[int, ...] = (32, 64, 128, 256, 512)) -> AnchorGenerator:
    """Three scales per pyramid level (×1, ×2^⅓, ×2^⅔) and wide aspect ratios, on P3-P7."""
    scales = tuple((size, int(size * 2 ** (1 / 3)), int(size * 2 ** (2 / 3))) for size in sizes)
    return AnchorGenerator(scales, (ASPECT_RATIOS,) * len(sizes))


def _register(function: Any) -> Any:
    DETECTOR_BUILDERS[function.__name__] = function
    return function


class SignatureRetinaNet(RetinaNet):
    """torchvision's RetinaNet with its training loss computed for the whole batch at once.

    torchvision matches anchors and sums the focal and box losses one image at a time: about 140
    operator calls per page (2,210 at batch 16), part of what made the training step host-bound on an
    H100, and shapes that change with each page's boxes, which an HPU graph recompiles for. Here the boxes are padded
    (to the batch's largest count, or on the host to a fixed count: :meth:`padded_training_loss`) and matching (the same 0.5 / 0.4 thresholds and low-quality matches) and both losses are masked
    tensor operations of fixed shape; the values equal torchvision's (tested). Pages of different
    sizes (different anchors) fall back to torchvision's loop.
    """

    def compute_loss(
        self, targets: list[dict[str, torch.Tensor]], head_outputs: dict[str, torch.Tensor], anchors: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        if any(a.shape != anchors[0].shape or not torch.equal(a, anchors[0]) for a in anchors[1:]):
            return super().compute_loss(targets, head_outputs, anchors)
        grid = anchors[0]  # every page's anchors, the same for all
        batch, most = len(targets), max(1, max(len(t["boxes"]) for t in targets))
        boxes = grid.new_zeros(batch, most, 4)
        labels = torch.zeros(batch, most, dtype=torch.int32, device=grid.device)
        present = torch.zeros(batch, most, dtype=torch.bool, device=grid.device)
        for index, target in enumerate(targets):
            count = len(target["boxes"])
            boxes[index, :count], labels[index, :count], present[index, :count] = target["boxes"], target["labels"], True
        return self._padded_loss(boxes, labels, present, head_outputs, grid)

    def padded_training_loss(
        self, images: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, present: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The training losses of ``(B, 3, S, S)`` pages (already letterboxed to the model's size) whose
        boxes come padded to a fixed count (:class:`~signver_torch.detector.data.PaddedTargets`).

        The same values as ``model(list(images), targets)`` (tested), without what reads the device
        back inside the step: torchvision's per-page degenerate-box check, the per-page anchor
        comparison and the batch's box count. Every batch has one shape, so a compiled graph is reused.
        """
        batch = self.transform.normalize(images)
        features = list(self.backbone(batch).values())
        head_outputs = self.head(features)
        pages = ImageList(batch, [tuple(batch.shape[-2:])] * len(batch))
        grid = self.anchor_generator(pages, features)[0]
        return self._padded_loss(boxes.to(grid.dtype), labels, present, head_outputs, grid)

    def _padded_loss(
        self, boxes: torch.Tensor, labels: torch.Tensor, present: torch.Tensor,
        head_outputs: dict[str, torch.Tensor], grid: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Focal and L1 box losses of a batch whose ``(B, M)`` boxes are padded (``present`` marks the real ones)."""
        batch = len(boxes)
        matches = self._match(boxes, present, grid)
        foreground, ignored = matches >= 0, matches == self.proposal_matcher.BETWEEN_THRESHOLDS
        per_page = foreground.sum(1).clamp(min=1)
        matched = matches.clamp(min=0)

        logits = head_outputs["cls_logits"]
        classes = torch.gather(labels, 1, matched)
        class_ids = torch.arange(logits.shape[-1], dtype=classes.dtype, device=classes.device)
        wanted = ((classes[..., None] == class_ids) & foreground[..., None]).to(logits.dtype)
        focal = sigmoid_focal_loss(logits, wanted, reduction="none").masked_fill(ignored[..., None], 0)
        classification = (focal.sum((1, 2)) / per_page).sum() / batch

        matched_boxes = torch.gather(boxes, 1, matched[..., None].expand(-1, -1, 4))
        matched_boxes = torch.where(foreground[..., None], matched_boxes, grid)  # encodes to 0 where unused
        coder = self.head.regression_head.box_coder
        wanted_deltas = coder.encode_single(matched_boxes.reshape(-1, 4), grid.repeat(batch, 1)).reshape(batch, -1, 4)
        error = (head_outputs["bbox_regression"] - wanted_deltas).abs().masked_fill(~foreground[..., None], 0)
        regression = (error.sum((1, 2)) / per_page).sum() / batch
        return {"classification": classification, "bbox_regression": regression}

    def _match(self, boxes: torch.Tensor, present: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """torchvision's ``Matcher`` for a padded batch: ``(B, A)`` box index, -1 background, -2 ignored."""
        matcher = self.proposal_matcher
        quality = box_iou(boxes.reshape(-1, 4), anchors).reshape(boxes.shape[0], boxes.shape[1], -1)
        quality = quality.masked_fill(~present[..., None], -1.0)  # padding never matches
        best, matches = quality.max(1)
        candidates = matches.clone()
        matches = matches.masked_fill(best < matcher.low_threshold, matcher.BELOW_LOW_THRESHOLD)
        between = (best >= matcher.low_threshold) & (best < matcher.high_threshold)
        matches = matches.masked_fill(between, matcher.BETWEEN_THRESHOLDS)
        if matcher.allow_low_quality_matches:  # each box keeps its best anchors, however poor
            highest = quality.max(2, keepdim=True).values
            keep = ((quality == highest) & present[..., None]).any(1)
            matches = torch.where(keep, candidates, matches)
        return matches


def _retinanet(backbone: nn.Module, in_channels: list[int], fpn_channels: int, image_size: int, **kwargs: Any) -> RetinaNet:
    # signatures rarely overlap one another: a tighter NMS than torchvision's 0.5 drops the near-duplicate
    # boxes of one signature (a higher AP@0.5 at 0.3 than at 0.5 on the shipped checkpoint's real training pages)
    kwargs.setdefault("nms_thresh", 0.3)
    body = BackboneWithFPN(
        backbone,
        return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=in_channels,
        out_channels=fpn_channels,
        extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels),
    )
    anchors = signature_anchors()
    head = RetinaNetHead(fpn_channels, anchors.num_anchors_per_location()[0], NUM_CLASSES, norm_layer=partial(nn.GroupNorm, 16))
    return SignatureRetinaNet(
        body,
        NUM_CLASSES,
        min_size=image_size,
        max_size=image_size,
        anchor_generator=anchors,
        head=head,
        # (x - 1) / -1 = 1 - x: the network sees ink darkness on a zero background, the polarity of
        # the extractor's canvases, so an extractor backbone can initialise it (see load_extractor_backbone)
        image_mean=[1.0, 1.0, 1.0],
        image_std=[-1.0, -1.0, -1.0],
        **kwargs,
    )


@_register
def retinanet_resnet50_fpn(image_size: int = 640, **kwargs: Any) -> RetinaNet:
    """RetinaNet ResNet-50 FPN (256-channel head), as in the original SignVer's Gaudi training."""
    return _retinanet(resnet50(weights=None), [512, 1024, 2048], 256, image_size, **kwargs)


@_register
def retinanet_lite(image_size: int = 640, fpn_channels: int = 96, **kwargs: Any) -> RetinaNet:
    """RetinaNet ResNet-18 FPN with a narrow head, light enough to read pages on a CPU."""
    return _retinanet(resnet18(weights=None), [128, 256, 512], fpn_channels, image_size, **kwargs)


def build_detector(architecture: str = "retinanet_lite", **kwargs: Any) -> RetinaNet:
    """A detector by builder name (``retinanet_lite``, ``retinanet_resnet50_fpn``)."""
    if architecture not in DETECTOR_BUILDERS:
        raise ValueError(f"unknown detector {architecture!r} (choose from {', '.join(DETECTOR_BUILDERS)})")
    return DETECTOR_BUILDERS[architecture](**kwargs)


def load_extractor_backbone(detector: RetinaNet, extractor_state: dict[str, torch.Tensor]) -> int:
    """Initialise the detector's ResNet body from a ResNet extractor's weights (its 1-channel stem
    spread over RGB); returns how many tensors were copied. Raises ``ValueError`` when the two
    backbones differ (e.g. a ResNet-50 detector and a ResNet-18 extractor)."""
    body = detector.backbone.body
    own = body.state_dict()
    copied = {}
    for key, value in extractor_state.items():
        if not key.startswith("backbone."):
            continue
        name = key.removeprefix("backbone.")
        if name == "conv1.weight" and value.shape[1] == 1:
            value = value.repeat(1, 3, 1, 1) / 3
        if name in own:
            if own[name].shape != value.shape:
                raise ValueError(f"extractor tensor {name} has shape {tuple(value.shape)}, the detector's {tuple(own[name].shape)}")
            copied[name] = value.float()
    missing = [name for name in own if name not in copied]
    if missing:
        raise ValueError(f"the extractor has no weights for {len(missing)} detector backbone tensors (first: {missing[0]})")
    body.load_state_dict(copied)
    return len(copied)


@torch.no_grad()
def detect_with_host_postprocessing(detector: RetinaNet, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """``detector(images)`` in eval mode, with the dynamic-shape part (top-k, box decoding, NMS) on the CPU.

    The backbone, FPN and heads run on the images' device with the fixed shapes of letterboxed pages;
    only their outputs move to the host. On an HPU this keeps the compiled graph static; elsewhere the
    result equals ``detector(images)`` (tested on CPU).
    """
    original_sizes = [tuple(image.shape[-2:]) for image in images]
    batch, _ = detector.transform(images)
    features = list(detector.backbone(batch.tensors).values())
    head_outputs = {key: value.float().cpu() for key, value in detector.head(features).items()}
    anchors = [anchor.cpu() for anchor in detector.anchor_generator(batch, features)]
    per_level = [feature.shape[-2] * feature.shape[-1] for feature in features]
    per_location = head_outputs["cls_logits"].shape[1] // sum(per_level)
    per_level = [count * per_location for count in per_level]
    split_outputs = {key: list(value.split(per_level, dim=1)) for key, value in head_outputs.items()}
    split_anchors = [list(anchor.split(per_level)) for anchor in anchors]
    detections = detector.postprocess_detections(split_outputs, split_anchors, batch.image_sizes)
    return detector.transform.postprocess(detections, batch.image_sizes, original_sizes)


class RetinaNetGraph(nn.Module):
    """A RetinaNet as inference runs it (and ``signver export`` exports it): letterboxed ``(N, 3, S, S)``
    pages in ``[0, 1]`` to ``boxes`` ``(N, A, 4)``, every anchor's box decoded and clipped (xyxy, letterbox
    pixels), and ``scores`` ``(N, A, C)``, its class probabilities. What depends on the page's content
    (the top candidates per level, NMS) is :class:`DetectionSelection`, on the host."""

    def __init__(self, detector: RetinaNet) -> None:
        super().__init__()
        self.detector = detector
        self.levels: list[int] = []  # anchors per pyramid level, set by each forward

    def forward(self, pages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.detector
        batch = net.transform.normalize(pages)
        features = list(net.backbone(batch).values())
        head = net.head(features)
        size = (pages.shape[-2], pages.shape[-1])
        anchors = net.anchor_generator(ImageList(batch[:1], [size]), [feature[:1] for feature in features])[0]
        per_location = anchors.shape[0] // sum(feature.shape[-2] * feature.shape[-1] for feature in features)
        self.levels = [feature.shape[-2] * feature.shape[-1] * per_location for feature in features]
        deltas = head["bbox_regression"]
        boxes = net.box_coder.decode_single(deltas.reshape(-1, 4), anchors.repeat(pages.shape[0], 1))
        boxes = clip_boxes_to_image(boxes.reshape(deltas.shape), size)
        return boxes, torch.sigmoid(head["cls_logits"])

    def selection(self) -> "DetectionSelection":
        """The host-side selection matching this network (after a forward has set the levels)."""
        net = self.detector
        return DetectionSelection(tuple(self.levels), float(net.score_thresh), int(net.topk_candidates),
                                  float(net.nms_thresh), int(net.detections_per_img))


def detector_from_card(card: dict[str, Any]) -> RetinaNet:
    """The network a detector checkpoint card's ``architecture`` describes (weights not loaded)."""
    architecture = dict(card["architecture"])
    return build_detector(architecture.pop("architecture"), **architecture)
