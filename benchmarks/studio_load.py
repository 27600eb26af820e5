"""Studio latency and throughput: ``POST /api/verify-document`` with the models warm.

    python benchmarks/studio_load.py --clients 1 8 --calls 20

Starts the Studio in this process (a real uvicorn server on a free port), runs one warm-up call, then
for each ``--clients`` count that many concurrent clients each make ``--calls`` calls on the example
contracts (genuine and forged, alternating) against the three example references. Reports p50/p95
latency and pages/s, checks that every call answered 200 with the verdict and distances of the
one-client run, and writes ``benchmarks/results/studio/studio-<host>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from signver_torch.studio.app import StudioSettings
from signver_torch.studio.server import running, verify_documents_under_load

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "examples" / "contract.png", ROOT / "examples" / "contract_forged.png"]
REFERENCES = sorted((ROOT / "examples" / "references").glob("*.png"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--calls", type=int, default=20, help="calls per client")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "studio"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, running(StudioSettings(library=str(Path(folder) / "library.db"))) as url:
        verify_documents_under_load(url, DOCUMENTS, REFERENCES, clients=1, calls=1)  # warm-up
        expected: dict[int, list] = {}
        rows, agree = [], True
        for clients in args.clients:
            result = verify_documents_under_load(url, DOCUMENTS, REFERENCES, clients=clients, calls=args.calls)
            for client in result.verdicts:
                for index, *verdict in client:
                    if verdict[0] is None:
                        continue
                    agree &= expected.setdefault(index, verdict) == verdict
            rows.append(result.summary())
            print(json.dumps(rows[-1]), flush=True)
    record = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpu_count": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "documents": [p.name for p in DOCUMENTS],
              "n_references": len(REFERENCES), "runs": rows, "verdicts_agree": agree}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"studio-{platform.node() or 'host'}.json").write_text(json.dumps(record, indent=1))
    print(f"verdicts agree across runs: {agree}")
    return 0 if agree and not any(row["errors"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
