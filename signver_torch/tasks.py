"""The registry of trainable modules: each module folder declares its training task once, in its
``task.py``, and ``signver train`` loops over what is registered here without naming any module.

A task names its LightningModule and DataModule by import path (so listing tasks imports neither
Lightning nor the models), the function that exports a fitted run as a shipped checkpoint with its
card, and the figures of the one-line summary ``signver train`` prints. Adding a module is adding a folder with a
``task.py`` that calls :func:`register_task`.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from signver_torch.errors import SignVerError

#: ``export(module, datamodule, trainer, seconds, recipe, out, argv) -> (weights, card)``; rank 0 only.
Exporter = Callable[[Any, Any, Any, float, Path, Path, Optional[Sequence[str]]], "tuple[Path, dict[str, Any]]"]


@dataclass(frozen=True)
class TrainingTask:
    """How ``signver train <name>`` trains, exports and reports one module."""

    name: str
    lightning_module: str  # "package.module:Class"
    data_module: str
    export: Exporter
    summary: Callable[[dict[str, Any]], str]  # the card's figures, after "wrote <weights> (+ .json card); "
    #: the DataModule argument that ``--data`` fills, and whether it takes several folders
    data_argument: str = "data_dir"
    several_data: bool = True
    fine_tunable: bool = True

    def classes(self) -> tuple[type, type]:
        """The LightningModule and LightningDataModule classes (imports Lightning)."""
        return _import(self.lightning_module), _import(self.data_module)


_TASKS: dict[str, TrainingTask] = {}
_discovered = False


def register_task(task: TrainingTask) -> TrainingTask:
    _TASKS[task.name] = task
    return task


def training_tasks() -> dict[str, TrainingTask]:
    """Every registered task by name; the first call imports each ``signver_torch.<folder>.task``
    (a task imported directly before that registers itself, and discovery still runs)."""
    global _discovered
    if not _discovered:
        _discovered = True
        import signver_torch

        for info in sorted(pkgutil.iter_modules(signver_torch.__path__), key=lambda info: info.name):
            if info.ispkg and importlib.util.find_spec(f"signver_torch.{info.name}.task") is not None:
                importlib.import_module(f"signver_torch.{info.name}.task")
    return dict(sorted(_TASKS.items()))


def get_task(name: str) -> TrainingTask:
    tasks = training_tasks()
    if name not in tasks:
        raise SignVerError(f"unknown module {name!r} (trainable: {', '.join(tasks)})")
    return tasks[name]


def _import(path: str) -> type:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)
