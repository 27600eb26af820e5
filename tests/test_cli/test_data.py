"""The data commands (``cli/data.py``): ``synthesize pages`` and ``writers``, ``detect`` and ``clean`` write what they say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from signver_torch.cli.data import synthesis_command
from signver_torch.data.detection import parse_class_map, read_yolo
from signver_torch.data.signatures import discover_signatures
from signver_torch.detector.data import YOLO_CLASS_MAP

from cli_runner import signver_process


def test_synthesize_command_writes_pages_the_evaluate_command_reads(signver_cli, small_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "pages"
    result = signver_cli("synthesize", "pages", "--data", str(small_data / "cedar"), "--writers", "39", "--pages", "2",
                         "--size", "256", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"--data {out} --class-map {YOLO_CLASS_MAP}" in result.stdout
    assert len(read_yolo(out, parse_class_map(YOLO_CLASS_MAP))) == 2


def test_synthesize_writers_command_writes_writer_folders(signver_cli, tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    result = signver_cli("synthesize", "writers", "--count", "3", "--genuine", "2", "--forged", "1", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    records = discover_signatures(out)
    assert len(records) == 9 and sum(r.forged for r in records) == 3 and all(r.text for r in records)
    assert synthesis_command(str(out)).startswith("signver synthesize writers --count 3")  # what cards name as the data's command


def test_detect_command_writes_pictures_and_json(signver_cli, small_checkpoint: Path, small_data: Path, tmp_path: Path) -> None:
    page = small_data / "samples" / "signdoc.jpg"
    result = signver_cli("detect", str(page), "--out", str(tmp_path), "--summary", "--checkpoint", str(small_checkpoint),
                         "--threshold", "0.0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{page}: signed=")
    record = json.loads((tmp_path / "signdoc.json").read_text())
    assert record["size"] == list(Image.open(page).size) and "summary" in record
    assert Image.open(tmp_path / "signdoc.png").size == Image.open(page).size


def test_clean_command_writes_pngs(signver_cli, small_data: Path, tmp_path: Path) -> None:
    source = small_data / "samples" / "test_lines.png"
    result = signver_cli("clean", str(source), "--out", str(tmp_path), "--quiet")
    assert result.returncode == 0, result.stderr
    written = tmp_path / "test_lines.png"
    assert result.stdout.strip() == str(written)
    assert Image.open(written).size == Image.open(source).size
    bad = signver_process("clean", str(tmp_path / "nothing.png"), "--out", str(tmp_path))
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "nothing.png" in bad.stderr


def test_clean_command_max_side(signver_cli, small_data: Path, tmp_path: Path) -> None:
    source = small_data / "samples" / "test_lines.png"  # 594 px wide: above the pipeline's bound of 384
    written = {}
    for option in ("0", "384"):
        result = signver_cli("clean", str(source), "--out", str(tmp_path / option), "--max-side", option, "--quiet")
        assert result.returncode == 0, result.stderr
        written[option] = np.asarray(Image.open(tmp_path / option / "test_lines.png"), np.float32)
    default = signver_cli("clean", str(source), "--out", str(tmp_path / "default"), "--quiet")
    assert default.returncode == 0, default.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "default" / "test_lines.png"), np.float32), written["384"])
    assert written["0"].shape == written["384"].shape and not np.array_equal(written["0"], written["384"])
    for wrong in ("-3", "5", "big"):  # refused as the command line is read, before any image
        bad = signver_process("clean", str(source), "--out", str(tmp_path), "--max-side", wrong)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--max-side" in bad.stderr
