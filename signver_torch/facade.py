"""What every model facade shares: its device, loading a checkpoint by name or path, its card and digest.

``Detector``, ``Cleaner`` and ``MetricExtractor`` subclass :class:`ModelFacade`, declare their
``module`` and build their network in :meth:`ModelFacade._build`; reading their own card fields is
:meth:`ModelFacade._configure`. Facades serve users only: evaluation and calibration live in each
module's ``evaluation.py``.

Each facade predicts through ``network``, the part of inference that can be exported
(:meth:`ModelFacade.graph`): the torch module itself under ``backend="torch"``, or the exported graph
run by onnxruntime under ``backend="onnxruntime"`` (:mod:`signver_torch.runtime`); what comes before
and after it (loading, preprocessing, selection of detections) is the same code for both.
"""

from __future__ import annotations

import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, TypeVar

import numpy as np
import torch

from signver_torch.accelerators import inference_device, memory_format
from signver_torch.checkpoints import load_model, read_card, resolve_checkpoint
from signver_torch.errors import CheckpointError, SignVerError
from signver_torch.runtime import OnnxGraph, cache_folder, check_backend, export_files, is_export

Self = TypeVar("Self", bound="ModelFacade")


@dataclass
class ExportGraph:
    """What a facade exports: the torch module its ``network`` runs, an example input, the names of the
    input and outputs, the input's dimensions that vary (axis -> (name, the multiple it comes in)) and
    what the export card records about the graph and its host-side steps (``fields``)."""

    module: torch.nn.Module
    example: torch.Tensor
    input_name: str
    output_names: list[str]
    dynamic_axes: dict[int, tuple[str, int]]
    fields: dict[str, Any] = field(default_factory=dict)


class _OnnxNetwork:
    """An exported graph called like the torch module it came from: tensors in, a tensor or a tuple out."""

    def __init__(self, graph: OnnxGraph) -> None:
        self.graph = graph

    def __call__(self, batch: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outputs = [torch.from_numpy(np.asarray(output)) for output in self.graph(batch.detach().cpu().numpy())]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


class ModelFacade:
    """A loaded checkpoint ready to predict: ``model`` in eval mode on ``device``, ``card``, ``weights``.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"hpu"``, ...; by default CUDA, else a Gaudi HPU, else the CPU.
        batch_size: how many inputs go through the network at once.
        backend: ``"torch"`` (default), or ``"onnxruntime"`` (CPU only; the ``[onnx]`` extra) to run an
            exported graph: :meth:`load` then takes an export folder, or a checkpoint, exported once into
            the cache (:func:`~signver_torch.runtime.cache_folder`) with the accuracy check of ``signver export``.
    """

    #: the checkpoint folder (``checkpoints/<module>/``) and registry name of the module
    module: ClassVar[str]
    default_batch_size: ClassVar[int] = 16

    def __init__(self, device: str | torch.device | None = None, batch_size: int | None = None, backend: str = "torch") -> None:
        self.backend = check_backend(backend)
        if backend != "torch" and device not in (None, "cpu") and torch.device(device).type != "cpu":
            raise SignVerError(f"backend {backend!r} runs on the CPU; device {device!r} needs backend='torch'")
        self.device = inference_device(device) if backend == "torch" else torch.device("cpu")
        self.batch_size = batch_size or self.default_batch_size
        self.model: torch.nn.Module | None = None  # the torch network (backend "torch" only)
        self.network: Callable[..., Any] | None = None
        self.card: dict[str, Any] = {}
        self.export_card: dict[str, Any] = {}  # the export's card (backend "onnxruntime")
        self.weights: Path | None = None

    @classmethod
    def from_pretrained(cls: type[Self], name_or_path: str | os.PathLike = "default", **kwargs: Any) -> Self:
        return cls(**kwargs).load(name_or_path)

    def load(self: Self, name_or_path: str | os.PathLike = "default") -> Self:
        """Load a shipped checkpoint by name (``"default"``) or a ``.safetensors`` path; under the
        onnxruntime backend also an export folder (``signver export``)."""
        if self.backend != "torch":
            return self._load_export(name_or_path)
        model, card = load_model(self.module, name_or_path, self._build)
        self._configure(card, name_or_path)  # refuses a card it cannot use before anything changes
        self.model = model.eval().to(self.device, memory_format=memory_format(self.device.type))
        self.card = card
        self.weights = resolve_checkpoint(self.module, name_or_path).weights
        self.network = self._torch_network(self.model)
        return self

    def _load_export(self: Self, name_or_path: str | os.PathLike) -> Self:
        self.export_card = {}  # a new export: its card's fields are read afresh
        folder = Path(name_or_path)
        if not is_export(folder, self.module):
            checkpoint = resolve_checkpoint(self.module, name_or_path)
            folder = cache_folder(self.module, str(read_card(checkpoint.weights).get("sha256", "")))
            if not is_export(folder, self.module):
                from signver_torch.export import export_module  # torch.onnx, once per checkpoint

                export_module(self.module, checkpoint.weights, folder)
        graph = OnnxGraph(folder, self.module)
        card = graph.card["source"]["card"]
        self._configure(card, name_or_path)
        self.model, self.card, self.export_card = None, card, graph.card
        self.weights = export_files(folder, self.module)[0]
        self.network = self._exported_network(_OnnxNetwork(graph), graph.card)
        return self

    def _torch_network(self, model: torch.nn.Module) -> Callable[..., Any]:
        """What predicts under the torch backend: the module exported by :meth:`graph` (by default the model)."""
        return model

    def _exported_network(self, network: Callable[..., Any], export_card: dict[str, Any]) -> Callable[..., Any]:
        """What predicts under an exported backend: the graph, with what its card records (overridden where needed)."""
        return network

    def graph(self) -> ExportGraph:
        """The network :meth:`load` runs, as ``signver export`` exports it."""
        raise NotImplementedError

    def _build(self, card: dict[str, Any]) -> torch.nn.Module:
        """The network the card's ``architecture`` describes (weights are loaded after)."""
        raise NotImplementedError

    def _configure(self, card: dict[str, Any], name_or_path: str | os.PathLike) -> None:
        """Read the module's own card fields (raise :class:`CheckpointError` on a bad one)."""

    @property
    def loaded_model(self) -> torch.nn.Module:
        """The torch network, or a clear error before :meth:`load` (and under an exported backend)."""
        if self.model is None:
            if self.network is not None:
                raise SignVerError(f"the {self.module}'s torch network is not loaded under backend {self.backend!r}")
            raise CheckpointError("no checkpoint loaded (call load() first)")
        return self.model

    @property
    def loaded_network(self) -> Callable[..., Any]:
        """What predicts (torch module or exported graph), or a clear error before :meth:`load`."""
        if self.network is None:
            raise CheckpointError("no checkpoint loaded (call load() first)")
        return self.network

    @property
    def sha256(self) -> str:
        """The weights file's digest, as its card records it."""
        return str(self.card.get("sha256", ""))
