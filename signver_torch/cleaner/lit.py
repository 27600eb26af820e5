"""Training logic of the cleaner: ink segmentation losses, image-quality validation."""

from __future__ import annotations

from typing import Any

import lightning
import torch
import torch.nn.functional as F

from signver_torch.accelerators import prepare_modules
from signver_torch.cleaner.model import CLEANER_VARIANTS, build_cleaner
from signver_torch.metrics import cleaning_metrics
from signver_torch.optim import adamw_one_cycle


def soft_dice_loss(probability: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 − Dice overlap of soft ink maps, per page then averaged: it weighs the few ink pixels as much
    as the many paper pixels, which plain MSE or BCE would let a blank output neglect."""
    dims = tuple(range(1, probability.ndim))
    overlap = (probability * target).sum(dims)
    total = probability.sum(dims) + target.sum(dims)
    return (1 - (2 * overlap + eps) / (total + eps)).mean()


class CleanerModule(lightning.LightningModule):
    """Trains a :class:`~signver_torch.cleaner.model.UNet` to predict the ink darkness of a dirty crop.

    Loss: binary cross-entropy on the (soft) ink darkness, plus ``dice_weight`` × soft Dice on ink
    (finds thin strokes, but pushes soft edges to black or white), plus ``mse_weight`` × the squared
    error of the cleaned page (the grey level of those edges, which PSNR scores). Validation logs
    PSNR, SSIM and ink F1 of the cleaned pages (``1 − sigmoid(logits)``).

    Args:
        variant: ``unet_slim`` (CPU, shipped) or ``unet_wide`` (GPU/HPU recipes).
        channels, depth: override the variant's first-level channels and number of poolings.
        compile: ``true`` wraps the network in ``torch.compile`` with the device's backend (``hpu_backend``
            on HPU, inductor elsewhere), a backend name picks one, ``false`` (default) runs eagerly.
    """

    def __init__(
        self,
        variant: str = "unet_slim",
        channels: int | None = None,
        depth: int | None = None,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        dice_weight: float = 1.0,
        mse_weight: float = 0.0,
        warmup_fraction: float = 0.05,
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        overrides = {key: value for key, value in (("channels", channels), ("depth", depth)) if value is not None}
        self.model = build_cleaner(variant, **overrides)
        self.architecture = {"variant": variant, **CLEANER_VARIANTS[variant], **overrides}

    def compiled_parts(self) -> list[torch.nn.Module]:
        """What ``compile: true`` compiles (in place; the state-dict keys stay)."""
        return [self.model]

    def configure_model(self) -> None:
        prepare_modules(self, self.compiled_parts(), self.hparams.compile, self.trainer.strategy.root_device.type)

    def forward(self, page: torch.Tensor) -> torch.Tensor:
        return self.model(page)

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """BCE + weighted Dice + weighted squared error of one batch, and what to log; needs no Trainer."""
        dirty, clean = batch
        logits = self(dirty).float()
        ink = 1.0 - clean
        probability = torch.sigmoid(logits)
        bce = F.binary_cross_entropy_with_logits(logits, ink)
        dice = soft_dice_loss(probability, ink)
        mse = F.mse_loss(probability, ink)
        loss = bce + self.hparams.dice_weight * dice + self.hparams.mse_weight * mse
        return loss, {"train_loss": loss, "train_dice": dice, "train_mse": mse}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, logged = self.training_loss(batch)
        self.log_dict(logged, prog_bar=True, batch_size=len(batch[0]))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        dirty, clean = batch
        cleaned = 1.0 - torch.sigmoid(self(dirty).float())
        metrics = cleaning_metrics(cleaned, clean)
        self.log_dict({f"val_{name}": value.mean() for name, value in metrics.items()}, prog_bar=True, batch_size=len(dirty))

    def optimization(self, total_steps: int, epochs: int = 1) -> dict[str, Any]:
        """The optimiser and schedule for ``total_steps`` steps (the benchmark builds them without a Trainer)."""
        return adamw_one_cycle(self.parameters(), self.hparams.lr, self.hparams.weight_decay, total_steps,
                               self.hparams.warmup_fraction)

    def configure_optimizers(self) -> Any:
        return self.optimization(self.trainer.estimated_stepping_batches, self.trainer.max_epochs or 1)
