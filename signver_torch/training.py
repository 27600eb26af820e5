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
import platform
import shlex
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from signver_torch.accelerators import trainer_kwargs
from signver_torch.checkpoints import checkout_dir, save_checkpoint, update_card, weights_path
from signver_torch.data.signatures import compact_writers, data_roots, data_text, writer_sort_key
from signver_torch.errors import SignVerError

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


def _export_extractor(
    module: Any, data: Any, trainer: Any, seconds: float, config: Path, out: Path, argv: Sequence[str] | None
) -> tuple[Path, dict[str, Any]]:
    """Export the final weights with their card, fit the projection on the training writers and the
    threshold on the held-out ones (:func:`~signver_torch.extractor.api.calibrate_extractor`), evaluate."""
    from signver_torch.extractor.api import calibrate_extractor, evaluate_extractor
    from signver_torch.metrics import writer_protocol_metrics

    canvases, labels = data.val_set.tensors
    model = module.export_model.eval().cpu()
    with torch.inference_mode():
        embeddings = torch.cat([model(chunk.float() / 255) for chunk in canvases.split(128)])
    calibration = writer_protocol_metrics(embeddings, labels // 2, labels % 2 == 1)
    train_writers = sorted({r.writer for r in data.train_records}, key=writer_sort_key)
    val_writers = sorted({r.writer for r in data.val_records}, key=writer_sort_key)
    card = {
        "module": "extractor",
        "architecture": module.architecture,
        "preprocessing": data.preprocessor.config(),
        "input": "grayscale crop of any size, dark ink on light paper; preprocessing above is applied",
        "threshold": calibration["threshold_at_eer"],
        "threshold_calibration": (
            f"cosine distance at the EER ({calibration['negatives']} forgeries) of the held-out writers "
            f"{compact_writers(val_writers)}, final epoch weights"
        ),
        "training": {
            "data": data_text(data.hparams.data_dir),
            "train_writers": compact_writers(train_writers),
            "val_writers": compact_writers(val_writers),
            "n_train_images": len(data.train_set),  # after blank scans were dropped
            "n_val_images": len(data.val_set),
            "init": module.hparams.init,
            "init_sha256": module.init_card.get("sha256"),
            "loss": module.hparams.loss,
            "epochs": trainer.current_epoch,
            "recipe": str(config),
        },
        **run_record(trainer, seconds, argv),
    }
    weights = export_checkpoint(out, model, card)
    if len(data.train_set) > model.embedding_dim:
        calibrate_extractor(data.hparams.data_dir, card["training"]["train_writers"], card["training"]["val_writers"], weights)
    else:  # a small fine-tuning set: too few signatures for the principal axes, the trained head stays
        update_card(weights, projection={"method": f"trained head (only {len(data.train_set)} training signatures: too few to fit)"})
    metrics = evaluate_extractor(data.hparams.data_dir, val_writers, weights, progress=True)
    card = update_card(
        weights,
        metrics={key: metrics[key] for key in EXTRACTOR_METRIC_KEYS if key in metrics},
        metrics_command=recipe_command(
            ["evaluate", "extractor", "--data", *map(str, data_roots(data.hparams.data_dir)), "--writers", compact_writers(val_writers),
             "--checkpoint", str(weights), "--json"]
        ),
    )
    return weights, card


def train(
    kind: str,
    config: Path,
    overrides: Sequence[str],
    run_dir: Path,
    out: Path,
    resume: bool = False,
    argv: Sequence[str] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Fit ``kind``'s recipe (``extractor``, ``cleaner`` or ``detector``), then export its final weights
    with the card and the metrics of its evaluate command; returns the weights path and the card."""
    module_class, data_class = task_classes(kind)
    cli, seconds = run_recipe(module_class, data_class, config, overrides, run_dir, resume)
    if not cli.trainer.is_global_zero:
        return weights_path(out), {}
    export = {"extractor": _export_extractor, "cleaner": _export_cleaner, "detector": _export_detector}[kind]
    return export(cli.model, cli.datamodule, cli.trainer, seconds, config, out, argv)


def task_classes(kind: str) -> tuple[type, type]:
    """The LightningModule and LightningDataModule that train ``kind``."""
    if kind == "extractor":
        from signver_torch.data.datamodule import SignatureDataModule as data_class
        from signver_torch.extractor.lit import ExtractorModule as module_class
    elif kind == "cleaner":
        from signver_torch.cleaner.lit import CleanerModule as module_class
        from signver_torch.data.datamodule import CleanerDataModule as data_class
    elif kind == "detector":
        from signver_torch.data.datamodule import PageDataModule as data_class
        from signver_torch.detector.lit import DetectorModule as module_class
    else:
        raise SignVerError(f"unknown module {kind!r} (extractor, cleaner or detector)")
    return module_class, data_class


def run_record(trainer: Any, seconds: float, argv: Sequence[str] | None) -> dict[str, Any]:
    """The card fields every trained checkpoint carries: how to rerun it, where, how long, when."""
    return {
        "recipe_command": recipe_command(argv),
        "hardware": hardware_description(trainer),
        "wall_time_seconds": round(seconds, 1),
        "date": time.strftime("%Y-%m-%d"),
        "versions": {"torch": torch.__version__, "lightning": lightning.__version__, "signver_torch": _own_version()},
    }


def _export_cleaner(
    module: Any, data: Any, trainer: Any, seconds: float, config: Path, out: Path, argv: Sequence[str] | None
) -> tuple[Path, dict[str, Any]]:
    """Export the final weights with their card, fit their tone curve on the training writers' pairs,
    evaluate on synthetic pairs of the held-out writers."""
    from signver_torch.cleaner.api import calibrate_cleaner, evaluate_cleaner

    val_writers = compact_writers(sorted({r.writer for r in data.val_records}, key=writer_sort_key))
    card = {
        "module": "cleaner",
        "architecture": module.architecture,
        "input": "grayscale crop of any size >= 8x8 in [0, 1], dark ink on light paper",
        "output": "same size, white paper and the signature's ink: 1 - sigmoid(logits)",
        "dirt": asdict(data.dirt),
        "training": {
            "data": data_text(data.hparams.data_dir),
            "train_writers": compact_writers(sorted({r.writer for r in data.train_records}, key=writer_sort_key)),
            "val_writers": val_writers,
            "n_train_signatures": len(data.train_records),
            "pairs_seen": trainer.global_step * data.hparams.batch_size,
            "epochs": trainer.current_epoch,
            "recipe": str(config),
        },
        **run_record(trainer, seconds, argv),
    }
    weights = export_checkpoint(out, module.model.eval().cpu(), card)
    calibrate_cleaner(data.hparams.data_dir, card["training"]["train_writers"], weights, progress=True)
    metrics = evaluate_cleaner(data.hparams.data_dir, val_writers, weights, progress=True)
    card = update_card(
        weights,
        metrics={key: metrics[key] for key in CLEANER_METRIC_KEYS},
        metrics_command=recipe_command(
            ["evaluate", "cleaner", "--data", *map(str, data_roots(data.hparams.data_dir)), "--writers", val_writers,
             "--checkpoint", str(weights), "--json"]
        ),
    )
    return weights, card


def _export_detector(
    module: Any, data: Any, trainer: Any, seconds: float, config: Path, out: Path, argv: Sequence[str] | None
) -> tuple[Path, dict[str, Any]]:
    """Export the final weights with their card, evaluate on the held-out real pages."""
    from signver_torch.data.detection import CLASS_NAMES
    from signver_torch.detector.api import evaluate_detector

    hp = data.hparams
    card = {
        "module": "detector",
        "architecture": module.architecture,
        "classes": {str(label): name for label, name in CLASS_NAMES.items()},
        "input": f"RGB or grayscale page of any size, letterboxed to {module.architecture['image_size']} px (white padding)",
        "training": {
            "signatures": f"{hp.signatures_dir} writers {hp.train_writers} pasted on {hp.synthetic_pages} synthetic pages",
            "real_pages": str(hp.real_dir) if hp.real_dir else None,
            "real_split": (f"{len(data.real_train)} pages trained on, {len(data.real_val)} held out "
                           f"(1 in {hp.held_out_every} by file name)") if hp.real_dir else None,
            "init": module.hparams.init,
            "init_sha256": module.init_card.get("sha256") if module.hparams.init else None,
            # how the starting checkpoint was itself trained: the chain that reproduces this one
            "init_recipe_command": module.init_card.get("recipe_command") if module.hparams.init else None,
            "init_backbone": None if module.hparams.init else module.hparams.init_backbone,
            "init_backbone_sha256": None if module.hparams.init else module.init_card.get("sha256"),
            "epochs": trainer.current_epoch,
            "recipe": str(config),
            # the last epoch's validation on synthetic pages of the held-out writers: the only figures for
            # initials, redactions and dates, which the real pages do not label
            "synthetic_validation": {key.removeprefix("val_synthetic_"): round(float(value), 4)
                                     for key, value in trainer.callback_metrics.items() if key.startswith("val_synthetic_")},
        },
        **run_record(trainer, seconds, argv),
    }
    weights = export_checkpoint(out, module.model.eval().cpu(), card)
    metrics_command = ["evaluate", "detector", "--checkpoint", str(weights), "--json"]
    if hp.real_dir:
        metrics = evaluate_detector(hp.real_dir, weights, held_out_every=hp.held_out_every)
        metrics_command[2:2] = ["--data", str(hp.real_dir), "--held-out-every", str(hp.held_out_every)]
        card = update_card(weights, metrics={k: v for k, v in metrics.items() if k.startswith(("map", "n_", "seconds"))},
                           metrics_command=recipe_command(metrics_command))
    return weights, card


CLEANER_METRIC_KEYS = ("psnr", "ssim", "ink_f1", "n_pairs", "pair_size", "seed", "seconds_per_image")

EXTRACTOR_METRIC_KEYS = (
    "eer", "auc", "threshold_at_eer", "threshold", "far", "frr", "eer_random", "negatives",
    "n_writers", "n_pos", "n_neg", "signatures_per_second", "eer_ci", "per_source",
)


def _own_version() -> str:
    from signver_torch import __version__

    return __version__
