"""LightningModule for the extractor: metric learning with pytorch-metric-learning, validation EER."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import asdict
from typing import Any, Union

import lightning
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from signver_torch.accelerators import prepare_modules
from signver_torch.checkpoints import load_model
from signver_torch.data.signatures import decode_labels
from signver_torch.errors import CheckpointError
from signver_torch.extractor.data import SignatureAugment
from signver_torch.extractor.model import EMBEDDING_DIM, build_extractor, extractor_from_card
from signver_torch.extractor.transforms import PreprocessConfig
from signver_torch.metrics import writer_protocol_metrics
from signver_torch.optim import adamw_one_cycle


#: Named loss configurations (pytorch-metric-learning classes and their arguments); a recipe may give
#: ``loss`` as one of these names or as its own ``{"class_path": ..., "init_args": {...}}``, and ``miner`` likewise.
COSINE = {"class_path": "pytorch_metric_learning.distances.CosineSimilarity"}
LOSS_PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
    "proxy_anchor": ({"class_path": "pytorch_metric_learning.losses.ProxyAnchorLoss", "init_args": {"margin": 0.1, "alpha": 32}}, None),
    "arcface": ({"class_path": "pytorch_metric_learning.losses.ArcFaceLoss", "init_args": {"margin": 28.6, "scale": 32}}, None),
    "multi_similarity": ({"class_path": "pytorch_metric_learning.losses.MultiSimilarityLoss",
                          "init_args": {"alpha": 2, "beta": 50, "base": 0.5}},
                         {"class_path": "pytorch_metric_learning.miners.MultiSimilarityMiner", "init_args": {"epsilon": 0.1}}),
    "triplet": ({"class_path": "pytorch_metric_learning.losses.TripletMarginLoss", "init_args": {"margin": 0.2, "distance": COSINE}},
                {"class_path": "pytorch_metric_learning.miners.TripletMarginMiner",
                 "init_args": {"margin": 0.2, "distance": COSINE, "type_of_triplets": "semihard"}}),
    "contrastive": ({"class_path": "pytorch_metric_learning.losses.ContrastiveLoss",
                     "init_args": {"pos_margin": 1.0, "neg_margin": 0.5, "distance": COSINE}},
                    {"class_path": "pytorch_metric_learning.miners.PairMarginMiner",
                     "init_args": {"pos_margin": 0.9, "neg_margin": 0.5, "distance": COSINE}}),
    "supcon": ({"class_path": "pytorch_metric_learning.losses.SupConLoss", "init_args": {"temperature": 0.1}}, None),
}
LossSpec = Union[str, dict[str, Any]]


def instantiate(spec: dict[str, Any], **injected: Any) -> Any:
    """``{"class_path": "package.module.Class", "init_args": {...}}`` → the object (nested specs too);
    ``injected`` arguments are passed where the class takes them (a proxy loss's ``num_classes``)."""
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"expected {{'class_path': ..., 'init_args': {{...}}}}, got {spec!r}")
    module_name, _, class_name = str(spec["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"cannot import {spec['class_path']!r} ({error})") from error
    arguments = {key: instantiate(value) if isinstance(value, dict) and "class_path" in value else value
                 for key, value in (spec.get("init_args") or {}).items()}
    accepted = inspect.signature(cls).parameters
    arguments.update({key: value for key, value in injected.items() if key in accepted and key not in arguments})
    return cls(**arguments)


def needs_classes(loss: LossSpec) -> bool:
    """Whether the loss holds per-class parameters (proxies), so it can only be built once the classes are known."""
    spec = LOSS_PRESETS[loss][0] if isinstance(loss, str) and loss in LOSS_PRESETS else loss
    if not isinstance(spec, dict) or "class_path" not in spec:
        return False
    module_name, _, class_name = str(spec["class_path"]).rpartition(".")
    try:
        return "num_classes" in inspect.signature(getattr(importlib.import_module(module_name), class_name)).parameters
    except (ImportError, AttributeError, ValueError):
        return False


def build_loss(loss: LossSpec, miner: LossSpec | None = None, num_classes: int = 0,
               embedding_dim: int = EMBEDDING_DIM) -> tuple[nn.Module, nn.Module | None]:
    """A pytorch-metric-learning loss and miner from a preset name or ``class_path``/``init_args`` specs.
    A preset brings its own miner unless ``miner`` is given; proxy losses need ``num_classes``."""
    if isinstance(loss, str):
        if loss not in LOSS_PRESETS:
            raise ValueError(f"unknown loss {loss!r}: choose {', '.join(LOSS_PRESETS)}, or give class_path and init_args")
        loss_spec, preset_miner = LOSS_PRESETS[loss]
    else:
        loss_spec, preset_miner = loss, None
    if needs_classes(loss_spec) and num_classes < 2:
        raise ValueError(f"loss {loss_spec['class_path']} needs the number of classes")
    miner_spec = preset_miner if miner is None else LOSS_PRESETS[miner][1] if isinstance(miner, str) else miner
    built_loss = instantiate(loss_spec, num_classes=num_classes, embedding_size=embedding_dim)
    return built_loss, None if miner_spec is None else instantiate(miner_spec)


def frozen_modules(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """Freeze the submodules ``names`` of ``model`` (no gradients); returns them, to be kept in eval mode."""
    modules = dict(model.named_modules())
    unknown = [name for name in names if name not in modules or not name]
    if unknown:
        tops = ", ".join(name for name, _ in model.named_children())
        raise ValueError(f"freeze: no submodule {', '.join(map(repr, unknown))} in the network (its parts: {tops}; "
                         f"deeper names like 'backbone.layer1' as in named_modules())")
    for name in names:
        modules[name].requires_grad_(False)
    return [modules[name] for name in names]


class ExtractorModule(lightning.LightningModule):
    """Trains a :class:`~signver_torch.extractor.model.SignatureEmbedder` so a writer's genuine
    signatures cluster and the skilled forgeries of them (a class of their own) stay apart.

    Validation reports the writer-independent protocol of docs/design.md on the validation writers; the
    EER threshold is kept as the calibrated decision threshold (``val_threshold``).

    Args:
        backbone: ``"signet"`` or a timm model name; ``None`` takes the ``init`` checkpoint's (or
            ``resnet18`` when training from scratch).
        loss: a preset of :data:`LOSS_PRESETS` (``proxy_anchor``, the shipped recipe; ``arcface``,
            ``multi_similarity``, ``triplet`` (semi-hard), ``contrastive``, ``supcon``) or any
            pytorch-metric-learning loss as ``{"class_path": ..., "init_args": {...}}``.
        miner: ``None`` (the preset's), a preset name whose miner to use, or a ``class_path`` spec.
        init: a checkpoint name or path to start from (fine-tuning), or ``None`` for random weights.
        ema_decay: keep an exponential moving average of the weights (e.g. 0.999) and validate and
            export it instead of the last step's weights; steadies the noisy late epochs. 0 disables.
        freeze: submodules of the network kept as they are (e.g. ``["backbone.conv1", "backbone.bn1",
            "backbone.layer1", "backbone.layer2"]``): their weights get no gradient and their batch-norm
            statistics stay, so fine-tuning on few writers adapts the later layers without unlearning
            the early ones. Names are those of ``model.named_modules()``.
        robust_ink: augment stroke width both ways and ink tone (:class:`SignatureAugment`), so ink
            darkness and pen width weigh less in the verdict.
        compile: ``true`` wraps the network in ``torch.compile`` with the device's backend (``hpu_backend``
            on HPU, inductor elsewhere), a backend name picks one, ``false`` (default) runs eagerly.
    """

    def __init__(
        self,
        backbone: str | None = None,
        embedding_dim: int = EMBEDDING_DIM,
        loss: LossSpec = "proxy_anchor",
        miner: LossSpec | None = None,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        warmup_epochs: int = 2,
        augment: bool = True,
        init: str | None = None,
        ema_decay: float = 0.0,
        freeze: list[str] | None = None,
        compile: bool | str = False,
        robust_ink: bool = False,
    ) -> None:
        super().__init__()
        self.init_card: dict[str, Any] = {}
        if init is not None:
            initial, self.init_card = load_model("extractor", init, extractor_from_card)
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
        self.frozen = frozen_modules(self.model, freeze or [])
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            if ema_decay > 0
            else None
        )
        # proxy losses are sized by the training classes, known once the datamodule is set up
        self.loss_fn, self.miner = (None, None) if needs_classes(loss) else build_loss(loss, miner)
        self.augment = SignatureAugment(robust_ink=robust_ink) if augment else nn.Identity()
        self._val_embeddings: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    def compiled_parts(self) -> list[torch.nn.Module]:
        """What ``compile: true`` compiles (in place; the state-dict keys stay)."""
        return [self.model]

    def configure_model(self) -> None:
        prepare_modules(self, self.compiled_parts(), self.hparams.compile, self.trainer.strategy.root_device.type)

    def setup(self, stage: str) -> None:
        expected = self.init_card.get("preprocessing")
        actual = getattr(getattr(self.trainer.datamodule, "preprocessor", None), "config", lambda: None)()
        if expected and actual:
            try:
                expected = asdict(PreprocessConfig.from_card(expected))
            except (TypeError, ValueError) as error:
                raise CheckpointError(f"{self.hparams.init}: the card's preprocessing is not readable ({error})") from error
            if expected != actual:
                raise CheckpointError(
                    f"{self.hparams.init}: fine-tuning must keep the checkpoint's preprocessing {expected}, but the data "
                    f"module uses {actual} (set --data.height/--data.width/--data.otsu_sample to match)"
                )
        if self.loss_fn is None:
            num_classes = getattr(self.trainer.datamodule, "num_classes", 0)
            self.configure_loss(num_classes)

    def configure_loss(self, num_classes: int) -> None:
        """Build a proxy loss for ``num_classes`` training classes (setup does it from the data module)."""
        self.loss_fn, self.miner = build_loss(self.hparams.loss, self.hparams.miner, num_classes, self.architecture["embedding_dim"])

    @property
    def export_model(self) -> nn.Module:
        """The network to validate and ship: the weight average when ``ema_decay`` is set."""
        return self.ema.module if self.ema is not None else self.model

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        return self.model(canvas)

    def train(self, mode: bool = True) -> "ExtractorModule":
        super().train(mode)
        for module in self.frozen:  # frozen batch norms keep their running statistics
            module.eval()
        return self

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        canvas, labels = batch
        return (canvas.float() / 255.0 if canvas.dtype == torch.uint8 else canvas), labels

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one batch on the device (augmented, mined) and what to log; needs no Trainer."""
        canvas, labels = batch
        # the loss in float32: pytorch-metric-learning casts its proxies to the embeddings' dtype, and
        # under bf16 autocast that would train them in bf16 and break resuming (optimizer state in float32)
        embeddings = self(self.augment(canvas)).float()
        pairs = self.miner(embeddings, labels) if self.miner is not None else None
        loss = self.loss_fn(embeddings, labels, pairs)
        return loss, {"train_loss": loss}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, logged = self.training_loss(batch)
        self.log_dict(logged, prog_bar=True, batch_size=len(batch[1]))
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
        report = writer_protocol_metrics(embeddings, *decode_labels(labels))
        self.log_dict(
            {
                "val_eer": report["eer"],
                "val_auc": report["auc"],
                "val_threshold": report["threshold_at_eer"],
                "val_eer_random": report["eer_random"],
            },
            prog_bar=True,
        )

    def optimization(self, total_steps: int, epochs: int = 1) -> dict[str, Any]:
        """The optimiser and schedule for ``total_steps`` steps over ``epochs`` (the benchmark builds them
        without a Trainer); warm-up lasts ``warmup_epochs``, at most 30% of the run."""
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        proxies = list(self.loss_fn.parameters()) if self.loss_fn is not None else []
        if proxies:  # class proxies start random and must move faster than the network (PML's advice)
            groups.append({"params": proxies, "lr": self.hparams.lr * 10, "weight_decay": 0.0})
        total = max(1, int(total_steps))
        steps_per_epoch = max(1, total // max(1, epochs))
        return adamw_one_cycle(groups, self.hparams.lr, self.hparams.weight_decay, total,
                               min(0.3, self.hparams.warmup_epochs * steps_per_epoch / total))

    def configure_optimizers(self) -> Any:
        return self.optimization(self.trainer.estimated_stepping_batches, self.trainer.max_epochs or 1)
