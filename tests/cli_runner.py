"""The two ways a test runs the ``signver`` command.

* In this process (the ``signver_cli`` fixture of ``conftest.py``): ``signver_torch.cli.main`` with
  stdout and stderr captured. For calls expected to succeed whose test reads stdout, the JSON or the
  files written: no interpreter start, no second import of torch.
* In a subprocess (:func:`signver_process`): ``python -m signver_torch`` as a user runs it. For what only
  a real process shows: a non-zero exit code and the one line on stderr (nothing else printed there),
  ``--debug`` tracebacks, kills, which libraries a fresh interpreter imports, and the commands that run a
  Lightning Trainer (``train``, ``benchmark``: a Trainer sets process-wide state, the run folder's environment
  variable, seeds, Lightning's logging).

Both answer a :class:`subprocess.CompletedProcess` (``returncode``, ``stdout``, ``stderr``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def signver_process(*args: str, cwd: Path = REPO_ROOT, env: Mapping[str, str] | None = None,
                    timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m signver_torch ARGS`` in a fresh interpreter, run from ``cwd`` (the repository root)."""
    return subprocess.run([sys.executable, "-m", "signver_torch", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=None if env is None else dict(env))


def signver_in_process(capsys: pytest.CaptureFixture, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``signver ARGS`` through :func:`signver_torch.cli.main` in this process, from ``cwd`` if given
    (the working directory is restored afterwards)."""
    from signver_torch.cli import main

    capsys.readouterr()  # what the test printed before is not the command's
    previous = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        try:
            code = main(list(args))
        except SystemExit as exit:  # argparse's usage errors and --help
            code = exit.code if isinstance(exit.code, int) else 1
    finally:
        os.chdir(previous)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["signver", *args], code, out, err)
