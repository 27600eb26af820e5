"""The ``signver`` command.

Every subcommand reports a user error as one line on stderr and a non-zero exit; ``--debug`` shows
the traceback instead. Results go to stdout (``--json`` where a tool will read them), progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
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
    "train": "train or fine-tune a model from a recipe",
    "evaluate": "measure a checkpoint (EER, mAP, PSNR) with the evaluation contract",
    "benchmark": "measure train and inference throughput on cpu, gpu or hpu",
}


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
        detail = entry.get("error") or ", ".join(f"{k}={v}" for k, v in entry["metrics"].items()) or "no metrics"
        print(f"  {entry['module']}/{entry['name']}: {detail}")
    return 0


def _planned(command: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise SignVerError(
            f"`signver {command}` is not available in this version yet ({PLANNED_COMMANDS[command]}); "
            "run `signver info` to see what is installed"
        )

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="signver",
        description="Offline handwritten signature detection, cleaning, embedding and verification.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    info = commands.add_parser("info", help="versions, accelerators present and shipped checkpoints")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=cmd_info)

    for command, summary in PLANNED_COMMANDS.items():
        planned = commands.add_parser(command, help=summary, description=summary)
        planned.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        planned.set_defaults(handler=_planned(command))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``signver`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("signver: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SignVerError as error:
        if args.debug:
            raise
        print(f"signver: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:  # an unexpected failure still gets one line, with a way to see more
        if args.debug:
            raise
        print(
            f"signver: internal error: {type(error).__name__}: {error} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
