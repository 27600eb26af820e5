"""signver export and the onnxruntime backend: the three shipped networks exported, then compared with torch
on the fixture's real signatures, pages and synthetic dirty pairs (issue 34's tolerances)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'signver-torch[onnx]')")
pytest.importorskip("onnxscript", reason="onnxscript (torch.onnx's exporter) is not installed (pip install 'signver-torch[onnx]')")

from cli_runner import signver_process  # noqa: E402

from signver_torch import Cleaner, Detector, MetricExtractor, SignVer  # noqa: E402
from signver_torch.cleaner.data import EVAL_SEED, DirtyPairs  # noqa: E402
from signver_torch.data.ink import load_ink_maps  # noqa: E402
from signver_torch.data.signatures import discover_signatures  # noqa: E402
from signver_torch.errors import ExportError  # noqa: E402
from signver_torch.export import TOLERANCES, detection_agreement, export_module  # noqa: E402
from signver_torch.metrics import cleaning_metrics  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped detector, cleaner and extractor exported into one folder (each checked on the samples)."""
    folder = tmp_path_factory.mktemp("export")
    for module in ("extractor", "cleaner", "detector"):
        export_module(module, "default", folder, command=f"signver export {module} --out {folder}")
    return folder


def test_export_card_states_the_graph_its_source_and_the_check_it_passed(exported: Path) -> None:
    card = json.loads((exported / "extractor.json").read_text())
    source = json.loads((Path(__file__).parents[1] / "checkpoints" / "extractor" / "default.json").read_text())
    assert card["module"] == "extractor" and card["format"] == "onnx" and card["opset"] == 18
    assert card["input"]["dynamic_axes"] == {"0": {"name": "batch", "multiple": 1}}
    assert card["source"]["sha256"] == source["sha256"] and card["source"]["card"]["threshold"] == source["threshold"]
    assert card["check"]["passed"] and card["check"]["max_cosine_distance"] <= 1e-3 and len(card["check"]["images"]) == 6
    assert card["command"].startswith("signver export extractor")
    cleaner = json.loads((exported / "cleaner.json").read_text())
    assert cleaner["input"]["dynamic_axes"]["2"] == {"name": "height", "multiple": 16}
    assert json.loads((exported / "detector.json").read_text())["graph"]["selection"]["nms_thresh"] == 0.3


def test_extractor_embeddings_agree_with_torch(exported: Path, small_data: Path) -> None:
    scans = sorted((small_data / "cedar" / "full_org").glob("original_3*.png")) + sorted((small_data / "dutch").rglob("*.png"))[:8]
    torch_backend = MetricExtractor(device="cpu").load("default")
    onnx_backend = MetricExtractor(backend="onnxruntime").load(exported)
    first, second = torch_backend.extract([str(p) for p in scans]), onnx_backend.extract([str(p) for p in scans])
    assert len(scans) >= 16 and first.shape == second.shape == (len(scans), 256)
    assert float((1 - (first * second).sum(1)).max()) <= 1e-3
    assert onnx_backend.threshold == torch_backend.threshold and onnx_backend.sha256 == torch_backend.sha256
    assert onnx_backend.decision is not None  # the per-person rule's background bank travelled with the graph


def test_detections_agree_with_torch_on_real_pages(exported: Path, documents: Path) -> None:
    pages = sorted(str(p) for p in (documents / "images").iterdir())
    found = Detector(device="cpu").load("default").predict(pages)
    exported_found = Detector(backend="onnxruntime").load(exported).predict(pages)
    agreement = detection_agreement(found, exported_found)
    assert agreement["n_pages"] == 12 and agreement["n_boxes"] >= 9
    assert agreement["passed"] and agreement["min_iou"] >= 0.98, agreement


def test_cleaner_psnr_on_dirty_pairs_within_a_tenth_of_a_db(exported: Path, small_data: Path) -> None:
    records = discover_signatures(small_data / "cedar", "39")
    pairs = DirtyPairs(load_ink_maps(records, progress=False), 16, EVAL_SEED)
    dirty, clean = (torch.stack(column) for column in zip(*(pairs[i] for i in range(16))))
    psnr = {}
    for backend, source in (("torch", "default"), ("onnxruntime", exported)):
        cleaner = Cleaner(device="cpu", backend=backend).load(source)
        psnr[backend] = float(cleaning_metrics(torch.stack(cleaner.clean_pages(list(dirty))), clean)["psnr"].mean())
    assert abs(psnr["torch"] - psnr["onnxruntime"]) <= 0.1, psnr


def test_signver_verifies_a_page_the_same_on_both_backends(exported: Path, small_data: Path) -> None:
    page = small_data / "samples" / "signed_page.png"
    references = [str(small_data / "samples" / name) for name in ("original_2_11.png", "original_2_12.png")]
    reports = [SignVer(device="cpu").verify_document(page, references=references),
               SignVer(exported, exported, exported, backend="onnxruntime").verify_document(page, references=references)]
    assert len(reports[0].signatures) == len(reports[1].signatures) >= 1
    assert reports[0].verdict == reports[1].verdict
    for first, second in zip(reports[0].signatures, reports[1].signatures):
        assert first.verdict.match == second.verdict.match
        assert abs(first.verdict.distance - second.verdict.distance) <= 2e-3


def test_a_graph_that_fails_its_check_is_not_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TOLERANCES, "max_cosine_distance", -1.0)  # no graph can pass: the refusal path
    with pytest.raises(ExportError, match="disagrees with torch.*nothing written"):
        export_module("extractor", "default", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_modified_graph_is_refused_by_its_card(exported: Path, tmp_path: Path) -> None:
    for name in ("cleaner.onnx", "cleaner.json"):
        shutil.copy(exported / name, tmp_path / name)
    with open(tmp_path / "cleaner.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ExportError, match="cleaner.onnx: sha256 does not match"):
        Cleaner(backend="onnxruntime").load(tmp_path)


def test_export_command_errors_are_one_line() -> None:
    result = signver_process("export", "extractor", "--out", "unused", "--check-images", "no-such-scan.png")
    assert result.returncode == 1
    assert result.stderr.strip() == "signver: error: no-such-scan.png: check image not found"


def test_a_backend_not_installed_names_its_extra() -> None:
    code = ("import sys; sys.modules['onnxruntime'] = None\n"  # what Python does when the package is absent
            "from signver_torch import MetricExtractor\nMetricExtractor(backend='onnxruntime')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "BackendUnavailableError: backend 'onnxruntime' is not installed" in result.stderr
    assert "pip install 'signver-torch[onnx]'" in result.stderr
    with pytest.raises(Exception, match="unknown backend 'tensorrt'"):
        MetricExtractor(backend="tensorrt")


def test_embeddings_of_a_batch_do_not_depend_on_its_size(exported: Path, small_data: Path) -> None:
    """The dynamic batch axis: one signature alone and inside a batch of nine embed the same."""
    scans = [str(p) for p in sorted((small_data / "cedar" / "full_org").glob("original_35_*.png"))[:9]]
    extractor = MetricExtractor(backend="onnxruntime").load(exported)
    together, alone = extractor.extract(scans), extractor.extract(scans[:1])
    assert np.allclose(together[0], alone[0], atol=1e-5)
