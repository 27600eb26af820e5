"""Training logic of the detector: RetinaNet's focal and box losses, COCO mAP on validation."""

from __future__ import annotations

from typing import Any

import lightning
import torch

from signver_torch.accelerators import prepare_modules
from signver_torch.checkpoints import load_checkpoint, load_model
from signver_torch.data.detection import CLASS_NAMES
from signver_torch.detector.model import build_detector, detect_with_host_postprocessing, detector_from_card, load_extractor_backbone
from signver_torch.errors import CheckpointError, SignVerError
from signver_torch.metrics import DetectionMetrics
from signver_torch.optim import adamw_one_cycle


class DetectorModule(lightning.LightningModule):
    """Trains a torchvision RetinaNet (``architecture`` from :mod:`signver_torch.detector.model`).

    Validation computes COCO mAP (:class:`~signver_torch.metrics.DetectionMetrics`) per validation
    set, e.g. ``val_real_map50`` on held-out real pages and ``val_synthetic_map50_date`` per class.
    ``init_backbone`` names an extractor checkpoint whose ResNet initialises the detector's backbone
    (its features already know strokes; nothing is downloaded). ``init`` names a detector checkpoint
    to start from (fine-tuning on new pages, possibly at another input size); its architecture must be
    this module's. Batches arrive letterboxed to ``image_size`` (static shapes); post-processing (NMS)
    runs inside torchvision's RetinaNet in evaluation only, on the host when training on HPU. ``compile``
    (``true`` or a backend name) compiles the backbone and heads, the parts with static shapes.
    """

    def __init__(
        self,
        architecture: str = "retinanet_lite",
        image_size: int = 640,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_fraction: float = 0.05,
        init_backbone: str | None = None,
        init: str | None = None,
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.architecture = {"architecture": architecture, "image_size": image_size}
        self.init_card: dict[str, Any] = {}
        self.model = build_detector(architecture, image_size=image_size)
        if init is not None:  # a whole detector to start from (init_backbone is then moot)
            started, self.init_card = load_model("detector", init, detector_from_card)
            # convolutions and anchors do not depend on the input size: a 448 px detector can start a 640 px one
            if self.init_card.get("architecture", {}).get("architecture") != architecture:
                raise CheckpointError(f"{init}: checkpoint is a {self.init_card.get('architecture')} detector, this recipe "
                                      f"trains a {architecture} one (set --model.architecture to match)")
            self.model.load_state_dict(started.state_dict())
        else:
            if init_backbone is not None:
                state, self.init_card = load_checkpoint("extractor", init_backbone)
                try:
                    load_extractor_backbone(self.model, state)
                except ValueError as error:
                    raise CheckpointError(f"{init_backbone}: cannot initialise a {architecture} backbone from it ({error})") from error
        self.val_metrics = torch.nn.ModuleList()

    def compiled_parts(self) -> list[torch.nn.Module]:
        """What ``compile: true`` compiles (in place; the state-dict keys stay)."""
        return [self.model.backbone, self.model.head]

    def configure_model(self) -> None:
        prepare_modules(self, self.compiled_parts(), self.hparams.compile, self.trainer.strategy.root_device.type)

    def setup(self, stage: str) -> None:
        data_size = getattr(getattr(self.trainer, "datamodule", None), "hparams", {}).get("image_size")
        if data_size is not None and data_size != self.hparams.image_size:
            raise SignVerError(
                f"the data module letterboxes pages to {data_size} px but the model expects {self.hparams.image_size} px "
                "(set --model.image_size and --data.image_size to the same value)"
            )

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return self.model(images)

    def training_loss(self, batch: tuple[Any, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """RetinaNet's classification + box losses of one batch, and what to log; needs no Trainer."""
        images, targets = batch
        if isinstance(images, torch.Tensor):  # one padded batch from PaddedTargets (--data.max_boxes): static shapes
            losses = self.model.padded_training_loss(images, targets["boxes"], targets["labels"], targets["present"])
        else:
            losses = self.model(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        loss = sum(losses.values())
        return loss, {"train_loss": loss, **{f"train_{k}": v for k, v in losses.items()}}

    def training_step(self, batch: tuple[Any, Any], batch_idx: int) -> torch.Tensor:
        loss, logged = self.training_loss(batch)
        self.log_dict(logged, prog_bar=True, batch_size=len(batch[0]))
        return loss

    def _metric(self, index: int) -> DetectionMetrics:
        while len(self.val_metrics) <= index:
            # every rank validates every page, so the metric computes without collectives (hccl has no CPU tensors)
            self.val_metrics.append(DetectionMetrics(CLASS_NAMES, sync_on_compute=False).to("cpu" if self.device.type == "hpu" else self.device))
        return self.val_metrics[index]

    def validation_step(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]], batch_idx: int, dataloader_idx: int = 0) -> None:
        images, targets = batch
        if self.device.type == "hpu":  # dynamic-shape post-processing on the host keeps the device graph static
            predictions = detect_with_host_postprocessing(self.model, images)
            targets = [{key: value.cpu() if isinstance(value, torch.Tensor) else value for key, value in t.items()} for t in targets]
        else:
            predictions = self.model(images)
        self._metric(dataloader_idx).update(predictions, targets)

    def on_validation_epoch_end(self) -> None:
        names = getattr(self.trainer.datamodule, "val_names", None) or [str(i) for i in range(len(self.val_metrics))]
        for name, metric in zip(names, self.val_metrics):
            result = metric.compute()
            metric.reset()
            self.log_dict({f"val_{name}_{key}": value for key, value in result.items()}, prog_bar=name == names[0],
                          add_dataloader_idx=False)

    def optimization(self, total_steps: int, epochs: int = 1) -> dict[str, Any]:
        """The optimiser and schedule for ``total_steps`` steps (the benchmark builds them without a Trainer)."""
        return adamw_one_cycle(self.parameters(), self.hparams.lr, self.hparams.weight_decay, total_steps,
                               self.hparams.warmup_fraction)

    def configure_optimizers(self) -> Any:
        return self.optimization(self.trainer.estimated_stepping_batches, self.trainer.max_epochs or 1)
