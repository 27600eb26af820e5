"""The `signver` command as a user runs it: a real subprocess, real exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch


def signver(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "signver_torch", *args], capture_output=True, text=True, timeout=300
    )


def test_info_lists_versions_accelerators_and_checkpoints() -> None:
    result = signver("info")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["torch", torch.__version__.split("+")[0]] for line in lines)
    assert any(line.split()[:1] == ["lightning-habana"] and "not installed" not in line for line in lines)
    hpu_line = next(line for line in lines if line.strip().startswith("hpu "))
    assert "lightning-habana" in hpu_line and ("no HPU present" in hpu_line or "HPU(s) present" in hpu_line)
    shipped = next(line for line in lines if "extractor/default:" in line)
    assert "eer=" in shipped


def test_info_json_is_one_object() -> None:
    result = signver("info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert set(info["accelerators"]) == {"cpu", "gpu", "hpu"}
    assert info["packages"]["torch"] == torch.__version__.split("+")[0]
    [extractor] = [c for c in info["checkpoints"] if (c["module"], c["name"]) == ("extractor", "default")]
    assert 0 <= extractor["metrics"]["eer"] < 0.5


def test_debug_shows_the_traceback(tmp_path) -> None:
    result = signver("--debug", "clean", str(tmp_path / "missing.png"), "--out", str(tmp_path))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ImageLoadError" in result.stderr
    quiet = signver("clean", str(tmp_path / "missing.png"), "--out", str(tmp_path))
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr and "missing.png" in quiet.stderr


def test_usage_errors_exit_non_zero_in_one_line() -> None:
    for args in (["no-such-command"], ["info", "--no-such-flag"], ["evaluate", "extractor"]):
        result = signver(*args)
        assert result.returncode == 2, args
        assert result.stderr.count("\n") == 1, result.stderr
    assert "invalid choice" in signver("no-such-command").stderr
    assert "--data" in signver("evaluate", "extractor").stderr


def test_resume_without_run_dir_is_refused() -> None:
    result = signver("train", "extractor", "--resume")
    assert result.returncode == 1
    assert "--resume needs --run-dir" in result.stderr


def test_fine_tuning_the_cleaner_is_refused_before_any_training(tmp_path) -> None:
    result = signver("train", "cleaner", "--init", "default", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "extractor and the detector" in result.stderr
    assert not (tmp_path / "run").exists()


def test_error_pictures_are_refused_outside_the_detector(tmp_path) -> None:
    result = signver("evaluate", "extractor", "--data", str(tmp_path), "--errors", str(tmp_path / "errors"))
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "--errors is for the detector" in result.stderr and not (tmp_path / "errors").exists()
