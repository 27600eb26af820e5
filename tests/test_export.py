"""signver export and the exported backends (onnxruntime, OpenVINO): the three shipped networks exported in both
formats, then compared with torch on the fixture's real signatures, pages and synthetic dirty pairs (issue 34's
tolerances); backend="auto"'s choice."""

from __future__ import annotations

import importlib.util
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
from mock_devices import cuda_gpus  # noqa: E402

from signver_torch import Cleaner, Detector, MetricExtractor, SignVer  # noqa: E402
from signver_torch.cleaner.data import EVAL_SEED, DirtyPairs  # noqa: E402
from signver_torch.data.ink import load_ink_maps  # noqa: E402
from signver_torch.data.signatures import discover_signatures  # noqa: E402
from signver_torch.checkpoints import resolve_checkpoint, update_card  # noqa: E402
from signver_torch.errors import BlankSignatureError, CheckpointError, ExportError, ImageLoadError  # noqa: E402
from signver_torch.export import TOLERANCES, detection_agreement, export_module  # noqa: E402
from signver_torch.metrics import cleaning_metrics  # noqa: E402
from signver_torch.runtime import MEASURED_ORDER  # noqa: E402

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
#: The exported backends, each test run against torch under both (OpenVINO's skipped without its extra).
EXPORTED = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    not HAS_OPENVINO, reason="openvino is not installed (pip install 'signver-torch[openvino]')"))]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped detector, cleaner and extractor exported into one folder in both formats (each checked on the
    samples; OpenVINO's converted from the ONNX graph already there)."""
    folder = tmp_path_factory.mktemp("export")
    for fmt in ("onnx", "openvino") if HAS_OPENVINO else ("onnx",):
        for module in ("extractor", "cleaner", "detector"):
            export_module(module, "default", folder, fmt, command=f"signver export {module} --format {fmt} --out {folder}")
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


def test_openvino_card_states_its_conversion_and_check(exported: Path) -> None:
    if not HAS_OPENVINO:
        pytest.skip("openvino is not installed (pip install 'signver-torch[openvino]')")
    card = json.loads((exported / "detector.openvino.json").read_text())
    assert card["format"] == "openvino" and card["file"] == "detector.xml" and list(card["companions"]) == ["detector.bin"]
    assert "openvino.convert_model" in card["exporter"] and card["onnx"]["reused"] and "openvino" in card["versions"]
    assert card["onnx"]["sha256"] == json.loads((exported / "detector.json").read_text())["sha256"]
    assert card["check"]["passed"] and card["check"]["min_iou"] >= 0.98 and card["check"]["same_counts"]


def cpu_runs_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 on this CPU (AVX512-BF16 or AMX), as it reports it."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_openvino_runs_in_the_lowest_precision_that_passes_its_check(exported: Path) -> None:
    """``--precision auto``: bf16 where this CPU computes in it and the check passes; the card says which, and the
    compiled graph runs in it. ONNX graphs run fp32."""
    if not HAS_OPENVINO:
        pytest.skip("openvino is not installed (pip install 'signver-torch[openvino]')")
    from signver_torch.runtime import OpenVinoGraph

    expected = "bf16" if cpu_runs_bf16() else "fp32"
    for module in ("extractor", "cleaner", "detector"):
        card = json.loads((exported / f"{module}.openvino.json").read_text())
        assert card["precision"] == expected and card["check"]["passed"], module
        assert OpenVinoGraph(exported, module).executed_precision == expected
        if expected == "fp32":
            assert card["rejected_precisions"]["bf16"]["reason"] == "this CPU runs the graph in fp32"
        assert json.loads((exported / f"{module}.json").read_text())["precision"] == "fp32"


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install 'signver-torch[openvino]')")
def test_openvino_graphs_are_not_pinned_to_cores(exported: Path) -> None:
    """Pinned, the plugin puts the threads of every process on the same cores: two one-thread Ray actors then read
    no more pages than one (docs/scale.md). The compiled graph leaves placement to the OS."""
    import openvino.properties.hint as hints

    from signver_torch.runtime import OpenVinoGraph

    graph = OpenVinoGraph(exported, "detector", threads=1)
    assert graph.compiled.get_property(hints.enable_cpu_pinning) is False


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install 'signver-torch[openvino]')")
def test_an_fp32_openvino_export_matches_torch_to_float_rounding(tmp_path: Path, scans: list[str],
                                                                 torch_embeddings: np.ndarray) -> None:
    from signver_torch.runtime import OpenVinoGraph

    export_module("extractor", "default", tmp_path, "openvino", precision="fp32")
    assert json.loads((tmp_path / "extractor.openvino.json").read_text())["precision"] == "fp32"
    assert OpenVinoGraph(tmp_path, "extractor").executed_precision == "fp32"
    embeddings = MetricExtractor(backend="openvino").load(tmp_path).extract(scans)
    assert float((1 - (torch_embeddings * embeddings).sum(1)).max()) <= 1e-5


def test_a_precision_the_format_does_not_run_is_one_line() -> None:
    result = signver_process("export", "extractor", "--out", "unused", "--precision", "bf16")
    assert result.returncode == 1
    assert result.stderr.strip() == "signver: error: format 'onnx' runs in fp32, int8, not 'bf16'"


def test_int8_is_asked_for_by_name_with_calibration_inputs_and_not_for_the_cleaner() -> None:
    for args, error in ((("extractor",), "an int8 export needs calibration inputs (--calibration-data): signature scans "
                         "or pages like the ones it will see"),
                        (("cleaner", "--calibration-data", "tests/data/chinese"),
                         "int8 is measured for the extractor and detector only, not the cleaner; export the cleaner in fp32")):
        result = signver_process("export", *args, "--out", "unused", "--precision", "int8")
        assert result.returncode == 1 and result.stderr.strip() == f"signver: error: {error}"


def test_an_int8_extractor_keeps_the_verdicts_torch_is_sure_of(exported: Path, tmp_path: Path, small_data: Path, scans: list[str],
                                                                 torch_embeddings: np.ndarray) -> None:
    """Quantised on other writers' scans of the same sources, the graph is a quarter of the fp32 one; its embeddings
    stay within the int8 tolerance of torch's, and every pair verdict torch makes with a margin is kept."""
    sources, writers = [str(small_data / name) for name in ("cedar", "dutch", "chinese")], "cedar:1-2,dutch:040,dutch:044,chinese:070-072"
    result = signver_process("export", "extractor", "--precision", "int8", "--out", str(tmp_path), "--quiet",
                             "--calibration-data", *sources, "--calibration-writers", writers)
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "extractor.json").read_text())
    assert card["precision"] == "int8" and card["check"]["passed"] and card["check"]["tolerances"]["max_cosine_distance"] == 0.05
    assert card["quantization"]["n_inputs"] == len(discover_signatures(sources, writers)) == 66
    assert (tmp_path / "extractor.onnx").stat().st_size < 0.3 * (exported / "extractor.onnx").stat().st_size
    extractor = MetricExtractor(backend="onnxruntime").load(tmp_path)
    assert extractor.precision == "int8" and extractor.threshold == MetricExtractor().load("default").threshold
    embeddings = extractor.extract(scans)
    assert float((1 - (torch_embeddings * embeddings).sum(1)).max()) <= 0.05
    before, after = 1 - torch_embeddings @ torch_embeddings.T, 1 - embeddings @ embeddings.T
    sure = np.abs(before - extractor.threshold) > 0.05
    assert sure.sum() > len(scans) ** 2 / 2
    assert np.array_equal((before <= extractor.threshold)[sure], (after <= extractor.threshold)[sure])


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install 'signver-torch[openvino]')")
def test_a_cached_export_of_an_older_schema_is_exported_again(exported: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache written before precisions existed (schema 1, fp32) is replaced by this version's export."""
    monkeypatch.setenv("SIGNVER_CACHE", str(tmp_path / "cache"))
    card = json.loads((exported / "cleaner.openvino.json").read_text())
    old = {key: value for key, value in card.items() if key not in ("precision", "rejected_precisions")}
    cached = Cleaner(device="cpu")._cache_folder("default")
    cached.mkdir(parents=True)
    for name in ("cleaner.xml", "cleaner.bin"):
        shutil.copy(exported / name, cached / name)
    (cached / "cleaner.openvino.json").write_text(json.dumps({**old, "schema": 1}))
    cleaner = Cleaner(backend="openvino").load("default")
    assert cleaner.export_card["schema"] == 2 and cleaner.precision == card["precision"]
    assert json.loads((cached / "cleaner.openvino.json").read_text())["schema"] == 2


@pytest.fixture(scope="module")
def scans(small_data: Path) -> list[str]:
    return [str(p) for p in sorted((small_data / "cedar" / "full_org").glob("original_3*.png")) + sorted((small_data / "dutch").rglob("*.png"))[:8]]


@pytest.fixture(scope="module")
def torch_embeddings(scans: list[str]) -> np.ndarray:
    return MetricExtractor(device="cpu").load("default").extract(scans)


@pytest.mark.parametrize("backend", EXPORTED)
def test_extractor_embeddings_agree_with_torch(exported: Path, scans: list[str], torch_embeddings: np.ndarray, backend: str) -> None:
    extractor = MetricExtractor(backend=backend).load(exported)
    embeddings = extractor.extract(scans)
    assert len(scans) >= 16 and embeddings.shape == torch_embeddings.shape == (len(scans), 256)
    assert float((1 - (torch_embeddings * embeddings).sum(1)).max()) <= 1e-3
    reference = MetricExtractor(device="cpu").load("default")
    assert extractor.threshold == reference.threshold and extractor.sha256 == reference.sha256
    assert extractor.decision is not None  # the per-person rule's background bank travelled with the graph


@pytest.fixture(scope="module")
def pages(documents: Path) -> list[str]:
    return sorted(str(p) for p in (documents / "images").iterdir())


@pytest.fixture(scope="module")
def torch_detections(pages: list[str]) -> list[dict[str, torch.Tensor]]:
    return Detector(device="cpu").load("default").predict(pages)


@pytest.mark.parametrize("backend", EXPORTED)
def test_detections_agree_with_torch_on_real_pages(exported: Path, pages: list[str], torch_detections: list, backend: str) -> None:
    agreement = detection_agreement(torch_detections, Detector(backend=backend).load(exported).predict(pages))
    assert agreement["n_pages"] == 12 and agreement["n_boxes"] >= 9
    assert agreement["passed"] and agreement["min_iou"] >= 0.98, agreement


@pytest.fixture(scope="module")
def dirty_pairs(small_data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    records = discover_signatures(small_data / "cedar", "39")
    pairs = DirtyPairs(load_ink_maps(records, progress=False), 16, EVAL_SEED)
    dirty, clean = (torch.stack(column) for column in zip(*(pairs[i] for i in range(16))))
    return dirty, clean


def cleaned_psnr(backend: str, source: str | Path, pairs: tuple[torch.Tensor, torch.Tensor]) -> float:
    cleaner = Cleaner(device="cpu", backend=backend).load(source)
    return float(cleaning_metrics(torch.stack(cleaner.clean_pages(list(pairs[0]))), pairs[1])["psnr"].mean())


@pytest.fixture(scope="module")
def torch_psnr(dirty_pairs: tuple[torch.Tensor, torch.Tensor]) -> float:
    return cleaned_psnr("torch", "default", dirty_pairs)


@pytest.mark.parametrize("backend", EXPORTED)
def test_cleaner_psnr_on_dirty_pairs_within_a_tenth_of_a_db(exported: Path, dirty_pairs: tuple, torch_psnr: float, backend: str) -> None:
    psnr = cleaned_psnr(backend, exported, dirty_pairs)
    assert abs(torch_psnr - psnr) <= 0.1, (torch_psnr, psnr)


def test_signver_verifies_a_page_the_same_on_both_backends(exported: Path, small_data: Path) -> None:
    """The pipeline around the facades; OpenVINO's facades are compared with torch above."""
    page = small_data / "samples" / "signed_page.png"
    references = [str(small_data / "samples" / name) for name in ("original_2_11.png", "original_2_12.png")]
    reports = [SignVer(device="cpu").verify_document(page, references=references),
               SignVer(exported, exported, exported, backend="onnxruntime").verify_document(page, references=references)]
    assert len(reports[0].signatures) == len(reports[1].signatures) >= 1
    assert reports[0].verdict == reports[1].verdict
    for first, second in zip(reports[0].signatures, reports[1].signatures):
        assert first.verdict.match == second.verdict.match
        assert abs(first.verdict.distance - second.verdict.distance) <= 2e-3


def test_verifying_on_an_exported_backend_imports_no_torch(exported: Path, tmp_path: Path) -> None:
    """Under an exported backend, enrolling, verifying crops and verifying a page run the torch-free facades
    (``cards.TORCH_FREE_FACADES``): neither torch nor torchvision nor kornia is imported (torch alone is most of a bare
    command's start-up)."""
    models = f"'--backend', 'onnxruntime', '--extractor', {str(exported)!r}, '--cleaner', {str(exported)!r}"
    gallery = str(tmp_path / "gallery.db")
    script = ("import sys\n"
              "from signver_torch.cli import main\n"
              f"assert main(['enroll', {models}, '--gallery', {gallery!r}, '--person', 'w39', 'examples/references/writer39_1.png']) == 0\n"
              f"assert main(['verify', {models}, '--reference', 'examples/references/writer39_1.png',"
              " '--query', 'examples/references/writer39_2.png']) == 0\n"
              f"assert main(['verify', {models}, '--gallery', {gallery!r}, '--person', 'w39',"
              " '--query', 'examples/references/writer39_2.png']) == 0\n"
              f"assert main(['verify-document', 'tests/data/samples/signed_page.png', {models}, '--detector', {str(exported)!r},"
              " '--reference', 'examples/references/writer39_1.png']) == 0\n"
              "print(sorted({name.split('.')[0] for name in sys.modules} & {'torch', 'torchvision', 'kornia', 'lightning'}))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr
    assert "enrolled 1 signature(s)" in result.stdout and result.stdout.count(": MATCH:") == 2
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("backend", EXPORTED)
def test_the_torch_free_facades_agree_with_torch(exported: Path, scans: list[str], torch_embeddings: np.ndarray,
                                                 dirty_pairs: tuple, torch_psnr: float, backend: str) -> None:
    """``ExportedExtractor`` and ``ExportedCleaner`` (numpy host steps, no torch) within issue 34's tolerances of torch:
    embeddings 1e-3 cosine, the card's threshold and per-person rule; the cleaner 0.1 dB on the dirty pairs, and on real
    scans larger than its bound (downscaled, cleaned, scaled back) within 1e-3 of the torch-hosted export's pixels."""
    from signver_torch.cleaner.exported import ExportedCleaner
    from signver_torch.extractor.exported import ExportedExtractor
    from signver_torch.io import load_image_array

    extractor = ExportedExtractor(backend).load(exported)
    embeddings = extractor.extract(scans)
    assert embeddings.shape == torch_embeddings.shape and float((1 - (torch_embeddings * embeddings).sum(1)).max()) <= 1e-3
    np.testing.assert_allclose(extractor.embed([load_image_array(scan) for scan in scans]), embeddings, atol=1e-6)
    blank = np.full((1, 30, 40), 0.95, np.float32)
    with pytest.raises(BlankSignatureError, match=r"item\(s\) \[1\]"):
        extractor.embed([load_image_array(scans[0]), blank])
    with pytest.raises(ImageLoadError, match="no-such-scan.png"):
        extractor.extract([scans[0], "no-such-scan.png"])
    reference = MetricExtractor(device="cpu").load("default")
    assert extractor.threshold == reference.threshold and extractor.sha256 == reference.sha256 and extractor.backend == backend
    assert extractor.decision.rule == reference.decision.rule and np.array_equal(extractor.decision.background, reference.decision.background)
    cleaner = ExportedCleaner(backend).load(exported)
    cleaned = np.stack(cleaner.clean_pages([page.numpy() for page in dirty_pairs[0]]))
    psnr = float(cleaning_metrics(torch.from_numpy(cleaned), dirty_pairs[1])["psnr"].mean())
    assert abs(psnr - torch_psnr) <= 0.1, (psnr, torch_psnr)
    crops = [load_image_array(scan) for scan in scans[:4]]
    assert max(crops[0].shape) > cleaner.max_side
    hosted = Cleaner(backend=backend).load(exported).clean_pages(crops)
    for ours, theirs in zip(cleaner.clean_pages(crops), hosted):
        assert ours.shape == theirs.shape and float(np.abs(ours - theirs.numpy()).max()) <= 1e-3


@pytest.mark.parametrize("backend", EXPORTED)
def test_the_torch_free_detector_agrees_with_torch_on_real_pages(exported: Path, pages: list[str], torch_detections: list,
                                                                 backend: str) -> None:
    """``ExportedDetector``: pages letterboxed by PIL, the graph, the numpy selection; the boxes torch finds, IoU >= 0.98."""
    from signver_torch.detector.exported import ExportedDetector

    detector = ExportedDetector(backend).load(exported)
    found = detector.predict(pages)
    assert all(isinstance(page["boxes"], np.ndarray) for page in found)
    agreement = detection_agreement(torch_detections, [{key: torch.from_numpy(value) for key, value in page.items()} for page in found])
    assert agreement["n_pages"] == 12 and agreement["n_boxes"] >= 9
    assert agreement["passed"] and agreement["min_iou"] >= 0.98, agreement
    assert detector.score_threshold == Detector().load("default").score_threshold


def test_signver_runs_the_torch_free_facades_where_an_export_is_at_hand(exported: Path, small_data: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An export folder under an exported backend: the torch-free facades, and the verdict torch gives; a checkpoint under
    ``auto`` with nothing in the cache: the torch facades (``auto`` never exports)."""
    from signver_torch.cleaner.exported import ExportedCleaner
    from signver_torch.extractor.exported import ExportedExtractor

    references = [str(small_data / "samples" / name) for name in ("original_2_11.png", "original_2_12.png")]
    query = str(small_data / "samples" / "forgeries_2_12.png")
    free = SignVer(exported, exported, exported, backend="onnxruntime")
    verdict = free.verify_references(references, query)
    assert isinstance(free.cleaner, ExportedCleaner) and isinstance(free.extractor, ExportedExtractor)
    expected = SignVer(device="cpu").verify_references(references, query)
    assert verdict.match == expected.match and abs(verdict.distance - expected.distance) <= 2e-3
    monkeypatch.setenv("SIGNVER_CACHE", str(tmp_path / "empty-cache"))
    auto = SignVer(backend="auto")
    assert isinstance(auto.extractor, MetricExtractor) and auto.extractor.backend == "torch"


def test_a_graph_that_fails_its_check_is_not_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TOLERANCES, "max_cosine_distance", -1.0)  # no graph can pass: the refusal path
    with pytest.raises(ExportError, match="disagrees with torch.*nothing written"):
        export_module("extractor", "default", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("backend, files", [("onnxruntime", ("cleaner.onnx", "cleaner.json")),
                                             pytest.param("openvino", ("cleaner.bin", "cleaner.xml", "cleaner.openvino.json"),
                                                          marks=EXPORTED[1].marks)])
def test_a_modified_graph_is_refused_by_its_card(exported: Path, tmp_path: Path, backend: str, files: tuple[str, ...]) -> None:
    for name in files:
        shutil.copy(exported / name, tmp_path / name)
    with open(tmp_path / files[0], "ab") as handle:  # the graph, or OpenVINO's weights beside it
        handle.write(b"\0")
    with pytest.raises(ExportError, match=f"{files[0]}: sha256 does not match"):
        Cleaner(backend=backend).load(tmp_path)


def test_export_command_errors_are_one_line() -> None:
    result = signver_process("export", "extractor", "--out", "unused", "--check-images", "no-such-scan.png")
    assert result.returncode == 1
    assert result.stderr.strip() == "signver: error: no-such-scan.png: check image not found"


def test_a_backend_not_installed_names_its_extra(exported: Path) -> None:
    """Without the runtimes (what Python does when a package is absent): the facade's error names the extra, the
    command says so in one line, and ``auto`` runs torch on a checkpoint but refuses an export it cannot run."""
    code = ("import sys; sys.modules['onnxruntime'] = sys.modules['openvino'] = None\n"
            "from signver_torch import MetricExtractor\nfrom signver_torch.cli import main\n"
            "try:\n    MetricExtractor(backend='onnxruntime')\nexcept Exception as error:\n    print(f'{type(error).__name__}: {error}')\n"
            "print('auto runs', MetricExtractor(device='cpu', backend='auto').load('default').backend)\n"
            f"try:\n    MetricExtractor(backend='auto').load({str(exported)!r})\nexcept Exception as error:\n    print(error)\n"
            "sys.exit(main(['verify', '--backend', 'openvino', '--reference', 'a.png', '--query', 'b.png']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("BackendUnavailableError: backend 'onnxruntime' is not installed")
    assert lines[0].endswith("pip install 'signver-torch[onnx]'") and lines[1] == "auto runs torch"
    first = next(backend for backend in MEASURED_ORDER if backend in ({"onnxruntime", "openvino"} if HAS_OPENVINO else {"onnxruntime"}))
    assert lines[2].startswith(f"backend '{first}' is not installed")  # the export's first backend in the order
    assert result.returncode == 1 and result.stderr.strip().startswith("signver: error: backend 'openvino' is not installed")
    assert result.stderr.strip().endswith("pip install 'signver-torch[openvino]'") and len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(Exception, match="unknown backend 'tensorrt'"):
        MetricExtractor(backend="tensorrt")


def test_auto_runs_the_fastest_measured_backend_with_an_export_else_torch(exported: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNVER_CACHE", str(tmp_path / "cache"))
    assert MetricExtractor(device="cpu", backend="auto").load("default").backend == "torch"  # nothing exported: no export
    cached = MetricExtractor(device="cpu")._cache_folder("default")
    cached.mkdir(parents=True)
    for name in ("extractor.xml", "extractor.bin", "extractor.openvino.json", "extractor.background.safetensors"):
        (cached / name).symlink_to(exported / name)
    if HAS_OPENVINO:  # OpenVINO measured faster than torch per page (one thread): its export is run
        assert MetricExtractor(backend="auto").load("default").backend == "openvino"
    for name in ("extractor.onnx", "extractor.json"):
        (cached / name).symlink_to(exported / name)
    ready = {"onnxruntime", "openvino"} if HAS_OPENVINO else {"onnxruntime"}
    fastest = next(backend for backend in MEASURED_ORDER if backend in ready)  # both exported: the measured order decides
    auto = MetricExtractor(backend="auto").load("default")
    assert auto.backend == fastest and auto.weights == cached / ("extractor.onnx" if fastest == "onnxruntime" else "extractor.xml")
    assert MetricExtractor(backend="auto").load(exported).backend == fastest  # an export folder: its formats
    assert MetricExtractor(backend="auto").load(cached / "extractor.onnx").backend == "onnxruntime"  # the graph named
    if HAS_OPENVINO:
        assert MetricExtractor(backend="auto").load(cached / "extractor.xml").backend == "openvino"
    assert SignVer(exported, exported, exported, backend="auto").load_all()["detector"].backend == fastest


def shipped_copy(folder: Path) -> Path:
    """The shipped extractor's files (weights, card, background bank) copied into ``folder``: a checkpoint to recalibrate."""
    weights = resolve_checkpoint("extractor", "default").weights
    for path in weights.parent.glob(weights.name.removesuffix(".safetensors") + ".*"):
        shutil.copyfile(path, folder / path.name)
    return folder / weights.name


def test_auto_never_runs_an_export_of_another_card(exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache is keyed by the whole card: after a recalibration, auto runs torch with the new threshold, not the
    old graph with the old one; weights that no longer match their card are refused before any graph runs."""
    monkeypatch.setenv("SIGNVER_CACHE", str(tmp_path / "cache"))
    weights = shipped_copy(tmp_path)
    cached = MetricExtractor(device="cpu")._cache_folder(weights)
    cached.mkdir(parents=True)
    files, backend = ((("extractor.xml", "extractor.bin", "extractor.openvino.json"), "openvino") if HAS_OPENVINO
                      else (("extractor.onnx", "extractor.json"), "onnxruntime"))
    for name in (*files, "extractor.background.safetensors"):
        (cached / name).symlink_to(exported / name)
    expected = backend if MEASURED_ORDER.index(backend) < MEASURED_ORDER.index("torch") else "torch"
    assert MetricExtractor(backend="auto").load(weights).backend == expected  # the export, where measured faster
    new_threshold = MetricExtractor(device="cpu").load(weights).threshold + 0.05
    update_card(weights, threshold=new_threshold)
    assert MetricExtractor(device="cpu")._cache_folder(weights) != cached
    recalibrated = MetricExtractor(backend="auto").load(weights)
    assert recalibrated.backend == "torch" and recalibrated.threshold == pytest.approx(new_threshold)
    with open(weights, "r+b") as handle:  # one byte of the weights changed, the card left as it was
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    with pytest.raises(CheckpointError, match="sha256 does not match its card"):
        MetricExtractor(backend="auto").load(weights)


def test_auto_keeps_torch_on_an_accelerator(exported: Path) -> None:
    """Off the CPU auto is torch on the device asked for (or found), even where exports exist."""
    with cuda_gpus(1):
        extractor = MetricExtractor(backend="auto")
        assert extractor.device.type == "cuda"
        assert extractor._choose_backend(exported) == ("torch", None)
    ready = {"onnxruntime", "openvino"} if HAS_OPENVINO else {"onnxruntime"}
    fastest = next(backend for backend in MEASURED_ORDER if backend in ready)
    assert MetricExtractor(device="cpu", backend="auto")._choose_backend(exported)[0] == fastest


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install 'signver-torch[openvino]')")
def test_a_folder_never_mixes_exports_of_two_checkpoints(exported: Path, tmp_path: Path) -> None:
    """Exporting a recalibrated checkpoint in a second format beside the first checkpoint's graph is refused before
    anything is written: auto would run the old graph, and the background bank beside them is shared."""
    weights = shipped_copy(tmp_path)
    update_card(weights, threshold=0.123)
    folder = tmp_path / "export"
    folder.mkdir()
    for name in ("extractor.onnx", "extractor.json", "extractor.background.safetensors"):
        shutil.copyfile(exported / name, folder / name)
    before = sorted(path.name for path in folder.iterdir())
    with pytest.raises(ExportError, match="holds a onnx export of the extractor from another checkpoint or card"):
        export_module("extractor", weights, folder, "openvino")
    assert sorted(path.name for path in folder.iterdir()) == before


def test_an_exported_detector_keeps_the_score_threshold_of_its_source_card(exported: Path, tmp_path: Path,
                                                                          documents: Path) -> None:
    """The export card carries the checkpoint's card: a calibrated ``score_threshold`` is what the graph's detector
    keeps by default, an explicit one still wins."""
    for name in ("detector.onnx", "detector.json"):
        shutil.copyfile(exported / name, tmp_path / name)
    card = json.loads((tmp_path / "detector.json").read_text())
    card["source"]["card"]["score_threshold"] = 0.6
    (tmp_path / "detector.json").write_text(json.dumps(card))
    detector = Detector(backend="onnxruntime").load(tmp_path)
    assert detector.score_threshold == 0.6 and Detector(backend="onnxruntime").load(exported).score_threshold == 0.3
    pages = sorted((documents / "images").iterdir())[:2]
    for found, everything in zip(detector.predict(pages), detector.predict(pages, score_threshold=0.0)):
        assert torch.equal(found["scores"], everything["scores"][everything["scores"] >= 0.6])


def test_the_measured_order_is_the_newest_records() -> None:
    """``MEASURED_ORDER`` follows the newest cpu-inference record, measured on every core (as the commands run):
    page end to end p50, fastest first."""
    records = sorted((Path(__file__).parents[1] / "benchmarks" / "results").glob("*-cpu-inference.json"))
    record = json.loads(records[-1].read_text())
    assert record["host"]["omp_num_threads"] is None
    rows = record["results"]
    assert [row["backend"] for row in sorted(rows, key=lambda row: row["page_ms_p50"])] == list(MEASURED_ORDER)


@pytest.mark.parametrize("backend", EXPORTED)
def test_embeddings_of_a_batch_do_not_depend_on_its_size(exported: Path, small_data: Path, backend: str) -> None:
    """The dynamic batch axis: one signature alone and inside a batch of nine embed the same."""
    scans = [str(p) for p in sorted((small_data / "cedar" / "full_org").glob("original_35_*.png"))[:9]]
    extractor = MetricExtractor(backend=backend).load(exported)
    together, alone = extractor.extract(scans), extractor.extract(scans[:1])
    assert np.allclose(together[0], alone[0], atol=1e-5)


def test_evaluate_measures_an_exported_backend_and_names_it(exported: Path, small_data: Path, signver_cli) -> None:
    """``signver evaluate --backend``: the same protocol through the exported graph (an export folder as checkpoint),
    the report naming what ran; cards only ever record torch's figures."""
    command = ["evaluate", "extractor", "--data", str(small_data / "cedar"), "--writers", "35,36", "--json", "--quiet"]
    reference = json.loads(signver_cli(*command).stdout)
    graph = json.loads(signver_cli(*command, "--checkpoint", str(exported), "--backend", "onnxruntime").stdout)
    assert (reference["backend"], reference["precision"]) == ("torch", "fp32")
    assert (graph["backend"], graph["precision"]) == ("onnxruntime", "fp32")
    assert graph["checkpoint_sha256"] == reference["checkpoint_sha256"] and graph["n_pos"] == reference["n_pos"] > 0
    assert abs(graph["eer"] - reference["eer"]) <= 0.01
    result = signver_process(*command, "--backend", "onnxruntime", "--record")
    assert result.returncode == 1
    assert result.stderr.strip() == "signver: error: --record and --record-as file torch's figures in the card: leave out --backend"


def test_an_int8_detector_finds_the_boxes_torch_is_sure_of_on_real_pages(tmp_path: Path, small_data: Path, pages: list[str],
                                                                         torch_detections: list) -> None:
    """Calibrated on the fixture's training pages, convolutions in int8 but the class and box outputs in float: every
    box either side scores 0.1 above the threshold is found by the other with IoU >= 0.8."""
    result = signver_process("export", "detector", "--precision", "int8", "--out", str(tmp_path), "--quiet",
                             "--calibration-data", str(small_data / "documents"))
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "detector.json").read_text())
    assert card["precision"] == "int8" and card["check"]["passed"] and card["check"]["sure_score"] == pytest.approx(0.4)
    assert card["quantization"]["kept_float"] == "10 output convolutions" and card["quantization"]["n_inputs"] == 8
    detector = Detector(backend="onnxruntime").load(tmp_path)
    assert detector.precision == "int8"
    agreement = detection_agreement(torch_detections, detector.predict(pages), min_iou=0.8, sure=0.4)
    assert agreement["passed"] and agreement["n_boxes"] >= len(pages), agreement
