"""Inference backends behind the facades' ``backend=`` argument: torch, or an exported graph run by onnxruntime or OpenVINO.

An export (``signver export``, :mod:`signver_torch.export`) is a folder holding, per module and format,
the graph (``<module>.onnx``; or OpenVINO's ``<module>.xml`` and ``<module>.bin``) and its export card
(``<module>.json``; ``<module>.openvino.json``): the graph's sha256, opset, inputs and outputs, the source
checkpoint's sha256 and card, the command and the accuracy check it passed (the extractor's background
bank travels beside them). This file reads exports and runs them; it imports neither torch nor a runtime
at import time, so a missing runtime is one clear error, not a crash.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TypeVar

import numpy as np

from signver_torch.cards import sha256_file
from signver_torch.errors import BackendUnavailableError, ExportError, SignVerError

Self = TypeVar("Self", bound="ExportedFacade")

#: The inference backends and the extra that installs each one's runtime (None: always there).
BACKENDS: dict[str, str | None] = {"torch": None, "onnxruntime": "onnx", "openvino": "openvino"}
#: ``backend="auto"``'s order: the backends of the newest ``benchmarks/results/*-cpu-inference.json``, fastest
#: page end to end (p50) first, measured on every core as the commands run by default (now
#: ``20261207T1600-cpu-inference.json``, OpenVINO in bf16, onnxruntime since its threads stopped spinning; a test holds the two together); backends it did not
#: measure follow.
MEASURED_ORDER = ("openvino", "onnxruntime", "torch")
#: The opset graphs are written in by default (onnxruntime 1.17 and later run it).
OPSET = 18
#: Bumped when the export folder's layout or its card's fields change (2: ``precision``, the one an exported graph runs in).
EXPORT_SCHEMA = 2
#: The precisions an exported graph may run in, per format: onnxruntime runs the fp32 graph, or the extractor's graph
#: quantised to int8 by onnxruntime (static, QDQ; ``signver export --precision int8`` with calibration signatures);
#: OpenVINO's CPU plugin also runs the fp32 graph in bf16 (on CPUs with AVX512-BF16 or AMX; elsewhere it runs fp32).
PRECISIONS: dict[str, tuple[str, ...]] = {"onnx": ("fp32", "int8"), "openvino": ("fp32", "bf16")}
#: Precisions given only by name, never chosen by ``"auto"``: they need calibration data and change the embeddings
#: beyond the fp32 check's tolerance (docs/extractor.md has their EER).
NAMED_ONLY_PRECISIONS = ("int8",)


@dataclass(frozen=True)
class ExportFormat:
    """A format ``signver export`` writes: the backend that runs it, its graph's suffix, its files beside the
    graph (suffixes) and its card's suffix, so that every format of a module can share one folder."""

    backend: str
    suffix: str
    companions: tuple[str, ...]
    card_suffix: str


FORMATS = {"onnx": ExportFormat("onnxruntime", ".onnx", (), ".json"),
           "openvino": ExportFormat("openvino", ".xml", (".bin",), ".openvino.json")}


def auto_order() -> list[str]:
    """The order ``backend="auto"`` tries the backends in (:data:`MEASURED_ORDER`, then the unmeasured)."""
    return [*MEASURED_ORDER, *(backend for backend in BACKENDS if backend not in MEASURED_ORDER)]


def export_format(backend: str) -> str:
    """The export format ``backend`` runs."""
    return next(name for name, fmt in FORMATS.items() if fmt.backend == backend)


def check_backend(backend: str) -> str:
    """``backend`` if it is ``"auto"`` or one of :data:`BACKENDS` whose runtime imports; else a one-line error."""
    if backend != "auto" and backend not in BACKENDS:
        raise SignVerError(f"unknown backend {backend!r} (choose from auto, {', '.join(BACKENDS)})")
    if BACKENDS.get(backend):
        import_runtime(backend)
    return backend


def import_runtime(backend: str) -> Any:
    """The runtime module of an exported ``backend``, or :class:`BackendUnavailableError` naming its extra."""
    try:
        return importlib.import_module(backend)
    except ImportError as error:
        raise BackendUnavailableError(
            f"backend {backend!r} is not installed ({error}): pip install 'signver-torch[{BACKENDS[backend]}]'"
        ) from error
    except Exception as error:  # noqa: BLE001 (a broken install raises its own errors: auto skips it, others name it)
        raise BackendUnavailableError(
            f"backend {backend!r} fails to import ({type(error).__name__}: {error}): reinstall 'signver-torch[{BACKENDS[backend]}]'"
        ) from error


def installed(backend: str) -> bool:
    """Whether ``backend``'s runtime imports (torch always does)."""
    try:
        check_backend(backend)
    except BackendUnavailableError:
        return False
    return True


def export_files(folder: str | os.PathLike, module: str, fmt: str = "onnx") -> tuple[Path, Path]:
    """The graph and card paths of ``module`` in an export folder (``folder`` may also name the graph file)."""
    path, spec = Path(folder), FORMATS[fmt]
    if path.suffix in {f.suffix for f in FORMATS.values()}:
        path = path.parent
    return path / f"{module}{spec.suffix}", path / f"{module}{spec.card_suffix}"


def companion_files(graph: Path, fmt: str) -> list[Path]:
    """The files that travel beside ``graph`` in ``fmt`` (OpenVINO's weights)."""
    return [graph.with_suffix(suffix) for suffix in FORMATS[fmt].companions]


def is_export(name_or_path: str | os.PathLike, module: str, fmt: str = "onnx") -> bool:
    """Whether ``name_or_path`` is an export folder (or graph file) holding ``module`` in ``fmt``."""
    graph, card = export_files(name_or_path, module, fmt)
    return graph.is_file() and card.is_file()


def exported_formats(name_or_path: str | os.PathLike, module: str) -> list[str]:
    """The formats of ``module`` that ``name_or_path`` holds (none: it is not an export)."""
    path = Path(name_or_path)
    named = [fmt for fmt, spec in FORMATS.items() if path.suffix == spec.suffix]  # a graph file names its format
    return [fmt for fmt in named or FORMATS if is_export(path, module, fmt)]


def cache_folder(module: str, digest: str) -> Path:
    """Where a checkpoint asked for by name under an exported backend is exported once and kept, every format
    side by side (``$SIGNVER_CACHE``, else ``~/.cache/signver-torch``), keyed by ``digest``: the sha256 of the
    checkpoint's whole card, which names the weights' sha256."""
    root = Path(os.environ.get("SIGNVER_CACHE") or Path.home() / ".cache" / "signver-torch")
    return root / "exports" / f"{module}-{digest[:16]}"


def checkpoint_cache(module: str, name_or_path: str | os.PathLike) -> Path:
    """Where the checkpoint ``name_or_path`` is exported once (:func:`cache_folder`), keyed by its whole card, the
    weights' sha256 included (checked here): a recalibrated card (threshold, per-person rule, the cleaner's tone curve
    baked into its graph) gets a new export, never a stale one."""
    from signver_torch.checkpoints import verified_card

    _, card = verified_card(module, name_or_path)
    return cache_folder(module, hashlib.sha256(json.dumps(card, sort_keys=True).encode()).hexdigest())


def choose_backend(module: str, requested: str, name_or_path: str | os.PathLike, on_cpu: bool = True) -> tuple[str, Path | None]:
    """The backend that runs ``module``'s ``name_or_path`` (an export folder or a checkpoint) and the export folder it
    reads (``None`` when torch runs a checkpoint; under an exported backend, a checkpoint's cache folder, which may not
    hold an export yet). ``"auto"``: torch off the CPU; on it, :func:`fastest` of an export folder's formats, or of
    torch and the formats in a checkpoint's cache folder (``auto`` never exports)."""
    given_export = bool(exported_formats(name_or_path, module))
    folder = Path(name_or_path) if given_export else None
    if requested != "auto":
        return requested, folder if given_export or requested == "torch" else checkpoint_cache(module, name_or_path)
    if not on_cpu:
        return "torch", None
    if given_export:
        return fastest(exported_formats(name_or_path, module), with_torch=False), folder
    folder = checkpoint_cache(module, name_or_path)
    backend = fastest(exported_formats(folder, module), with_torch=True)
    return backend, None if backend == "torch" else folder


def fastest(formats: list[str], with_torch: bool) -> str:
    """The first backend of :func:`auto_order` that is installed among torch (``with_torch``: a checkpoint was given)
    and the runtimes of ``formats``."""
    ready = {FORMATS[fmt].backend for fmt in formats} | ({"torch"} if with_torch else set())
    offered = [backend for backend in auto_order() if backend in ready]
    for backend in offered:
        if installed(backend):
            return backend
    return check_backend(offered[0])  # an export whose runtime is missing: the error naming its extra


def read_export_card(folder: str | os.PathLike, module: str, fmt: str = "onnx") -> dict[str, Any]:
    """The export card of ``module`` in ``folder``, checked: its module, format, schema and the files' sha256."""
    graph, card_path = export_files(folder, module, fmt)
    for path in (graph, card_path, *companion_files(graph, fmt)):
        if not path.is_file():
            raise ExportError(f"{path}: missing (an export folder holds {graph.name} and {card_path.name}: run signver export)")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        source = card["source"]["card"]
        if card["module"] != module or source["module"] != module:
            raise ExportError(f"{card_path}: an export of {card['module']!r}, not of {module!r}")
        if card["format"] != fmt:
            raise ExportError(f"{card_path}: an export in {card['format']!r}, not in {fmt!r}")
        if int(card["schema"]) > EXPORT_SCHEMA:
            raise ExportError(f"{card_path}: export schema {card['schema']} is newer than this version reads ({EXPORT_SCHEMA})")
        if card.get("precision", "fp32") not in PRECISIONS[fmt]:
            raise ExportError(f"{card_path}: precision {card['precision']!r} is not one {fmt} runs ({', '.join(PRECISIONS[fmt])})")
        expected = {graph: str(card["sha256"]), **{graph.with_name(name): str(digest) for name, digest in card.get("companions", {}).items()}}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ExportError(f"{card_path}: unreadable export card ({type(error).__name__}: {error})") from error
    for path, digest in expected.items():
        if sha256_file(path) != digest:
            raise ExportError(f"{path}: sha256 does not match its export card (file corrupt or replaced)")
    return card


def default_threads() -> int:
    """``$OMP_NUM_THREADS`` when set (the torch path honours it too, so every backend gets the same cores), else 0:
    the runtime's choice."""
    return int(os.environ.get("OMP_NUM_THREADS") or 0)


class ExportedGraph:
    """An exported graph run on the CPU by its backend's runtime: float32 numpy arrays in, numpy arrays out.

    The card (checked by :func:`read_export_card`) and the graph's path are read here; each runtime's
    subclass opens the graph (``threads`` intra-op threads, by default :func:`default_threads`) and runs it.
    """

    fmt: str
    #: the precision the runtime compiled the graph in on this CPU (OpenVINO's may differ from its card's)
    executed_precision = "fp32"

    def __init__(self, folder: str | os.PathLike, module: str, threads: int | None = None) -> None:
        self.runtime = import_runtime(FORMATS[self.fmt].backend)
        self.card = read_export_card(folder, module, self.fmt)
        self.path = export_files(folder, module, self.fmt)[0]
        try:
            self._open(default_threads() if threads is None else threads)
        except Exception as error:  # each runtime raises its own error types
            raise ExportError(f"{self.path}: {FORMATS[self.fmt].backend} cannot load the graph ({type(error).__name__}: {error})") from error

    def _open(self, threads: int) -> None:
        raise NotImplementedError

    def _run(self, arrays: list[np.ndarray]) -> Sequence[np.ndarray]:
        raise NotImplementedError

    def __call__(self, *arrays: np.ndarray) -> Sequence[np.ndarray]:
        """Run the graph on arrays given in the order of its inputs."""
        return self._run([np.ascontiguousarray(array, dtype=np.float32) for array in arrays])


class OnnxGraph(ExportedGraph):
    """An ONNX graph in an onnxruntime session (all graph optimisations, the CPU provider)."""

    fmt = "onnx"

    def _open(self, threads: int) -> None:
        ort = self.runtime
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle threads sleep instead of spinning: spinning, they keep the cores from the host's work between runs and
        # from a module that OpenVINO runs in the same pipeline (measured in the README, "Exported backends")
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [item.name for item in self.session.get_inputs()]

    @property  # type: ignore[override]
    def executed_precision(self) -> str:
        """The card's precision: onnxruntime runs a quantised graph as it is written."""
        return str(self.card.get("precision", "fp32"))

    def _run(self, arrays: list[np.ndarray]) -> Sequence[np.ndarray]:
        return self.session.run(None, dict(zip(self.input_names, arrays)))


class OpenVinoGraph(ExportedGraph):
    """An OpenVINO IR compiled for the CPU plugin, for latency, in the precision its export card names (the one
    whose check against torch it passed: ``signver export --precision``); cards before schema 2 run fp32."""

    fmt = "openvino"

    def _open(self, threads: int) -> None:
        import openvino.properties as properties
        import openvino.properties.hint as hints

        precision = {"fp32": self.runtime.Type.f32, "bf16": self.runtime.Type.bf16}[self.card.get("precision", "fp32")]
        # unpinned: pinned, the plugin put the threads of every process on the same cores, and two Ray actors of one
        # thread each read pages no faster than one (docs/scale.md, "Actors without torch"); in one process it costs nothing
        config = {hints.performance_mode: hints.PerformanceMode.LATENCY, hints.inference_precision: precision,
                  hints.enable_cpu_pinning: False}
        if threads:
            config[properties.inference_num_threads] = threads
        core = self.runtime.Core()
        self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)

    @property  # type: ignore[override]
    def executed_precision(self) -> str:
        """The precision the plugin compiled the graph in on this CPU (bf16 is asked for, fp32 runs where it has none)."""
        import openvino.properties.hint as hints

        return "bf16" if self.compiled.get_property(hints.inference_precision) == self.runtime.Type.bf16 else "fp32"

    def _run(self, arrays: list[np.ndarray]) -> Sequence[np.ndarray]:
        result = self.compiled(arrays)
        return [result[output] for output in self.compiled.outputs]


#: The runner of each exported backend.
GRAPHS: dict[str, type[ExportedGraph]] = {FORMATS[graph.fmt].backend: graph for graph in (OnnxGraph, OpenVinoGraph)}


def accelerator_visible() -> bool:
    """Whether this machine may offer torch a GPU or a Gaudi (``backend="auto"`` then leaves the choice to torch, which
    runs on it), asked without importing torch: torch itself where it is imported already, else the devices' files
    (NVIDIA's, WSL2's, ROCm's, Habana's) unless ``CUDA_VISIBLE_DEVICES`` hides every GPU."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return bool(torch.cuda.is_available())
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1")
    gpu = not hidden and any(Path(path).exists() for path in ("/dev/nvidiactl", "/dev/dxg", "/dev/kfd"))
    return gpu or any(Path("/dev/accel").glob("accel*")) or any(Path("/dev").glob("hl[0-9]*"))


class ExportedFacade:
    """A module's export run without torch: the graph and its card, the source checkpoint's card, host steps in numpy.

    Subclasses (:data:`~signver_torch.cards.TORCH_FREE_FACADES`) hold each module's host steps; ``SignVer`` runs them
    in place of the torch facades under an exported backend wherever an export is at hand, so ``signver verify`` and
    ``enroll`` never import torch. :meth:`load` reads an export folder, or the cache's export of a checkpoint
    (:func:`checkpoint_cache`); one it cannot run (none yet, an older schema, a broken one) is an :class:`ExportError`,
    and the torch facade, which exports, is the way on.
    """

    module: str
    default_batch_size = 16

    def __init__(self, backend: str = "auto", batch_size: int | None = None, on_cpu: bool | None = None) -> None:
        """``on_cpu``: whether the caller runs on the CPU (``SignVer(device="cpu")``); ``None``: ``auto`` leaves a
        machine with a GPU or a Gaudi to torch (:func:`accelerator_visible`)."""
        self.requested_backend = check_backend(backend)
        self.on_cpu = on_cpu
        self.backend = backend
        self.batch_size = batch_size or self.default_batch_size
        self.graph: ExportedGraph | None = None
        self.card: dict[str, Any] = {}  # the source checkpoint's card
        self.export_card: dict[str, Any] = {}
        self.weights: Path | None = None  # the graph file (the extractor's background bank lies beside it)

    def load(self: Self, name_or_path: str | os.PathLike = "default") -> Self:
        """Run the export of ``name_or_path`` (an export folder, or a checkpoint exported into the cache)."""
        on_cpu = self.on_cpu if self.on_cpu is not None else not accelerator_visible()
        backend, folder = choose_backend(self.module, self.requested_backend, name_or_path, on_cpu=on_cpu)
        if backend == "torch" or folder is None:
            raise ExportError(f"{name_or_path}: no {self.module} export to run without torch (backend {self.requested_backend!r})")
        graph = GRAPHS[backend](folder, self.module)
        if int(graph.card["schema"]) != EXPORT_SCHEMA:
            raise ExportError(f"{graph.path}: export schema {graph.card['schema']}, this version writes {EXPORT_SCHEMA}: export it again")
        return self.attach(backend, graph, name_or_path)

    def attach(self: Self, backend: str, graph: ExportedGraph, name_or_path: str | os.PathLike) -> Self:
        """Run ``graph``, opened already: :meth:`load`'s, or a torch facade's under an exported backend (which hands
        its exported path to this one, so each step has one host implementation per kind of backend)."""
        self._configure(graph.card["source"]["card"], graph.card, name_or_path)
        self.backend, self.graph, self.weights = backend, graph, graph.path
        self.card, self.export_card = graph.card["source"]["card"], graph.card
        return self

    def _configure(self, card: dict[str, Any], export_card: dict[str, Any], name_or_path: str | os.PathLike) -> None:
        """Read the module's own card fields (raise :class:`~signver_torch.errors.CheckpointError` on a bad one)."""

    @property
    def loaded_graph(self) -> ExportedGraph:
        if self.graph is None:
            raise SignVerError(f"no {self.module} export loaded (call load() first)")
        return self.graph

    @property
    def precision(self) -> str:
        """What the graph computes in on this CPU."""
        return self.loaded_graph.executed_precision

    @property
    def sha256(self) -> str:
        """The source checkpoint's weights digest, as its card records it (what galleries are keyed by)."""
        return str(self.card.get("sha256", ""))
