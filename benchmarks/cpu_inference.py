"""Inference on a plain CPU, every installed backend side by side in one run on the same inputs (issue 34).

    python benchmarks/cpu_inference.py [--repeats 3] [--startup-runs 3] [--int8 FOLDER] [--out benchmarks/results/<time>-cpu-inference.json]
    OMP_NUM_THREADS=1 python benchmarks/cpu_inference.py --out benchmarks/results/<time>-cpu-inference-1thread.json

Per backend (torch, and each exported backend whose runtime is installed: onnxruntime, OpenVINO; their
graphs are the shipped checkpoints exported once into the cache with the check of ``signver export``):

* ``extractor``: signatures per second from raw scan files (loading and preprocessing included), the
  fixture's CEDAR and Dutch scans in the facade's batches (``MetricExtractor``, its preprocessing in torch); under an
  exported backend also ``extractor_torch_free``, what ``SignVer`` and ``signver verify`` embed with there
  (``ExportedExtractor.extract``: numpy preprocessing on the host's threads, no torch);
* ``detector``: milliseconds per page (loading, letterbox, network, selection), the fixture's 12 real pages; under an
  exported backend also ``detector_torch_free`` (``ExportedDetector``, what ``SignVer`` detects with there);
* ``page``: a page end to end (``SignVer.verify_document``: detect, crop, clean, embed, decide) against
  three references that are new each call (the embedding cache emptied), p50 and p90 over the 12 pages;
* ``precision``: what each network computed in (the export card's: OpenVINO runs bf16 where its check passed);
* ``variants`` (``--int8 FOLDER``): the same row for ``backend="auto"`` with int8 exports of the extractor and the
  detector (``signver export extractor|detector --precision int8``: onnxruntime runs them; the cleaner is auto's
  choice, its ``precision`` says which), kept out of ``results`` so ``backend="auto"``'s order is unchanged;
* ``startup``: wall seconds of ``signver verify`` of two images in a fresh process, and of a bare
  ``python -c "import torch"``, alternated; medians.

Figures are medians over ``--repeats``; the record holds the host (cores, CPU, load average before and
after, ``OMP_NUM_THREADS``) and the versions. The table in benchmarks/README.md comes from these records, and the
newest ``*-cpu-inference.json``'s order by page p50, measured on every core (``OMP_NUM_THREADS`` unset, as the commands
run), is ``backend="auto"``'s (``runtime.MEASURED_ORDER``, checked by tests/test_export.py); one-thread runs are
filed as ``*-cpu-inference-1thread.json``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "data"
REFERENCES = REPO / "examples" / "references"


def backends() -> list[str]:
    """torch, then every exported backend whose runtime is installed."""
    from signver_torch.runtime import BACKENDS

    return [backend for backend, extra in BACKENDS.items() if extra is None or importlib.util.find_spec(backend)]


def median_of(repeats: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(repeats))


def extractor_rate(extractor: Any, scans: list[str], repeats: int) -> float:
    """Signatures per second of a loaded extractor's ``extract`` from the raw scan files (median over ``repeats``)."""
    extractor.extract(scans[:8])  # warm-up

    def once() -> float:
        started = time.perf_counter()
        extractor.extract(scans)
        return len(scans) / (time.perf_counter() - started)

    return median_of(repeats, once)


def per_page_ms(run: Callable[[str], Any], pages: list[str], repeats: int, label: str) -> list[float]:
    """Each page's median milliseconds over ``repeats``."""
    run(pages[0])  # warm-up
    times = {page: [] for page in pages}
    for _ in tqdm(range(repeats), desc=label, unit="round", file=sys.stderr, leave=False):
        for page in pages:
            started = time.perf_counter()
            run(page)
            times[page].append(1000 * (time.perf_counter() - started))
    return [statistics.median(values) for values in times.values()]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def startup_seconds(backend: str, runs: int, extractor: str = "default") -> dict[str, float]:
    verify = [sys.executable, "-m", "signver_torch", "verify", "--backend", backend, "--extractor", extractor, "--reference",
              str(REFERENCES / "writer39_1.png"), "--query", str(REFERENCES / "writer39_2.png")]
    baseline = [sys.executable, "-c", "import torch"]
    subprocess.run(verify, check=True, capture_output=True, cwd=REPO)  # file cache (and the onnx cache) warm
    timings: dict[str, list[float]] = {"verify": [], "import_torch": []}
    for _ in range(runs):
        for key, command in (("import_torch", baseline), ("verify", verify)):
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd=REPO)
            timings[key].append(time.perf_counter() - started)
    verify_s, torch_s = statistics.median(timings["verify"]), statistics.median(timings["import_torch"])
    return {"verify_seconds": round(verify_s, 3), "import_torch_seconds": round(torch_s, 3), "ratio": round(verify_s / torch_s, 3)}


def measure(backend: str, repeats: int, startup_runs: int, extractor: str = "default", detector: str = "default") -> dict[str, Any]:
    """One row of the record: ``backend`` for every network; the extractor's and detector's checkpoint or export folder."""
    from signver_torch import Detector, MetricExtractor, SignVer
    from signver_torch.extractor.exported import ExportedExtractor

    scans = sorted(str(p) for p in (FIXTURE / "cedar" / "full_org").glob("*.png")) + sorted(str(p) for p in (FIXTURE / "dutch").rglob("*.png"))
    pages = sorted(str(p) for p in (FIXTURE / "documents" / "images").iterdir())
    references = [str(REFERENCES / name) for name in sorted(os.listdir(REFERENCES))][:3]
    result: dict[str, Any] = {"backend": backend}
    result["extractor_signatures_per_second"] = round(extractor_rate(MetricExtractor(device="cpu", backend=backend).load(extractor),
                                                                     scans, repeats), 1)
    if backend != "torch":  # what SignVer embeds with there: the export without torch, scans decoded on the host's threads
        result["extractor_torch_free_signatures_per_second"] = round(extractor_rate(ExportedExtractor(backend).load(extractor),
                                                                                    scans, repeats), 1)
    result["extractor_scans"] = len(scans)
    finder = Detector(device="cpu", backend=backend).load(detector)
    detect = per_page_ms(lambda page: finder.predict([page]), pages, repeats, f"{backend} detector")
    result["detector_ms_per_page_p50"] = round(statistics.median(detect), 1)
    if backend != "torch":  # what SignVer detects with there: the export without torch
        from signver_torch.detector.exported import ExportedDetector

        free = ExportedDetector(backend).load(detector)
        result["detector_torch_free_ms_per_page_p50"] = round(statistics.median(
            per_page_ms(lambda page: free.predict([page]), pages, repeats, f"{backend} torch-free detector")), 1)
    signver = SignVer(device="cpu", backend=backend, extractor=extractor, detector=detector)
    signver.load_all()
    result["precision"] = {kind: model.precision for kind, model in signver._models.items()}  # OpenVINO: bf16 where it passed
    result["backends"] = {kind: model.backend for kind, model in signver._models.items()}  # auto: each module's choice

    def verify_page(page: str) -> None:
        signver._embedded.clear()  # three new references each call: nothing cached
        signver.verify_document(page, references=references)

    page_ms = per_page_ms(verify_page, pages, repeats, f"{backend} page")
    result["page_ms_p50"] = round(statistics.median(page_ms), 1)
    result["page_ms_p90"] = round(percentile(page_ms, 0.9), 1)
    result["pages"] = len(pages)
    result["references"] = [Path(p).name for p in references]
    result["startup"] = startup_seconds(backend, startup_runs, extractor)
    return result


def host() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"node": platform.node(), "cpu": model, "cores": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average": os.getloadavg()[0], "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of each measurement (default 3)")
    parser.add_argument("--startup-runs", type=int, default=3, help="fresh processes per start-up figure (default 3)")
    parser.add_argument("--out", type=Path, help="record file (default benchmarks/results/<date>T<time>-cpu-inference.json, "
                        "or -cpu-inference-<N>thread.json with OMP_NUM_THREADS=N)")
    parser.add_argument("--int8", metavar="FOLDER", help="also measure backend auto with the int8 exports of the extractor "
                        "and the detector in FOLDER (signver export extractor|detector --precision int8; they run in "
                        "onnxruntime, the cleaner in auto's choice), filed under 'variants' (not in auto's order)")
    args = parser.parse_args()
    import numpy
    import torch

    started = host()
    rows = [measure(backend, args.repeats, args.startup_runs) for backend in backends()]
    variants = ([{"variant": "int8 extractor and detector (onnxruntime), the cleaner by auto", "exports": args.int8,
                  **measure("auto", args.repeats, args.startup_runs, args.int8, args.int8)}] if args.int8 else [])
    torch_row = rows[0]
    for row in rows[1:] + variants:
        row["speedup_vs_torch"] = {
            "page": round(torch_row["page_ms_p50"] / row["page_ms_p50"], 2),
            "detector": round(torch_row["detector_ms_per_page_p50"] / row["detector_ms_per_page_p50"], 2),
            "detector_torch_free": round(torch_row["detector_ms_per_page_p50"] / row["detector_torch_free_ms_per_page_p50"], 2),
            "extractor": round(row["extractor_signatures_per_second"] / torch_row["extractor_signatures_per_second"], 2),
            "extractor_torch_free": round(row["extractor_torch_free_signatures_per_second"] / torch_row["extractor_signatures_per_second"], 2),
        }
    versions = {"torch": torch.__version__, "numpy": numpy.__version__}
    versions.update({row["backend"]: importlib.import_module(row["backend"]).__version__ for row in rows[1:]})
    record = {"command": "OMP_NUM_THREADS=" + str(os.environ.get("OMP_NUM_THREADS")) + " python " + " ".join(["benchmarks/cpu_inference.py", *sys.argv[1:]]),
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "host": started,
              "load_average_after": os.getloadavg()[0], "versions": versions, "repeats": args.repeats, "results": rows,
              **({"variants": variants} if variants else {})}
    threads = f"-{os.environ['OMP_NUM_THREADS']}thread" if os.environ.get("OMP_NUM_THREADS") else ""
    out = args.out or REPO / "benchmarks" / "results" / f"{datetime.datetime.now():%Y%m%dT%H%M}-cpu-inference{threads}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    for row in rows + variants:
        print(f"{row['backend']:<12} ({'/'.join(sorted(set(row['precision'].values())))}) page p50 {row['page_ms_p50']:7.1f} ms  detector {row['detector_ms_per_page_p50']:6.1f} ms/page "
              f"(torch-free {row.get('detector_torch_free_ms_per_page_p50', float('nan')):6.1f})  "
              f"extractor {row['extractor_signatures_per_second']:6.1f} sig/s (torch-free {row.get('extractor_torch_free_signatures_per_second', float('nan')):6.1f})  verify start-up {row['startup']['verify_seconds']:.2f} s "
              f"({row['startup']['ratio']:.2f}x import torch)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
