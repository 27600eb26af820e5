"""``signver train``: LightningCLI recipes, hardware through accelerators.py, export to a shipped checkpoint.

A recipe is a LightningCLI YAML (``model:``, ``data:``, ``trainer:``) plus a ``hardware:`` block
(``accelerator``, ``devices``, ``precision``) that :func:`~signver_torch.accelerators.trainer_kwargs`
turns into the Trainer's hardware arguments. Training writes Lightning checkpoints under
``--run-dir`` (``last.ckpt`` resumes with ``--resume``, same recipe) and, at the end, the final
epoch's weights (a fixed schedule: the held-out writers never pick an epoch) as a safetensors
checkpoint with its JSON card at ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from signver_torch.accelerators import trainer_kwargs
from signver_torch.checkpoints import checkout_dir, save_checkpoint, weights_path
from signver_torch.errors import SignVerError
from signver_torch.tasks import get_task

class RecipeCLI(LightningCLI):
    """LightningCLI whose hardware comes from the recipe's ``hardware:`` block via accelerators.py."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--hardware.accelerator", type=str, default="auto")
        parser.add_argument("--hardware.devices", type=str, default="auto")
        parser.add_argument("--hardware.precision", type=Optional[str], default=None)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        hardware = self.config_init["hardware"]
        kwargs.update(trainer_kwargs(hardware["accelerator"], hardware["devices"], hardware["precision"]))
        # the data modules draw writer-grouped batches per rank themselves
        kwargs["use_distributed_sampler"] = False
        return super().instantiate_trainer(**kwargs)


def hardware_description(trainer: Any) -> str:
    accelerator = type(trainer.accelerator).__name__.replace("Accelerator", "")
    if accelerator == "CUDA":
        device = torch.cuda.get_device_name(0)
    elif accelerator == "HPU":
        device = trainer.accelerator.get_device_name()
    else:
        device = f"{cpu_model()}, {torch.get_num_threads()} threads"
    return f"{trainer.num_devices} x {accelerator} ({device}), precision {trainer.precision}"


def cpu_model() -> str:
    """The CPU's marketing name where Linux tells it (platform.processor() is empty there)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_recipe(
    module_class: type,
    datamodule_class: type,
    config: Path,
    overrides: Sequence[str],
    run_dir: Path,
    resume: bool,
) -> tuple[RecipeCLI, float]:
    """Parse the recipe, fit with progress bar and resumable checkpoints; returns the CLI and the seconds."""
    cli = parse_recipe(module_class, datamodule_class, config, overrides, run_dir)
    last = run_dir / "last.ckpt"
    if resume and not last.exists():
        raise SignVerError(f"--resume: no {last} to resume from")
    if resume:
        _check_schedule_fits(last, cli.trainer.max_epochs)
    start = time.time()
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=str(last) if resume else None)
    return cli, time.time() - start


def parse_recipe(
    module_class: type, datamodule_class: type, config: Path, overrides: Sequence[str], run_dir: Path
) -> RecipeCLI:
    """The recipe's model, data and Trainer (hardware through accelerators.py), built but not run."""
    if not config.is_file():
        raise SignVerError(f"{config}: recipe not found")
    run_dir.mkdir(parents=True, exist_ok=True)
    last_epoch = ModelCheckpoint(dirpath=run_dir, save_last=True, save_top_k=0)
    args = ["--config", str(config), *overrides, f"--trainer.default_root_dir={run_dir}"]
    try:
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
        cli = RecipeCLI(
            module_class,
            datamodule_class,
            args=args,
            run=False,
            save_config_callback=None,
            trainer_defaults={"callbacks": [last_epoch]},
            parser_kwargs={"exit_on_error": False},
        )
    except (SystemExit, ValueError, TypeError, argparse.ArgumentError) as error:
        raise SignVerError(f"{config}: invalid recipe or override ({error})") from error
    return cli


def _check_schedule_fits(last: Path, max_epochs: int | None) -> None:
    """The recipes' one-cycle schedules are sized for the run's epoch count when it started; resuming
    with another ``max_epochs`` would step past their end (or stop mid-cycle), so it is refused up front."""
    try:
        state = torch.load(last, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file: name it rather than fail inside Lightning
        raise SignVerError(f"--resume: {last} is not a readable Lightning checkpoint ({error})") from error
    epochs_done = int(state.get("epoch", 0)) + 1
    steps_per_epoch = int(state.get("global_step", 0)) / epochs_done
    for scheduler in state.get("lr_schedulers", []):
        total = scheduler.get("total_steps")
        if total and steps_per_epoch and max_epochs and round(total / steps_per_epoch) != max_epochs:
            raise SignVerError(
                f"--resume: the run in {last.parent} was planned for {round(total / steps_per_epoch)} epochs (its learning-rate "
                f"schedule ends there) but max_epochs is now {max_epochs}; resume with the same max_epochs or start a new --run-dir"
            )


def export_checkpoint(out: Path, model: torch.nn.Module, card: dict[str, Any]) -> Path:
    """Write ``model``'s weights (fp16) and ``card`` as ``out`` (.safetensors + .json)."""
    return save_checkpoint(out, model.state_dict(), card, dtype=torch.float16)


def recipe_command(argv: Sequence[str] | None = None) -> str:
    return "signver " + shlex.join(list(argv if argv is not None else sys.argv[1:]))


def recipes_root() -> Path:
    """The recipes folder: inside an installed wheel, or the checkout's ``recipes/``."""
    for root in (Path(__file__).resolve().parent / "_recipes", checkout_dir("recipes")):
        if root is not None and root.is_dir():
            return root
    raise SignVerError("recipes folder not found (reinstall signver-torch)")


def resolve_recipe(module: str, config: str | None, fine_tune: bool) -> Path:
    """``--config`` as given, a recipe name (``gpu``), or the module's default (``cpu``/``finetune``)."""
    if config is None:
        config = "finetune" if fine_tune else "cpu"
    path = Path(config)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return recipes_root() / module / f"{config}.yaml"


def shared_run_dir(module: str) -> str:
    """A new ``runs/<module>-<time>`` folder, the same for every rank of a multi-device run: Lightning
    relaunches ``signver train`` once per extra rank (``LOCAL_RANK`` set), and those processes inherit
    rank 0's choice through ``SIGNVER_RUN_DIR`` instead of stamping their own."""
    if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get("SIGNVER_RUN_DIR"):
        return os.environ["SIGNVER_RUN_DIR"]
    os.environ["SIGNVER_RUN_DIR"] = f"runs/{module}-{time.strftime('%Y%m%d-%H%M%S')}"
    return os.environ["SIGNVER_RUN_DIR"]


def train(
    kind: str,
    config: Path,
    overrides: Sequence[str],
    run_dir: Path,
    out: Path,
    resume: bool = False,
    argv: Sequence[str] | None = None,
) -> tuple[Path, dict[str, Any] | None]:
    """Fit ``kind``'s recipe, then export its final weights with the card and the metrics of its
    evaluate command; returns the weights path and the card.

    In a multi-device run every rank fits, all wait at a barrier and leave the process group, then rank 0 alone exports while
    the other ranks return ``None`` for the card and exit cleanly (a rank that failed would make
    Lightning's launcher kill the others, rank 0 mid-export).
    """
    task = get_task(kind)
    module_class, data_class = task.classes()
    cli, seconds = run_recipe(module_class, data_class, config, overrides, run_dir, resume)
    cli.trainer.strategy.barrier("signver-export")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # the run's collectives end here: rank 0's export (torchmetrics among it) must not wait for ranks that have left
        torch.distributed.destroy_process_group()
    if not cli.trainer.is_global_zero:
        return weights_path(out), None
    weights, card = task.export(cli.model, cli.datamodule, cli.trainer, seconds, config, out, argv)
    return weights, extend_recipe_chain(weights, card, getattr(cli.model, "init_card", {}))


def extend_recipe_chain(weights: Path, card: dict[str, Any], init_card: dict[str, Any]) -> dict[str, Any]:
    """The card's ``recipe_chain``: the chain of the checkpoint this run started from (fine-tuning),
    then this run, each with its command, digest, time, hardware and headline metrics. A start from
    another module's checkpoint (the detector's backbone from the extractor) is no step of the chain."""
    from signver_torch.checkpoints import update_card

    if init_card.get("module") != card.get("module"):
        init_card = {}
    chain = list(init_card.get("recipe_chain", []))
    if init_card and not chain and init_card.get("recipe_command"):  # a start that predates the chain: one step for it
        chain.append({"step": 1, "command": init_card["recipe_command"], "sha256": init_card.get("sha256")})
    chain.append({
        "step": len(chain) + 1,
        "command": card.get("recipe_command"),
        "sha256": card.get("sha256"),
        "init_sha256": init_card.get("sha256"),
        "hardware": card.get("hardware"),
        "wall_time_seconds": card.get("wall_time_seconds"),
        "metrics": {key: value for key, value in card.get("metrics", {}).items() if key in ("eer", "auc", "map50", "map", "psnr", "ssim")},
    })
    return update_card(weights, recipe_chain=chain)


def run_record(trainer: Any, seconds: float, argv: Sequence[str] | None) -> dict[str, Any]:
    """The card fields every trained checkpoint carries: how to rerun it, where, how long, when."""
    return {
        "recipe_command": recipe_command(argv),
        "hardware": hardware_description(trainer),
        "wall_time_seconds": round(seconds, 1),
        "date": time.strftime("%Y-%m-%d"),
        "versions": {"torch": torch.__version__, "lightning": lightning.__version__, "signver_torch": _own_version()},
    }


def _own_version() -> str:
    from signver_torch import __version__

    return __version__
