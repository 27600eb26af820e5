"""The registry of trainable modules: each module folder declares its task once, in its ``task.py``,
and ``signver train``, ``signver evaluate`` and ``signver calibrate`` loop over what is registered
here without naming any module.

A task names its LightningModule and DataModule by import path (so listing tasks imports neither
Lightning nor the models), the function that exports a fitted run as a shipped checkpoint with its
card, and the figures of the one-line summary ``signver train`` prints. Adding a module is adding a folder with a
``task.py`` that calls :func:`register_task`.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from signver_torch.cards import MODULES
from signver_torch.errors import SignVerError

#: ``export(module, datamodule, trainer, seconds, recipe, out, argv) -> (weights, card)``; rank 0 only.
Exporter = Callable[[Any, Any, Any, float, Path, Path, Optional[Sequence[str]]], "tuple[Path, dict[str, Any]]"]


@dataclass(frozen=True)
class ModuleCommand:
    """A module's part in a shared command (``evaluate``, ``calibrate``): what it runs on the parsed
    arguments (``--data`` already one folder or a list), and which of the command's module-specific
    options it reads; the others, given for this module, are refused naming the modules they are for."""

    run: Callable[[argparse.Namespace], Any]  # evaluate: the report (a dict); calibrate: the lines to print
    options: tuple[str, ...] = ()  # argparse ``dest`` names
    several_data: Optional[bool] = None  # whether it reads several --data folders; None: as the task's training does

    def reads_several(self, task: "TrainingTask") -> bool:
        return task.several_data if self.several_data is None else self.several_data


@dataclass(frozen=True)
class BenchmarkSpec:
    """How ``signver benchmark`` times the module's own ``training_loss`` and forward pass under a
    recipe: a synthetic batch shaped as the module's DataModule yields it from the recipe's ``data``."""

    batch: Callable[[dict[str, Any], int], Any]  # (recipe's data section, batch size) -> a batch on the host
    batch_size: Callable[[dict[str, Any]], int]  # the recipe's batch size
    input_shape: Callable[[dict[str, Any]], list[int]]  # one input image (C, H, W), for the records
    #: what the module's ``setup`` would derive from the data (the extractor's proxy classes), done without a Trainer
    prepare: Optional[Callable[[Any, dict[str, Any]], None]] = None
    #: ``(data folder, batch size, data section) -> images/s`` of the module's own input pipeline on real signatures
    loading_rate: Optional[Callable[[Path, int, dict[str, Any]], float]] = None


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
    evaluate: Optional[ModuleCommand] = None
    calibrate: Optional[ModuleCommand] = None
    benchmark: Optional[BenchmarkSpec] = None

    def classes(self) -> tuple[type, type]:
        """The LightningModule and LightningDataModule classes (imports Lightning)."""
        return _import(self.lightning_module), _import(self.data_module)


_TASKS: dict[str, TrainingTask] = {}
_discovered = False


def register_task(task: TrainingTask) -> TrainingTask:
    """Register ``task``; its name must be a module with checkpoints (``cards.FACADES``): training exports one."""
    if task.name not in MODULES:
        raise SignVerError(f"training task {task.name!r} is not a module with checkpoints ({', '.join(MODULES)}): "
                           "add it with its facade to cards.FACADES")
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


def module_command(name: str, command: str, args: argparse.Namespace) -> ModuleCommand:
    """Module ``name``'s part in ``command`` (``"evaluate"``, ``"calibrate"``), after refusing options
    of ``args`` that are for other modules."""
    tasks = training_tasks()
    offered = {task_name: getattr(task, command) for task_name, task in tasks.items() if getattr(task, command) is not None}
    if name not in offered:
        raise SignVerError(f"signver {command} is for the {' and the '.join(offered)}, not the {name}")
    for option in sorted({option for entry in offered.values() for option in entry.options} - set(offered[name].options)):
        if getattr(args, option, None) is not None:
            owners = " and the ".join(other for other, entry in offered.items() if option in entry.options)
            raise SignVerError(f"--{option.replace('_', '-')} is for the {owners}")
    return offered[name]


def _import(path: str) -> type:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)
