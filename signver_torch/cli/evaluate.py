"""``signver evaluate MODULE`` and ``signver calibrate MODULE``: one subcommand per registered module.

What each module runs and which options it reads come from its ``task.py`` (``ModuleCommand``); this
file only defines those options, in words that name no module. A module's subcommand shows its own
options; the options of the other modules are parsed but hidden, so that ``tasks.module_command``
refuses them naming the modules they are for.
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any, Sequence

from signver_torch.cli.options import checkpoint_option, data_argument, json_flag, quiet_flag
from signver_torch.errors import SignVerError
from signver_torch.matcher.decisions import RULES
from signver_torch.runtime import BACKENDS
from signver_torch.tasks import get_task, training_tasks

#: The backends that run an exported graph (``evaluate --backend``).
EXPORTED_BACKENDS = tuple(backend for backend, extra in BACKENDS.items() if extra is not None)
#: Options of ``evaluate`` that a module reads when its ``ModuleCommand.options`` names them (argparse dest).
EVALUATE_OPTIONS: dict[str, dict[str, Any]] = {
    "writers": dict(help="writers to evaluate, e.g. 33-40 (default: all)"),
    "threshold": dict(type=float, help="report FAR and FRR at this distance (default: the checkpoint's calibrated "
                      "threshold)"),
    "references": dict(type=int, metavar="K", help="also the gallery protocol: enrol the first K genuine signatures of "
                       "each writer (of each declared text, for writers without forgeries), claim the rest and the "
                       "forgeries (or other writers' signatures of the same text), per decision rule"),
    "background_writers": dict(metavar="SPEC", help="with --references: whose genuine signatures are the writer-dependent "
                               "SVMs' background (training writers, e.g. 1-32)"),
    "ink_variants": dict(action="store_const", const=True, help="also the same protocols with every query lightened, "
                         "darkened, thinned and thickened (references as scanned), and how far each signature moves"),
    "cleaner": dict(metavar="CKPT", help="clean every signature with this cleaner checkpoint first (e.g. default), queries "
                    "and references alike, as the pipeline does (default: the scans as they are)"),
    "pairs": dict(type=int, help="number of synthetic pairs (default 256)"),
    "class_map": dict(help="dataset class to SignVer label, e.g. 0:1 (YOLO default)"),
    "held_out_every": dict(type=int, help="score only every Nth page by name (the recipes' held-out pages)"),
    "errors": dict(metavar="DIR", help="write a picture of every page with a missed mark or a confident false positive, "
                   "and errors.json listing them, into DIR"),
}

#: Options of ``calibrate`` that a module reads when its ``ModuleCommand.options`` names them (argparse dest).
CALIBRATE_OPTIONS: dict[str, dict[str, Any]] = {
    "writers": dict(help="the checkpoint's training writers, e.g. 1-32 (never the evaluation ones); without them, a "
                    "module that can keeps what it fitted and sets only its threshold"),
    "val_writers": dict(help="held-out writers whose EER sets the threshold, e.g. 33-40 (default without --writers: every "
                        "writer of --data)"),
    "target_far": dict(type=float, metavar="F", help="set the threshold where the skilled-forgery FAR of those writers is "
                       "F (e.g. 0.05) instead of at their EER"),
    "references": dict(type=int, metavar="K", help="also calibrate the per-person decision for K references (the gallery "
                       "protocol on --val-writers: the rule of lowest EER and its threshold)"),
    "background_writers": dict(metavar="SPEC", help="with --references: whose genuine signatures are the writer-dependent "
                               "SVMs' background, shipped beside the weights (never --val-writers)"),
    "rule": dict(choices=RULES, help="with --references: this rule instead of the one of lowest EER"),
    "out_of_fold": dict(nargs="+", metavar="FILE", help="for a model trained on every writer: take the thresholds from a "
                        "cross-validation of its recipe (the `crossval embed` files), instead of from --val-writers"),
    "pairs": dict(type=int, help="number of synthetic pairs (default 256)"),
    "held_out_every": dict(type=int, metavar="N", help="score the real folders' held-out pages: every Nth by name (default "
                           "3, the recipes'; 1: every page, for a folder never trained on)"),
    "target_precision": dict(type=float, metavar="P", help="the lowest score threshold whose signature precision is at "
                             "least P, instead of the best F1"),
    "target_recall": dict(type=float, metavar="R", help="the highest score threshold whose signature recall is at least "
                          "R, instead of the best F1"),
}


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The module's evaluation contract: one JSON object with --json, else a line per field;
    ``--record``/``--record-as`` file it in the checkpoint's card."""
    from signver_torch.tasks import module_command

    command = module_command(args.module, "evaluate", args)
    if (args.record or args.record_as) and args.backend != "torch":
        raise SignVerError("--record and --record-as file torch's figures in the card: leave out --backend")
    args.data = data_argument(args.data, several=command.reads_several(get_task(args.module)))
    report = command.run(args)
    if args.record or args.record_as:
        from signver_torch.checkpoints import record_metrics
        from signver_torch.cli.data import synthesis_command

        record_metrics(args.module, args.checkpoint, report, "signver " + shlex.join(_without_record_flags(args.argv)),
                       args.record_as, synthesis_command(args.data) if args.record_as else None)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:<22} {value:.4f}" if isinstance(value, float) else f"{key:<22} {value}")
    return 0


def _without_record_flags(argv: Sequence[str]) -> list[str]:
    """The evaluate command as it measures, without the flags that only record it."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--record":
            continue
        elif arg == "--record-as":
            skip = True
        elif not arg.startswith("--record-as="):
            kept.append(arg)
    return kept


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit what a checkpoint calibrates (the module's own calibration) and write it into its card."""
    from signver_torch.tasks import module_command

    command = module_command(args.module, "calibrate", args)
    args.data = data_argument(args.data, several=command.reads_several(get_task(args.module)))
    print(command.run(args))
    return 0


def _summary(run: Any) -> str | None:
    """The first paragraph of a module command's docstring, without its leading ``signver ...``: name."""
    text = " ".join((run.__doc__ or "").strip().split("\n\n")[0].split())
    return text.split("``: ", 1)[-1].replace("``", "") or None


def _module_subcommands(parser: argparse.ArgumentParser, command: str, options: dict[str, dict[str, Any]],
                        shared: Any) -> None:
    """One subparser per module that offers ``command``: ``shared(sub, several)`` adds what every module
    reads, then the module's own ``options`` follow, and the other modules' ones, hidden."""
    offered = {name: getattr(task, command) for name, task in training_tasks().items() if getattr(task, command)}
    modules = parser.add_subparsers(dest="module", required=True)
    for name, entry in offered.items():
        summary = _summary(entry.run)
        sub = modules.add_parser(name, help=summary, description=summary)
        shared(sub, entry.reads_several(get_task(name)))
        others = {option for other in offered.values() for option in other.options} - set(entry.options)
        for dest, spec in options.items():
            if dest in entry.options or dest in others:
                hidden = {} if dest in entry.options else {"help": argparse.SUPPRESS}
                sub.add_argument(f"--{dest.replace('_', '-')}", **{**spec, **hidden})


def _data_option(sub: argparse.ArgumentParser, several: bool, help: str) -> None:
    """``--data``: always one or more folders; a module that reads one refuses several (``data_argument``)."""
    sub.add_argument("--data", required=True, nargs="+", metavar="DIR", help=help if several else "one data folder")


def _evaluate_shared(sub: argparse.ArgumentParser, several: bool) -> None:
    _data_option(sub, several, "one or several folders (CEDAR or writer folders; with several, writers are named by "
                 "source: cedar:33-40)")
    checkpoint_option(sub)
    sub.add_argument("--backend", default="torch", choices=("torch", *EXPORTED_BACKENDS),
                     help="what runs the network: torch (default, what cards record), or the checkpoint exported once "
                     "(as signver export, in the precision it checks) and run by onnxruntime or openvino")
    json_flag(sub, "print one JSON object on stdout")
    sub.add_argument("--record", action="store_true", help="write the report into the checkpoint's card as its "
                     "metrics, with this command (what shipped cards hold)")
    sub.add_argument("--record-as", metavar="NAME", help="write the report into the card's extra_metrics[NAME] "
                     "(e.g. synthetic: figures on data from signver synthesize), with this command and the data's")
    quiet_flag(sub)


def _calibrate_shared(sub: argparse.ArgumentParser, several: bool) -> None:
    _data_option(sub, several, "one or several folders: signatures (CEDAR or writer folders; several: writers named by "
                 "source) or labelled pages (YOLO, SignVerOD, COCO, or drawn by signver synthesize)")
    checkpoint_option(sub, "shipped name or .safetensors path (its card is rewritten)")
    quiet_flag(sub)


def add_evaluate(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="measure a checkpoint with the evaluation contract (one JSON object with --json)",
    )
    _module_subcommands(evaluate, "evaluate", EVALUATE_OPTIONS, _evaluate_shared)
    evaluate.set_defaults(handler=cmd_evaluate)


def add_calibrate(commands: argparse._SubParsersAction) -> None:
    calibrate = commands.add_parser(
        "calibrate",
        help="fit what a checkpoint calibrates on data it was not measured on (each module's own calibration: thresholds, "
        "tone curve), written into its card",
    )
    _module_subcommands(calibrate, "calibrate", CALIBRATE_OPTIONS, _calibrate_shared)
    calibrate.set_defaults(handler=cmd_calibrate)
