"""Start-up cost of the command: one ``signver verify`` of two images against a bare ``import torch, torchvision``.

    python benchmarks/startup.py [--runs 5] [--out benchmarks/results/startup-cpu.json]

Both commands run in fresh processes, alternated so that both see the same machine load; the report
gives the median wall time of each and their ratio (the target is at most 1.35).
It also lists which heavy libraries the verify process imported (none should be: Lightning, timm and
torchmetrics belong to training and evaluation).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCES = REPO / "examples" / "references"
BASELINE = [sys.executable, "-c", "import torch, torchvision"]
VERIFY = [sys.executable, "-m", "signver_torch", "verify", "--reference", str(REFERENCES / "writer39_1.png"),
          "--query", str(REFERENCES / "writer39_2.png")]
#: Libraries that inference should not pay for.
HEAVY = ("lightning", "lightning_habana", "timm", "torchmetrics", "scipy", "pytorch_metric_learning", "sklearn")


def timed(command: list[str]) -> float:
    """Wall seconds of one fresh process."""
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - start


def imported_heavy_libraries() -> list[str]:
    """The libraries of :data:`HEAVY` that one verify call imports."""
    probe = (f"import sys; from signver_torch.cli import main; main({VERIFY[3:]!r}); "
             f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))")
    result = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=REPO)
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--out", type=Path, help="write the report as JSON here too")
    args = parser.parse_args()
    subprocess.run(VERIFY, check=True, capture_output=True, cwd=REPO)  # warm the file cache once
    baseline, verify = [], []
    for run in range(args.runs):
        baseline.append(timed(BASELINE))
        verify.append(timed(VERIFY))
        print(f"run {run + 1}/{args.runs}: import torch, torchvision {baseline[-1]:.2f} s; signver verify {verify[-1]:.2f} s",
              file=sys.stderr)
    report = {
        "baseline_command": "python -c 'import torch, torchvision'",
        "verify_command": "signver verify --reference examples/references/writer39_1.png --query examples/references/writer39_2.png",
        "runs": args.runs,
        "baseline_seconds_median": round(statistics.median(baseline), 3),
        "verify_seconds_median": round(statistics.median(verify), 3),
        "ratio": round(statistics.median(verify) / statistics.median(baseline), 3),
        "heavy_libraries_imported_by_verify": imported_heavy_libraries(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
