"""``signver train MODULE``: a registered module's recipe fitted, then exported with its card (``tasks.py``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from signver_torch.errors import SignVerError
from signver_torch.tasks import get_task, training_tasks


def _require_trainable(module: str, command: str) -> None:
    if module not in training_tasks():
        raise SignVerError(f"`signver {command} {module}` is not available in this version yet (available: {', '.join(training_tasks())})")


def cmd_train(args: argparse.Namespace) -> int:
    """Fit the recipe with the options as overrides (extra arguments go to LightningCLI), export, print the summary."""
    from signver_torch.training import resolve_recipe, shared_run_dir, train

    _require_trainable(args.module, "train")
    task = get_task(args.module)
    if args.resume and not args.run_dir:
        raise SignVerError("--resume needs --run-dir: the folder of the run to continue")
    if args.init and not task.fine_tunable:
        tunable = " and the ".join(name for name, other in training_tasks().items() if other.fine_tunable)
        raise SignVerError(f"--init (fine-tuning) is available for the {tunable}, not the {args.module}")
    if args.data and len(args.data) > 1 and not task.several_data:
        raise SignVerError(f"train {args.module} takes one --data folder")
    config = resolve_recipe(args.module, args.config, fine_tune=args.init is not None)
    run_dir = Path(args.run_dir or shared_run_dir(args.module))
    out = Path(args.out or run_dir / args.module)
    overrides = [f"--hardware.{key}={value}" for key, value in
                 (("accelerator", args.accelerator), ("devices", args.devices), ("precision", args.precision)) if value]
    data = None if not args.data else args.data[0] if len(args.data) == 1 else json.dumps(args.data)  # several: a list
    overrides += [f"--data.{key}={value}" for key, value in
                  ((task.data_argument, data), ("train_writers", args.train_writers), ("val_writers", args.val_writers)) if value]
    if args.init:
        overrides.append(f"--model.init={args.init}")
    if args.max_epochs:
        overrides.append(f"--trainer.max_epochs={args.max_epochs}")
    overrides += args.overrides
    weights, card = train(args.module, config, overrides, run_dir, out, resume=args.resume, argv=args.argv)
    if card is not None:  # rank 0 of a multi-device run, or a single-device run
        print(f"wrote {weights} (+ .json card); {task.summary(card)}")
    return 0


def add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train or fine-tune a model from a recipe",
        description="Train a module from a LightningCLI recipe (recipes/<module>/*.yaml) and export a "
        "checkpoint with its card. Extra arguments after the options go to LightningCLI "
        "(e.g. --trainer.max_epochs=5 --model.lr=0.001).",
    )
    train.add_argument("module", choices=tuple(training_tasks()))
    train.add_argument("--config", help="recipe YAML, or a recipe name: cpu, gpu, hpu, hpu8, finetune (default: cpu, or finetune with --init)")
    train.add_argument("--data", nargs="+", metavar="DIR", help="training data: one or several folders (CEDAR or writer "
                       "folders; with several, writers are named by source, e.g. cedar:1-32,dutch:001-036)")
    train.add_argument("--train-writers", help="training writers, e.g. 1-32 (default: the recipe's)")
    train.add_argument("--val-writers", help="held-out writers for validation and threshold calibration; \"none\" holds "
                       "none out where the module can, training on --train-writers (name every writer there; then "
                       "`signver calibrate MODULE --out-of-fold` sets its thresholds)")
    train.add_argument("--init", help="start from this checkpoint (name or path): fine-tuning")
    train.add_argument("--out", help="where to write the exported checkpoint (.safetensors + .json)")
    train.add_argument("--run-dir", help="folder for Lightning checkpoints and logs (default: runs/<module>-<time>)")
    train.add_argument("--resume", action="store_true", help="resume from RUN_DIR/last.ckpt")
    train.add_argument("--max-epochs", type=int)
    train.add_argument("--accelerator", choices=("auto", "cpu", "gpu", "hpu"))
    train.add_argument("--devices")
    train.add_argument("--precision")
    train.set_defaults(handler=cmd_train)
