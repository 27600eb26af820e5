"""The shipped checkpoints and recipes travel inside a built wheel and load from it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_wheel_carries_and_loads_the_shipped_extractor(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = tmp_path.glob("signver_torch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "signver_torch/_shipped/extractor/default.safetensors",
        "signver_torch/_shipped/extractor/default.json",
        "signver_torch/_recipes/extractor/cpu.yaml",
        "signver_torch/_recipes/extractor/finetune.yaml",
    ):
        assert required in names, required

    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)  # a wheel is a zip laid out as site-packages
    probe = (
        "import signver_torch, numpy as np;"
        "from signver_torch.training import recipes_root;"
        "e = signver_torch.MetricExtractor().load('default');"
        "print(signver_torch.__file__, recipes_root(), e.extract(np.ones((1, 64, 64)) - np.eye(64)[None] ).shape)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    module_file, recipes = result.stdout.split()[:2]
    assert module_file.startswith(str(target)), "imported from the wheel, not the checkout"
    assert recipes.startswith(str(target))
    assert result.stdout.strip().endswith("(1, 256)")
