"""The ``signver`` command.

Every subcommand reports a user error as one line on stderr and a non-zero exit; ``--debug`` shows
the traceback instead. Results go to stdout (``--json`` where a tool will read them), progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from importlib import metadata
from typing import Callable, Sequence

from signver_torch.errors import SignVerError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

#: Distributions whose versions `signver info` reports, in this order.
REPORTED_PACKAGES = (
    "signver-torch",
    "torch",
    "torchvision",
    "lightning",
    "lightning-habana",
    "timm",
    "kornia",
    "pytorch-metric-learning",
    "torchmetrics",
    "numpy",
    "pillow",
    "safetensors",
    "faiss-cpu",
)

#: Subcommands whose module has not shipped yet, with what they will do; each exits with a clear error.
PLANNED_COMMANDS = {
    "detect": "find signatures, initials, redactions and dates on pages",
    "clean": "remove lines, text and noise from signature crops",
    "verify": "verify a signature against an enrolled person or reference images",
    "enroll": "enrol a person's reference signatures in a gallery",
    "identify": "find the closest enrolled people for a signature",
    "benchmark": "measure train and inference throughput on cpu, gpu or hpu",
}
#: Modules whose training and evaluation have shipped.
TRAINABLE = ("extractor",)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def collect_info() -> dict:
    """Versions, accelerators present and shipped checkpoints, as a JSON-ready dict."""
    from signver_torch.accelerators import describe_present
    from signver_torch.checkpoints import iter_cards

    checkpoints = []
    for checkpoint, card in iter_cards():
        entry = {"module": checkpoint.module, "name": checkpoint.name, "path": str(checkpoint.weights)}
        if isinstance(card, dict):
            entry["metrics"] = card.get("metrics", {})
        else:
            entry["error"] = card
        checkpoints.append(entry)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in REPORTED_PACKAGES},
        "accelerators": describe_present(),
        "checkpoints": checkpoints,
    }


def cmd_info(args: argparse.Namespace) -> int:
    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"signver-torch {info['packages']['signver-torch']} (python {info['python']}, {info['platform']})")
    print("\npackages:")
    for name, version in info["packages"].items():
        if name != "signver-torch":
            print(f"  {name:<24} {version or 'not installed'}")
    print("\naccelerators:")
    for kind, text in info["accelerators"].items():
        print(f"  {kind:<4} {text}")
    print("\nshipped checkpoints:")
    if not info["checkpoints"]:
        print("  none yet")
    for entry in info["checkpoints"]:
        shown = {k: v for k, v in entry.get("metrics", {}).items() if k in ("eer", "auc", "eer_random", "threshold")}
        detail = entry.get("error") or ", ".join(f"{k}={v:.4g}" for k, v in shown.items()) or "no metrics"
        print(f"  {entry['module']}/{entry['name']}: {detail}")
    return 0


def _require_trainable(module: str, command: str) -> None:
    if module not in TRAINABLE:
        raise SignVerError(f"`signver {command} {module}` is not available in this version yet (available: {', '.join(TRAINABLE)})")


def cmd_train(args: argparse.Namespace) -> int:
    from signver_torch.training import resolve_recipe, train_extractor

    _require_trainable(args.module, "train")
    if args.resume and not args.run_dir:
        raise SignVerError("--resume needs --run-dir: the folder of the run to continue")
    config = resolve_recipe(args.module, args.config, fine_tune=args.init is not None)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.run_dir or f"runs/{args.module}-{stamp}")
    out = Path(args.out or run_dir / args.module)
    overrides = [f"--hardware.{key}={value}" for key, value in
                 (("accelerator", args.accelerator), ("devices", args.devices), ("precision", args.precision)) if value]
    overrides += [f"--data.{key}={value}" for key, value in
                  (("data_dir", args.data), ("train_writers", args.train_writers), ("val_writers", args.val_writers)) if value]
    if args.init:
        overrides.append(f"--model.init={args.init}")
    if args.max_epochs:
        overrides.append(f"--trainer.max_epochs={args.max_epochs}")
    overrides += args.overrides
    weights, card = train_extractor(config, overrides, run_dir, out, resume=args.resume, argv=args.argv)
    metrics = card["metrics"]
    print(f"wrote {weights} (+ .json card); held-out writers {card['training']['val_writers']}: "
          f"EER {metrics['eer']:.2%} ({metrics['negatives']} forgeries), AUC {metrics['auc']:.3f}, "
          f"threshold {card['threshold']:.4f}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _require_trainable(args.module, "evaluate")
    from signver_torch.extractor.api import evaluate_extractor

    report = evaluate_extractor(args.data, args.writers, args.checkpoint, progress=not args.quiet)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:<22} {value:.4f}" if isinstance(value, float) else f"{key:<22} {value}")
    return 0


def _planned(command: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise SignVerError(
            f"`signver {command}` is not available in this version yet ({PLANNED_COMMANDS[command]}); "
            "run `signver info` to see what is installed"
        )

    return run


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), like every other error of the command."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="signver",
        description="Offline handwritten signature detection, cleaning, embedding and verification.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    commands.required = True

    info = commands.add_parser("info", help="versions, accelerators present and shipped checkpoints")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=cmd_info)

    train = commands.add_parser(
        "train",
        help="train or fine-tune a model from a recipe",
        description="Train a module from a LightningCLI recipe (recipes/<module>/*.yaml) and export a "
        "checkpoint with its card. Extra arguments after the options go to LightningCLI "
        "(e.g. --trainer.max_epochs=5 --model.lr=0.001).",
    )
    train.add_argument("module", choices=("extractor", "cleaner", "detector"))
    train.add_argument("--config", help="recipe YAML, or a recipe name: cpu, gpu, hpu, hpu8, finetune (default: cpu, or finetune with --init)")
    train.add_argument("--data", help="training data folder (CEDAR or writer folders)")
    train.add_argument("--train-writers", help="training writers, e.g. 1-32 (default: the recipe's)")
    train.add_argument("--val-writers", help="held-out writers for validation and threshold calibration")
    train.add_argument("--init", help="start from this checkpoint (name or path): fine-tuning")
    train.add_argument("--out", help="where to write the exported checkpoint (.safetensors + .json)")
    train.add_argument("--run-dir", help="folder for Lightning checkpoints and logs (default: runs/<module>-<time>)")
    train.add_argument("--resume", action="store_true", help="resume from RUN_DIR/last.ckpt")
    train.add_argument("--max-epochs", type=int)
    train.add_argument("--accelerator", choices=("auto", "cpu", "gpu", "hpu"))
    train.add_argument("--devices")
    train.add_argument("--precision")
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="measure a checkpoint with the evaluation contract (one JSON object with --json)",
    )
    evaluate.add_argument("module", choices=("extractor", "cleaner", "detector"))
    evaluate.add_argument("--data", required=True, help="CEDAR or writer-folder layout (extractor)")
    evaluate.add_argument("--writers", help="writers to evaluate, e.g. 33-40 (default: all)")
    evaluate.add_argument("--checkpoint", default="default", help="shipped name or .safetensors path")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    evaluate.set_defaults(handler=cmd_evaluate)

    for command, summary in PLANNED_COMMANDS.items():
        planned = commands.add_parser(command, help=summary, description=summary)
        planned.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        planned.set_defaults(handler=_planned(command))
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``signver`` console script; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra  # `signver train` passes them on to LightningCLI
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("signver: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `signver info | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except SignVerError as error:
        if args.debug:
            raise
        print(f"signver: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:  # an unexpected failure still gets one line, with a way to see more
        if args.debug:
            raise
        print(
            f"signver: internal error: {type(error).__name__}: {_one_line(error)} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
