"""What every model facade shares: its device, loading a checkpoint by name or path, its card and digest.

``Detector``, ``Cleaner`` and ``MetricExtractor`` subclass :class:`ModelFacade`, declare their
``module`` and build their network in :meth:`ModelFacade._build`; reading their own card fields is
:meth:`ModelFacade._configure`. Facades serve users only: evaluation and calibration live in each
module's ``evaluation.py``.

Each facade predicts through ``network``, the part of inference that can be exported
(:meth:`ModelFacade.graph`): the torch module itself under ``backend="torch"``, or the exported graph
run by onnxruntime or OpenVINO under ``backend="onnxruntime"`` or ``"openvino"`` (:mod:`signver_torch.runtime`);
what comes before and after it (loading, preprocessing, selection of detections) is the same code for all.
``backend="auto"`` picks, at :meth:`ModelFacade.load`, the first backend of :func:`~signver_torch.runtime.auto_order`
that can run what is loaded without exporting anything (:meth:`ModelFacade._choose_backend`); off the CPU, torch.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence, TypeVar

import numpy as np
import torch

from signver_torch.accelerators import inference_device, memory_format
from signver_torch.cards import TORCH_FREE_FACADES
from signver_torch.checkpoints import load_model, resolve_checkpoint
from signver_torch.errors import CheckpointError, ExportError, SignVerError
from signver_torch.runtime import (EXPORT_SCHEMA, GRAPHS, ExportedGraph, check_backend, checkpoint_cache, choose_backend, export_format,
                                   exported_formats, is_export)

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
    #: an int8 export (``signver export --precision int8``): the operator types quantised (``None``: every type
    #: onnxruntime quantises) and the weight shapes of the convolutions kept in float
    quantized_ops: list[str] | None = None
    float_weights: list[tuple[int, ...]] = field(default_factory=list)


class _ExportedNetwork:
    """An exported graph called like the torch module it came from: tensors in, a tensor or a tuple out."""

    def __init__(self, graph: ExportedGraph) -> None:
        self.graph = graph

    def __call__(self, batch: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outputs = [torch.from_numpy(np.asarray(output)) for output in self.graph(batch.detach().cpu().numpy())]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


class ModelFacade:
    """A loaded checkpoint ready to predict: ``model`` in eval mode on ``device``, ``card``, ``weights``.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"hpu"``, ...; by default CUDA, else a Gaudi HPU, else the CPU.
        batch_size: how many inputs go through the network at once.
        backend: ``"torch"`` (default), or ``"onnxruntime"`` (the ``[onnx]`` extra) or ``"openvino"`` (the
            ``[openvino]`` extra), CPU only, to run an exported graph: :meth:`load` then takes an export folder, or
            a checkpoint, exported once into the cache (:func:`~signver_torch.runtime.cache_folder`) with the
            accuracy check of ``signver export``. ``"auto"``: the fastest measured backend that is installed and
            has an export of what :meth:`load` is given, else torch (:meth:`_choose_backend`); off the CPU, torch.
    """

    #: the checkpoint folder (``checkpoints/<module>/``) and registry name of the module
    module: ClassVar[str]
    default_batch_size: ClassVar[int] = 16
    #: how many inputs an int8 export draws from its calibration files (:meth:`calibration_inputs`)
    int8_calibration_count: ClassVar[int] = 0

    def __init__(self, device: str | torch.device | None = None, batch_size: int | None = None, backend: str = "torch") -> None:
        self.requested_backend = check_backend(backend)
        self.backend = backend  # "auto" becomes the backend chosen at load()
        if backend not in ("torch", "auto") and device not in (None, "cpu") and torch.device(device).type != "cpu":
            raise SignVerError(f"backend {backend!r} runs on the CPU; device {device!r} needs backend='torch'")
        # "auto" keeps the device asked for (torch off the CPU); an exported backend moves it to the CPU at load()
        self.device = inference_device(device) if backend in ("torch", "auto") else torch.device("cpu")
        self.batch_size = batch_size or self.default_batch_size
        self.model: torch.nn.Module | None = None  # the torch network (backend "torch" only)
        self.network: Callable[..., Any] | None = None
        self.card: dict[str, Any] = {}
        self.export_card: dict[str, Any] = {}  # the export's card (an exported backend)
        self._precision = "fp32"  # what the loaded network computes in
        self.weights: Path | None = None
        #: under an exported backend, the module's torch-free facade on the same graph (``cards.TORCH_FREE_FACADES``):
        #: the facade predicts through it, so an export's host steps are the numpy ones wherever it runs
        self.exported: Any = None

    @classmethod
    def from_pretrained(cls: type[Self], name_or_path: str | os.PathLike = "default", **kwargs: Any) -> Self:
        return cls(**kwargs).load(name_or_path)

    def load(self: Self, name_or_path: str | os.PathLike = "default") -> Self:
        """Load a shipped checkpoint by name (``"default"``) or a ``.safetensors`` path; under an exported
        backend (or ``"auto"``) also an export folder (``signver export``)."""
        given_export = bool(exported_formats(name_or_path, self.module))
        self.backend, folder = self._choose_backend(name_or_path)
        if self.backend != "torch":
            return self._load_export(name_or_path, folder, cached=not given_export)
        model, card = load_model(self.module, name_or_path, self._build)
        self._configure(card, name_or_path)  # refuses a card it cannot use before anything changes
        self.model = model.eval().to(self.device, memory_format=memory_format(self.device.type))
        self.card, self.export_card, self._precision, self.exported = card, {}, "fp32", None
        self.weights = resolve_checkpoint(self.module, name_or_path).weights
        self.network = self._torch_network(self.model)
        return self

    def _load_export(self: Self, name_or_path: str | os.PathLike, folder: Path | None, cached: bool) -> Self:
        """Run the graph of ``folder`` (an export folder given by the user), or of the checkpoint's cache folder
        (``cached``), exporting it there first when it is missing or broken."""
        self.export_card = {}  # a new export: its card's fields are read afresh
        if cached:
            graph = self._cached_graph(name_or_path, folder or self._cache_folder(name_or_path))
        else:
            graph = GRAPHS[self.backend](folder, self.module)
        card = graph.card["source"]["card"]
        self._configure(card, name_or_path)
        # the host steps of the export, in numpy (SignVer's exported path too); attaching reads the export card's own
        # fields (the detector's selection, the cleaner's multiple), so a broken one is refused before anything changes
        free = TORCH_FREE_FACADES.get(self.module)
        exported = (getattr(importlib.import_module(free[0]), free[1])(self.backend, self.batch_size, on_cpu=True)
                    .attach(self.backend, graph, name_or_path) if free else None)
        self.device = torch.device("cpu")
        self.model, self.card, self.export_card, self.exported = None, card, graph.card, exported
        self._precision = graph.executed_precision
        self.weights = graph.path
        self.network = _ExportedNetwork(graph)
        return self

    def _cached_graph(self, name_or_path: str | os.PathLike, folder: Path) -> ExportedGraph:
        """The cache's graph of a checkpoint in this backend's format, exported once: under a lock, since several
        processes (Ray actors, server workers) may ask at once, and again where a crash left it broken."""
        from filelock import FileLock  # installed with torch

        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(folder / ".lock"):
            older = None  # a graph of an older export schema: exported again, so the cache gains what this version
            if is_export(folder, self.module, export_format(self.backend)):  # checks (bf16); kept if that fails
                try:
                    older = GRAPHS[self.backend](folder, self.module)
                    if int(older.card["schema"]) == EXPORT_SCHEMA:
                        return older
                except ExportError:
                    pass  # files of two writes (a crash between them): the export below replaces them
            from signver_torch.export import export_module  # torch.onnx, once per checkpoint card and format

            try:
                export_module(self.module, resolve_checkpoint(self.module, name_or_path).weights, folder, export_format(self.backend))
            except ExportError:
                if older is None:
                    raise
                return older
            return GRAPHS[self.backend](folder, self.module)

    def _cache_folder(self, name_or_path: str | os.PathLike) -> Path:
        """Where the checkpoint ``name_or_path`` is exported once (:func:`~signver_torch.runtime.checkpoint_cache`)."""
        return checkpoint_cache(self.module, name_or_path)

    def _choose_backend(self, name_or_path: str | os.PathLike) -> tuple[str, Path | None]:
        """The backend :meth:`load` runs and the export folder it reads (:func:`~signver_torch.runtime.choose_backend`)."""
        return choose_backend(self.module, self.requested_backend, name_or_path, on_cpu=self.device.type == "cpu")

    def _torch_network(self, model: torch.nn.Module) -> Callable[..., Any]:
        """What predicts under the torch backend: the module exported by :meth:`graph` (by default the model)."""
        return model

    def graph(self) -> ExportGraph:
        """The network :meth:`load` runs, as ``signver export`` exports it."""
        raise NotImplementedError

    def calibration_inputs(self, files: Sequence[Path]) -> np.ndarray:
        """What :meth:`graph` receives for ``files``, as the host prepares it: an int8 export's calibration."""
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
    def precision(self) -> str:
        """What the loaded network computes in: fp32 under torch and onnxruntime; under OpenVINO, what its CPU plugin
        compiled the export card's precision into on this CPU (fp32 where the CPU has no bf16)."""
        return self._precision

    @property
    def sha256(self) -> str:
        """The weights file's digest, as its card records it."""
        return str(self.card.get("sha256", ""))
