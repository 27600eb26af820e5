"""The ``signver`` command.

Every subcommand reports a user error as one line on stderr and a non-zero exit; ``--debug`` shows
the traceback instead. Results go to stdout (``--json`` where a tool will read them), progress to stderr.

Exit codes: 0 success (any verdict; also a closed stdout pipe), 1 a ``SignVerError`` (``signver: error:
...``) or an unexpected error (``signver: internal error: ...``), 2 a usage error, 130 interrupted.

Each command group's file holds its parser beside its handlers (``info.py``, ``train.py``,
``evaluate.py``, ``crossval.py``, ``data.py``, ``verify.py``, ``library.py``, ``serve.py``,
``benchmark.py``, ``export.py``); ``options.py`` holds the option sets several commands share. The handlers import
torch-heavy code only when they run.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from signver_torch.cli import benchmark, crossval, data, evaluate, export, info, library, serve, train, verify
from signver_torch.cli.options import EXIT_ERROR
from signver_torch.errors import SignVerError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: The commands in the order ``signver --help`` lists them; each adds its parser and handler.
COMMANDS = (
    info.add_info, info.add_doctor, train.add_train, evaluate.add_evaluate, evaluate.add_calibrate,
    data.add_synthesize, data.add_mine, data.add_detect, verify.add_enroll, verify.add_verify, verify.add_identify,
    verify.add_verify_document, library.add_index, serve.add_serve, benchmark.add_benchmark, data.add_clean,
    crossval.add_crossval, export.add_export,
)


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), like every other error of the command."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``signver`` parser: ``--debug`` and one subcommand per entry of :data:`COMMANDS`."""
    parser = _OneLineParser(
        prog="signver",
        description="Offline handwritten signature detection, cleaning, embedding and verification.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    commands.required = True
    for add in COMMANDS:
        add(commands)
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
