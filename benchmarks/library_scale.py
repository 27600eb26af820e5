"""The sharded library at scale: search latency and recall@10 of the IVF-PQ index with exact re-ranking on synthetic
embeddings (``search``), and pages/s of the Ray engine with 1 and 2 actors on the fixture's real pages (``index``).

    OMP_NUM_THREADS=1 python benchmarks/library_scale.py search --signatures 1000000 --out benchmarks/results/library_scale_search.json
    OMP_NUM_THREADS=1 python benchmarks/library_scale.py index --copies 4 --out benchmarks/results/library_scale_index.json

Search latency is that of ``library.rank_documents`` (what ``ShardLibrary.search`` runs: candidates, exact re-rank,
one hit per document) for one query at a time, each signature its own document; recall@10 compares the index's
ten signatures with exact search's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm


def search(args: argparse.Namespace) -> dict:
    import faiss

    from signver_torch.library import LibraryError, rank_documents
    from signver_torch.matcher.ann import ApproximateIndex, default_parameters, synthetic_embeddings
    from signver_torch.shard_library import SignatureKeys

    faiss.omp_set_num_threads(args.threads)
    started = time.perf_counter()
    matrix, queries = synthetic_embeddings(args.signatures // 10, 10, args.dimensions)
    queries = queries[np.random.default_rng(1).choice(len(queries), args.queries, replace=False)]
    generated = time.perf_counter() - started
    parameters = default_parameters(len(matrix))
    started = time.perf_counter()
    index = ApproximateIndex.train(matrix, parameters, progress=True)
    built = time.perf_counter() - started
    exact = np.concatenate([np.argsort(-(matrix @ block.T), axis=0)[:10].T
                            for block in np.array_split(queries, max(1, len(queries) // 50))])
    keys = SignatureKeys(np.arange(len(matrix)), _AnyName(), np.ones(len(matrix), np.int32), np.zeros((len(matrix), 4)))
    runs = []
    for nprobe in args.nprobe:
        index._index.nprobe = nprobe
        latencies, recalls = [], []
        for query, truth in tqdm(list(zip(queries, exact)), desc=f"nprobe {nprobe}", unit="query"):
            started = time.perf_counter()
            rank_documents(index, keys, query[None], 10, LibraryError)
            latencies.append(time.perf_counter() - started)
            order, _ = index.search(query[None], 10)
            recalls.append(len(set(order.tolist()) & set(truth.tolist())) / 10)
        runs.append({"nprobe": nprobe, "rerank": parameters["rerank"], "p50_ms": round(1000 * float(np.median(latencies)), 2),
                     "p95_ms": round(1000 * float(np.percentile(latencies, 95)), 2), "recall_at_10": round(float(np.mean(recalls)), 4)})
        print(json.dumps(runs[-1]))
    return {"signatures": len(matrix), "dimensions": args.dimensions, "queries": len(queries),
            "data": "synthetic_embeddings: 10 signatures around a random centre per writer (noise norm 0.75), a fresh "
                    "query per writer", "parameters": parameters, "faiss_threads": args.threads,
            "generate_s": round(generated, 1), "train_and_add_s": round(built, 1), "runs": runs}


class _AnyName(dict):
    """Every synthetic document's name."""

    def __missing__(self, key: int) -> str:
        return f"doc{key}"


def index(args: argparse.Namespace) -> dict:
    from PIL import Image

    from signver_torch.distributed import index as ray_index

    pages = sorted(Path(args.pages).glob("*.jpg"))
    runs = []
    for actors in args.actors:
        with tempfile.TemporaryDirectory() as folder:
            files = []
            for copy in range(args.copies):  # distinct bytes per copy: each is a new document
                for number, page in enumerate(pages):
                    image = Image.open(page).convert("L")
                    image.putpixel((copy, 0), 0)
                    files.append(Path(folder, f"c{copy}_{number}.png"))
                    image.save(files[-1])
            arrivals: list[float] = []
            started = time.perf_counter()
            results = ray_index(files, Path(folder, "library"), actors=actors, batch_size=args.batch_size, backend=args.backend,
                                progress=lambda _: arrivals.append(time.perf_counter()))
            total = time.perf_counter() - started
            n_pages = sum(result.n_pages for result in results)
            start = len(arrivals) // 4  # past start-up (Ray, model loading) and the first results
            steady = (len(arrivals) - 1 - start) / (arrivals[-1] - arrivals[start])
            runs.append({"actors": actors, "load_average_1min_after": round(os.getloadavg()[0], 2),
                         "documents": len(files), "pages": n_pages, "wall_s": round(total, 1),
                         "pages_per_s": round(n_pages / total, 3), "documents_per_s_after_first_quarter": round(steady, 3)})
            print(json.dumps(runs[-1]))
    return {"batch_size": args.batch_size, "backend": args.backend, "runs": runs, "speedup_wall": round(runs[-1]["pages_per_s"] / runs[0]["pages_per_s"], 3),
            "speedup_steady": round(runs[-1]["documents_per_s_after_first_quarter"] / runs[0]["documents_per_s_after_first_quarter"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    measure = commands.add_parser("search")
    measure.add_argument("--signatures", type=int, default=1_000_000)
    measure.add_argument("--dimensions", type=int, default=256)
    measure.add_argument("--queries", type=int, default=500)
    measure.add_argument("--nprobe", type=int, nargs="+", default=[64, 128, 256])
    measure.add_argument("--threads", type=int, default=1, help="FAISS threads")
    measure.add_argument("--out")
    indexing = commands.add_parser("index")
    indexing.add_argument("--pages", default=str(Path(__file__).parents[1] / "tests" / "data" / "documents" / "images"))
    indexing.add_argument("--copies", type=int, default=4)
    indexing.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    indexing.add_argument("--batch-size", type=int, default=1)
    indexing.add_argument("--backend", default="torch", help="the actors' backend (auto, torch, onnxruntime, openvino); "
                          "under an exported one with exports at hand, the actors run without torch")
    indexing.add_argument("--out")
    args = parser.parse_args()
    record = {"benchmark": f"library_scale {args.command}", "host": platform.node(), "cpus": os.cpu_count(),
              "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(search(args) if args.command == "search" else index(args))}
    print(json.dumps(record, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
