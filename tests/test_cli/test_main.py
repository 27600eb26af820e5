"""The `signver` command's contract (``cli/__init__.py``) as a user meets it: real exit codes and one-line
errors of a real subprocess, ``--debug`` tracebacks, a start that imports no training library; ``info``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cli_runner import REPO_ROOT, signver_process


def test_info_lists_versions_accelerators_and_checkpoints(signver_cli) -> None:
    result = signver_cli("info")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["torch", torch.__version__.split("+")[0]] for line in lines)
    assert any(line.split()[:1] == ["lightning-habana"] and "not installed" not in line for line in lines)
    hpu_line = next(line for line in lines if line.strip().startswith("hpu "))
    assert "lightning-habana" in hpu_line and ("no HPU present" in hpu_line or "HPU(s) present" in hpu_line)
    shipped = next(line for line in lines if "extractor/default:" in line)
    assert "eer=" in shipped


def test_info_json_is_one_object(signver_cli) -> None:
    result = signver_cli("info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert set(info["accelerators"]) == {"cpu", "gpu", "hpu"}
    assert info["packages"]["torch"] == torch.__version__.split("+")[0]
    [extractor] = [c for c in info["checkpoints"] if (c["module"], c["name"]) == ("extractor", "default")]
    assert 0 <= extractor["metrics"]["eer"] < 0.5


def test_debug_shows_the_traceback(tmp_path) -> None:
    result = signver_process("--debug", "clean", str(tmp_path / "missing.png"), "--out", str(tmp_path))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ImageLoadError" in result.stderr
    quiet = signver_process("clean", str(tmp_path / "missing.png"), "--out", str(tmp_path))
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr and "missing.png" in quiet.stderr


def test_usage_errors_exit_non_zero_in_one_line() -> None:
    for args in (["no-such-command"], ["info", "--no-such-flag"], ["evaluate", "extractor"]):
        result = signver_process(*args)
        assert result.returncode == 2, args
        assert result.stderr.count("\n") == 1, result.stderr
    assert "invalid choice" in signver_process("no-such-command").stderr
    assert "--data" in signver_process("evaluate", "extractor").stderr


def test_resume_without_run_dir_is_refused() -> None:
    result = signver_process("train", "extractor", "--resume")
    assert result.returncode == 1
    assert "--resume needs --run-dir" in result.stderr


def test_fine_tuning_the_cleaner_is_refused_before_any_training(tmp_path) -> None:
    result = signver_process("train", "cleaner", "--init", "default", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "available for the detector and the extractor, not the cleaner" in result.stderr
    assert not (tmp_path / "run").exists()


def test_error_pictures_are_refused_outside_the_detector(tmp_path) -> None:
    result = signver_process("evaluate", "extractor", "--data", str(tmp_path), "--errors", str(tmp_path / "errors"))
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "--errors is for the detector" in result.stderr and not (tmp_path / "errors").exists()


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["detect", "{tmp}/missing.png", "--out", "{tmp}/out"], "missing.png"),
        (["detect", "{tmp}/not-an-image.png", "--out", "{tmp}/out"], "not-an-image.png"),
        (["identify", "--gallery", "{tmp}/none.db", "--query", "{tmp}/not-an-image.png"], "none.db"),
        (["synthesize", "pages", "--data", "{tmp}/nothing", "--out", "{tmp}/pages"], "nothing"),
        (["synthesize", "pages", "--data", "{tmp}", "--pages", "0", "--out", "{tmp}/pages"], "--pages must be at least 1"),
        (["synthesize", "pages", "--out", "{tmp}/pages"], "needs --data"),
        (["synthesize", "writers", "--count", "0", "--out", "{tmp}/pages"], "writers >= 1"),
        (["clean", "{tmp}/not-an-image.png", "--out", "{tmp}/out"], "not-an-image.png"),
        (["benchmark", "--accelerator", "hpu", "--models", "cleaner", "--out", "{tmp}/bench"], "hpu"),
        (["benchmark", "--steps", "1", "--models", "cleaner", "--out", "{tmp}/bench"], "steps"),
        (["verify", "--reference", "{tmp}/not-an-image.png", "--query", "{tmp}/missing.png"], "not-an-image.png"),
        (["verify", "--gallery", "{tmp}/none.db", "--person", "ann", "--query", "{tmp}/missing.png"], "none.db"),
    ],
    ids=["detect-missing", "detect-garbage", "identify-no-gallery", "synthesize-no-data", "synthesize-no-pages",
         "synthesize-pages-without-data", "synthesize-no-writers",
         "clean-garbage", "benchmark-no-hpu", "benchmark-steps", "verify-missing", "verify-no-gallery"],
)
def test_each_command_reports_bad_input_in_one_line(tmp_path, args: list[str], names: str) -> None:
    (tmp_path / "not-an-image.png").write_text("this is text")
    result = signver_process(*(arg.format(tmp=tmp_path) for arg in args))
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("signver: error:") and names in line and "Traceback" not in result.stderr, line
    assert not (tmp_path / "out").exists() and not (tmp_path / "pages").exists()


def test_inference_imports_no_training_libraries() -> None:
    """Loading and running the three facades and the pipeline's verify needs neither Lightning nor timm
    nor torchmetrics: they cost seconds at every start of the command."""
    script = """
import sys
import numpy as np
from signver_torch import Cleaner, Detector, MetricExtractor, SignVer
page = np.ones((200, 300, 3), np.float32); page[80:120, 50:250] = 0.1
Detector(device="cpu").load("default").predict([page])
Cleaner(device="cpu").load("default").clean(page[None, :, :, 0])
MetricExtractor(device="cpu").load("default").extract(page[None, 60:140])
SignVer(device="cpu").verify_references(["examples/references/writer39_1.png"], "examples/references/writer39_2.png")
from signver_torch.cli import main
assert main(["verify", "--reference", "examples/references/writer39_1.png", "--query", "examples/references/writer39_2.png",
             "examples/references/writer39_3.png", "--json"]) == 0
print(sorted({name.split(".")[0] for name in sys.modules} & {"lightning", "lightning_habana", "timm", "torchmetrics",
                                                            "pytorch_metric_learning", "scipy", "sklearn"}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
