"""What every model facade shares: its device, loading a checkpoint by name or path, its card and digest.

``Detector``, ``Cleaner`` and ``MetricExtractor`` subclass :class:`ModelFacade`, declare their
``module`` and build their network in :meth:`ModelFacade._build`; reading their own card fields is
:meth:`ModelFacade._configure`. Facades serve users only: evaluation and calibration live in each
module's ``evaluation.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from signver_torch.accelerators import inference_device, memory_format
from signver_torch.checkpoints import load_model, resolve_checkpoint
from signver_torch.errors import CheckpointError

Self = TypeVar("Self", bound="ModelFacade")


class ModelFacade:
    """A loaded checkpoint ready to predict: ``model`` in eval mode on ``device``, ``card``, ``weights``.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"hpu"``, ...; by default CUDA, else a Gaudi HPU, else the CPU.
        batch_size: how many inputs go through the network at once.
    """

    #: the checkpoint folder (``checkpoints/<module>/``) and registry name of the module
    module: ClassVar[str]
    default_batch_size: ClassVar[int] = 16

    def __init__(self, device: str | torch.device | None = None, batch_size: int | None = None) -> None:
        self.device = inference_device(device)
        self.batch_size = batch_size or self.default_batch_size
        self.model: torch.nn.Module | None = None
        self.card: dict[str, Any] = {}
        self.weights: Path | None = None

    @classmethod
    def from_pretrained(cls: type[Self], name_or_path: str | os.PathLike = "default", **kwargs: Any) -> Self:
        return cls(**kwargs).load(name_or_path)

    def load(self: Self, name_or_path: str | os.PathLike = "default") -> Self:
        """Load a shipped checkpoint by name (``"default"``) or a ``.safetensors`` path."""
        model, card = load_model(self.module, name_or_path, self._build)
        self._configure(card, name_or_path)  # refuses a card it cannot use before anything changes
        self.model = model.eval().to(self.device, memory_format=memory_format(self.device.type))
        self.card = card
        self.weights = resolve_checkpoint(self.module, name_or_path).weights
        return self

    def _build(self, card: dict[str, Any]) -> torch.nn.Module:
        """The network the card's ``architecture`` describes (weights are loaded after)."""
        raise NotImplementedError

    def _configure(self, card: dict[str, Any], name_or_path: str | os.PathLike) -> None:
        """Read the module's own card fields (raise :class:`CheckpointError` on a bad one)."""

    @property
    def loaded_model(self) -> torch.nn.Module:
        """The network, or a clear error before :meth:`load`."""
        if self.model is None:
            raise CheckpointError("no checkpoint loaded (call load() first)")
        return self.model

    @property
    def sha256(self) -> str:
        """The weights file's digest, as its card records it."""
        return str(self.card.get("sha256", ""))
