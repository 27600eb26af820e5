"""Inference backends behind the facades' ``backend=`` argument: torch, or an exported ONNX graph run by onnxruntime.

An export (``signver export``, :mod:`signver_torch.export`) is a folder holding, per module,
``<module>.onnx`` and ``<module>.json``, its export card: the graph's sha256, opset, inputs and
outputs, the source checkpoint's sha256 and card, the command and the accuracy check it passed (the
extractor's background bank travels beside them). This file reads exports and runs them; it imports
neither torch nor onnxruntime at import time, so a missing runtime is one clear error, not a crash.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from signver_torch.cards import sha256_file
from signver_torch.errors import BackendUnavailableError, ExportError, SignVerError

#: The inference backends and the extra that installs each one's runtime (None: always there).
BACKENDS: dict[str, str | None] = {"torch": None, "onnxruntime": "onnx"}
#: Export formats ``signver export`` writes, and the backend that runs each.
FORMATS = {"onnx": "onnxruntime"}
#: The opset graphs are written in by default (onnxruntime 1.17 and later run it).
OPSET = 18
#: Bumped when the export folder's layout or its card's fields change.
EXPORT_SCHEMA = 1


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS` and its runtime imports; else a one-line error naming the extra."""
    if backend not in BACKENDS:
        raise SignVerError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "onnxruntime":
        onnxruntime()
    return backend


def onnxruntime() -> Any:
    """The ``onnxruntime`` module, or :class:`BackendUnavailableError` saying how to install it."""
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise BackendUnavailableError(
            f"backend 'onnxruntime' is not installed ({error}): pip install 'signver-torch[{BACKENDS['onnxruntime']}]'"
        ) from error
    return ort


def export_files(folder: str | os.PathLike, module: str, fmt: str = "onnx") -> tuple[Path, Path]:
    """The graph and card paths of ``module`` in an export folder (``folder`` may also name the graph file)."""
    path = Path(folder)
    if path.suffix == f".{fmt}":
        path = path.parent
    return path / f"{module}.{fmt}", path / f"{module}.json"


def is_export(name_or_path: str | os.PathLike, module: str) -> bool:
    """Whether ``name_or_path`` is an export folder (or graph file) holding ``module``."""
    graph, card = export_files(name_or_path, module)
    return graph.is_file() and card.is_file()


def cache_folder(module: str, sha256: str) -> Path:
    """Where a checkpoint asked for by name under the onnxruntime backend is exported once and kept
    (``$SIGNVER_CACHE``, else ``~/.cache/signver-torch``), keyed by the weights' sha256."""
    root = Path(os.environ.get("SIGNVER_CACHE") or Path.home() / ".cache" / "signver-torch")
    return root / "onnx" / f"{module}-{sha256[:16]}"


def read_export_card(folder: str | os.PathLike, module: str) -> dict[str, Any]:
    """The export card of ``module`` in ``folder``, checked: its module, its schema and the graph's sha256."""
    graph, card_path = export_files(folder, module)
    for path in (graph, card_path):
        if not path.is_file():
            raise ExportError(f"{path}: missing (an export folder holds <module>.onnx and <module>.json: run signver export)")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        source = card["source"]["card"]
        if card["module"] != module or source["module"] != module:
            raise ExportError(f"{card_path}: an export of {card['module']!r}, not of {module!r}")
        if int(card["schema"]) > EXPORT_SCHEMA:
            raise ExportError(f"{card_path}: export schema {card['schema']} is newer than this version reads ({EXPORT_SCHEMA})")
        expected = str(card["sha256"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ExportError(f"{card_path}: unreadable export card ({type(error).__name__}: {error})") from error
    if sha256_file(graph) != expected:
        raise ExportError(f"{graph}: sha256 does not match its export card (file corrupt or replaced)")
    return card


class OnnxGraph:
    """An exported graph in an onnxruntime session on the CPU: numpy arrays in, numpy arrays out.

    ``threads`` sets onnxruntime's intra-op threads; by default ``$OMP_NUM_THREADS`` when set (the
    torch path honours it too, so both backends get the same cores), else onnxruntime's choice.
    """

    def __init__(self, folder: str | os.PathLike, module: str, threads: int | None = None) -> None:
        ort = onnxruntime()
        self.card = read_export_card(folder, module)
        self.path = export_files(folder, module)[0]
        options = ort.SessionOptions()
        threads = threads if threads is not None else int(os.environ.get("OMP_NUM_THREADS") or 0)
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ExportError(f"{self.path}: onnxruntime cannot load the graph ({type(error).__name__}: {error})") from error
        self.input_names = [item.name for item in self.session.get_inputs()]

    def __call__(self, *arrays: np.ndarray) -> Sequence[np.ndarray]:
        """Run the graph on float32 arrays given in the order of its inputs."""
        feed = {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in zip(self.input_names, arrays)}
        return self.session.run(None, feed)
