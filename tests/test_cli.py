"""The `signver` command as a user runs it: a real subprocess, real exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def signver(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "signver_torch", *args], capture_output=True, text=True, timeout=300
    )


def test_info_lists_versions_accelerators_and_checkpoints() -> None:
    result = signver("info")
    assert result.returncode == 0, result.stderr
    for expected in ("signver-torch", "torch", "lightning-habana", "accelerators:", "shipped checkpoints:"):
        assert expected in result.stdout
    assert "installed, no HPU present" in result.stdout


def test_info_json_is_one_object() -> None:
    result = signver("info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert set(info["accelerators"]) == {"cpu", "gpu", "hpu"}
    assert info["packages"]["torch"]
    assert isinstance(info["checkpoints"], list)


@pytest.mark.parametrize("command", ["detect", "clean", "verify", "enroll", "identify", "benchmark"])
def test_every_planned_command_exists_and_fails_in_one_line(command: str) -> None:
    result = signver(command, "anything")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"signver: error: `signver {command}`")


def test_debug_shows_the_traceback() -> None:
    result = signver("--debug", "detect", "page.png")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "SignVerError" in result.stderr


def test_usage_errors_exit_non_zero() -> None:
    result = signver("no-such-command")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
