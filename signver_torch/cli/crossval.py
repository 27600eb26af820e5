"""``signver crossval folds|embed|report|cards``: writer-grouped cross-validation of extractor recipes
(``extractor/crossval.py``; ``recipes/extractor/gpu_crossval.sh`` runs it end to end)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from signver_torch.errors import SignVerError


def cmd_folds(args: argparse.Namespace) -> int:
    """Print the folds as JSON: the writers of each and its recipe overrides."""
    from signver_torch.data.signatures import discover_signatures
    from signver_torch.extractor.crossval import fold_specs, writer_folds

    groups = writer_folds(discover_signatures(args.data), args.folds, args.fixed)
    print(json.dumps({"folds": groups, "overrides": fold_specs(groups)}, indent=1))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed every fold's writers with each fold model given, into one embeddings file."""
    from signver_torch.extractor.crossval import embed_folds, save_fold_embeddings

    groups = json.loads(args.folds.read_text())["folds"]
    numbers = None if args.fold is None else [args.fold - 1]
    embedded, records = embed_folds(args.data, groups, args.checkpoints, args.device, fold_numbers=numbers)
    save_fold_embeddings(args.out, embedded, records, groups, args.checkpoints, numbers)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Print the out-of-fold report of the embeddings files as JSON, with the checkpoints that made them."""
    from signver_torch.extractor.crossval import load_fold_embeddings, out_of_fold_report

    found = load_fold_embeddings(args.embeddings)
    result = out_of_fold_report(found["embeddings"], found["writers"], found["forged"], found["folds"], args.references)
    print(json.dumps({**result, "checkpoints": found["checkpoints"]}, indent=1))
    return 0


def cmd_cards(args: argparse.Namespace) -> int:
    """Print the summary of a run's fold cards as JSON; with --record-as, file it in a checkpoint's card."""
    from signver_torch.extractor.crossval import fold_cards_summary, record_summary

    summary = fold_cards_summary(args.run_dir)
    if args.record_as:
        if not (args.config and args.checkpoint):
            raise SignVerError("--record-as needs --config and --checkpoint")
        record_summary(summary, args.config, args.checkpoint, args.record_as, "signver " + shlex.join(args.argv))
    print(json.dumps(summary, indent=1))
    return 0


def add_crossval(commands: argparse._SubParsersAction) -> None:
    crossval = commands.add_parser(
        "crossval", help="writer-grouped cross-validation of extractor recipes: folds, embed, report, cards",
        description="Writer-grouped cross-validation of extractor recipes: split the writers into folds (folds), embed "
        "every signature with every fold's model (embed), pool each writer's scores from the model that never saw it "
        "(report), or summarise the fold models' own held-out figures (cards).")
    steps = crossval.add_subparsers(dest="step", metavar="STEP", required=True)
    folds = steps.add_parser("folds", help="print the folds (JSON: writers and recipe overrides per fold)")
    folds.add_argument("--data", nargs="+", required=True)
    folds.add_argument("--folds", type=int, default=5)
    folds.add_argument("--fixed", help="writers that make the last fold (the recipes' validation writers)")
    folds.set_defaults(handler=cmd_folds)
    embed = steps.add_parser("embed", help="embed every fold's writers with every fold's checkpoint")
    embed.add_argument("--data", nargs="+", required=True)
    embed.add_argument("--folds", type=Path, required=True, help="the JSON printed by `folds`")
    embed.add_argument("--checkpoints", nargs="+", required=True, help="one per fold, in fold order (one with --fold)")
    embed.add_argument("--fold", type=int, help="embed with this fold's model only (1-based): one file per fold, joined by report")
    embed.add_argument("--out", type=Path, required=True)
    embed.add_argument("--device")
    embed.set_defaults(handler=cmd_embed)
    report = steps.add_parser("report", help="the out-of-fold report of an embeddings file (JSON)")
    report.add_argument("embeddings", type=Path, nargs="+", help="one file of every fold's models, or one file per fold")
    report.add_argument("--references", type=int)
    report.set_defaults(handler=cmd_report)
    cards = steps.add_parser("cards", help="summarise the fold cards of a run folder (<config>/fold<N>/model.json), JSON")
    cards.add_argument("run_dir", type=Path)
    cards.add_argument("--record-as", metavar="NAME", help="write CONFIG's summary into CHECKPOINT's card, extra_metrics[NAME]")
    cards.add_argument("--config", help="with --record-as: the configuration whose last-fold model CHECKPOINT is")
    cards.add_argument("--checkpoint", help="with --record-as: the checkpoint (name or path)")
    cards.set_defaults(handler=cmd_cards)
