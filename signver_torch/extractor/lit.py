"""LightningModule for the extractor: metric learning with pytorch-metric-learning, validation EER."""

from __future__ import annotations

from typing import Any

import kornia.augmentation as K
import lightning
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from signver_torch.accelerators import compile_modules
from signver_torch.errors import CheckpointError
from signver_torch.extractor.api import load_embedder
from signver_torch.extractor.model import EMBEDDING_DIM, build_extractor
from signver_torch.metrics import writer_protocol_metrics


#: Losses that hold one learnable proxy per class (their size depends on the training writers).
PROXY_LOSSES = ("proxy_anchor", "arcface")


def build_loss(name: str, num_classes: int = 0, embedding_dim: int = EMBEDDING_DIM) -> tuple[nn.Module, nn.Module | None]:
    """A PML loss on cosine similarity and the miner that suits it (proxy losses need ``num_classes``)."""
    cosine = distances.CosineSimilarity()
    if name in PROXY_LOSSES and num_classes < 2:
        raise ValueError(f"loss {name!r} needs the number of classes")
    if name == "proxy_anchor":
        return losses.ProxyAnchorLoss(num_classes, embedding_dim, margin=0.1, alpha=32), None
    if name == "arcface":
        return losses.ArcFaceLoss(num_classes, embedding_dim, margin=28.6, scale=32), None
    if name == "multi_similarity":
        return losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5), miners.MultiSimilarityMiner(epsilon=0.1)
    if name == "triplet":
        return (
            losses.TripletMarginLoss(margin=0.2, distance=cosine),
            miners.TripletMarginMiner(margin=0.2, distance=cosine, type_of_triplets="semihard"),
        )
    if name == "contrastive":
        return losses.ContrastiveLoss(pos_margin=1.0, neg_margin=0.5, distance=cosine), miners.PairMarginMiner(
            pos_margin=0.9, neg_margin=0.5, distance=cosine
        )
    if name == "supcon":
        return losses.SupConLoss(temperature=0.1), None
    raise ValueError(
        f"unknown loss {name!r}: choose multi_similarity, triplet, contrastive, supcon, proxy_anchor or arcface"
    )


class StrokeWidthJitter(nn.Module):
    """Thicken strokes of a random half of the batch by blending in a 3x3 max-pool (pen width varies)."""

    def __init__(self, p: float = 0.5, max_strength: float = 0.8) -> None:
        super().__init__()
        self.p, self.max_strength = p, max_strength

    def forward(self, ink: torch.Tensor) -> torch.Tensor:
        n = ink.shape[0]
        strength = torch.rand(n, 1, 1, 1, device=ink.device) * self.max_strength
        strength = strength * (torch.rand(n, 1, 1, 1, device=ink.device) < self.p)
        thick = F.max_pool2d(ink, 3, stride=1, padding=1)
        return torch.maximum(ink, strength * thick)


class SignatureAugment(nn.Module):
    """Batched, on-device augmentation of ink canvases: affine, elastic, stroke width, ink intensity."""

    def __init__(self, degrees: float = 5.0, translate: float = 0.05, shear: float = 6.0, elastic_p: float = 0.3) -> None:
        super().__init__()
        self.geometry = K.AugmentationSequential(
            K.RandomAffine(degrees=degrees, translate=(translate, translate), scale=(0.85, 1.1), shear=(-shear, shear), p=0.9),
            K.RandomElasticTransform(kernel_size=(31, 31), sigma=(8.0, 8.0), alpha=(0.4, 0.4), p=elastic_p),
        )
        self.stroke = StrokeWidthJitter()

    def forward(self, ink: torch.Tensor) -> torch.Tensor:
        ink = self.stroke(self.geometry(ink))
        gain = torch.empty(ink.shape[0], 1, 1, 1, device=ink.device).uniform_(0.75, 1.15)
        return (ink * gain).clamp(0, 1)


class ExtractorModule(lightning.LightningModule):
    """Trains a :class:`~signver_torch.extractor.model.SignatureEmbedder` so a writer's genuine
    signatures cluster and the skilled forgeries of them (a class of their own) stay apart.

    Validation reports the writer-independent protocol of docs/design.md on the validation writers; the
    EER threshold is kept as the calibrated decision threshold (``val_threshold``).

    Args:
        backbone: ``"signet"`` or a timm model name; ``None`` takes the ``init`` checkpoint's (or
            ``resnet18`` when training from scratch).
        loss: ``proxy_anchor`` (the shipped recipe), ``arcface``, ``multi_similarity``, ``triplet``
            (semi-hard), ``contrastive`` or ``supcon``; all from pytorch-metric-learning on cosine similarity.
        init: a checkpoint name or path to start from (fine-tuning), or ``None`` for random weights.
        ema_decay: keep an exponential moving average of the weights (e.g. 0.999) and validate and
            export it instead of the last step's weights; steadies the noisy late epochs. 0 disables.
        compile: ``true`` wraps the network in ``torch.compile`` with the device's backend (``hpu_backend``
            on HPU, inductor elsewhere), a backend name picks one, ``false`` (default) runs eagerly.
    """

    def __init__(
        self,
        backbone: str | None = None,
        embedding_dim: int = EMBEDDING_DIM,
        loss: str = "proxy_anchor",
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        warmup_epochs: int = 2,
        augment: bool = True,
        init: str | None = None,
        ema_decay: float = 0.0,
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        self.init_card: dict[str, Any] = {}
        if init is not None:
            initial, self.init_card = load_embedder(init)
            architecture = self.init_card["architecture"]
            if backbone is not None and backbone != architecture["backbone"]:
                raise CheckpointError(f"{init}: checkpoint uses backbone {architecture['backbone']!r}, not {backbone!r}")
            backbone, embedding_dim = architecture["backbone"], architecture["embedding_dim"]
        backbone = backbone or "resnet18"
        # the resolved architecture (LightningCLI stores hparams as configured, where backbone may be None)
        self.architecture = {"backbone": backbone, "embedding_dim": embedding_dim}
        if self.init_card.get("architecture", {}).get("normalize_features"):
            self.architecture["normalize_features"] = True  # a calibrated checkpoint's head reads normalised features
        self.save_hyperparameters()
        self.model = initial if init is not None else build_extractor(backbone, embedding_dim)
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            if ema_decay > 0
            else None
        )
        # proxy losses are sized by the training classes, known once the datamodule is set up
        self.loss_fn, self.miner = (None, None) if loss in PROXY_LOSSES else build_loss(loss)
        self.augment = SignatureAugment() if augment else nn.Identity()
        self._val_embeddings: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    def configure_model(self) -> None:
        compile_modules([self.model], self.hparams.compile, self.trainer.strategy.root_device.type)

    def setup(self, stage: str) -> None:
        expected = self.init_card.get("preprocessing")
        actual = getattr(getattr(self.trainer.datamodule, "preprocessor", None), "config", lambda: None)()
        if expected and actual and expected != actual:
            raise CheckpointError(
                f"{self.hparams.init}: fine-tuning must keep the checkpoint's preprocessing {expected}, "
                f"but the data module uses {actual} (set --data.height/--data.width to match)"
            )
        if self.loss_fn is None:
            num_classes = getattr(self.trainer.datamodule, "num_classes", 0)
            self.loss_fn, self.miner = build_loss(self.hparams.loss, num_classes, self.architecture["embedding_dim"])

    @property
    def export_model(self) -> nn.Module:
        """The network to validate and ship: the weight average when ``ema_decay`` is set."""
        return self.ema.module if self.ema is not None else self.model

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        return self.model(canvas)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        canvas, labels = batch
        canvas = canvas.float() / 255.0 if canvas.dtype == torch.uint8 else canvas
        if self.trainer.training:
            canvas = self.augment(canvas)
        return canvas, labels

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        canvas, labels = batch
        embeddings = self(canvas)
        pairs = self.miner(embeddings, labels) if self.miner is not None else None
        loss = self.loss_fn(embeddings, labels, pairs)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        canvas, labels = batch
        self._val_embeddings.append(self.export_model(canvas).float().cpu())
        self._val_labels.append(labels.cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_embeddings:
            return
        embeddings, labels = torch.cat(self._val_embeddings), torch.cat(self._val_labels)
        self._val_embeddings.clear()
        self._val_labels.clear()
        report = writer_protocol_metrics(embeddings, labels // 2, labels % 2 == 1)
        self.log_dict(
            {
                "val_eer": report["eer"],
                "val_auc": report["auc"],
                "val_threshold": report["threshold_at_eer"],
                "val_eer_random": report["eer_random"],
            },
            prog_bar=True,
        )

    def configure_optimizers(self) -> Any:
        groups = [{"params": self.model.parameters()}]
        proxies = list(self.loss_fn.parameters()) if self.loss_fn is not None else []
        if proxies:  # class proxies start random and must move faster than the network (PML's advice)
            groups.append({"params": proxies, "lr": self.hparams.lr * 10, "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(1, self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total,
            pct_start=min(0.3, self.hparams.warmup_epochs * steps_per_epoch / total),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
