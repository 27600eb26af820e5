"""Identify latency in a large gallery: exact torch search vs FAISS, same results.

    python benchmarks/gallery_latency.py --people 100000 --queries 50

Fills a gallery file with ``--people`` random unit embeddings (one per person, 256-d), then times
``Gallery.search`` for random queries with each backend (median and p90 over ``--queries``, after one
warm-up query that also loads the matrix) and checks both return the same top-5 people.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from signver_torch.matcher.gallery import Gallery, faiss_available


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.people, 256)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.standard_normal((args.queries, 256)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "large.db"
        with Gallery(path, "benchmark") as gallery:
            start = time.perf_counter()
            gallery.add([f"p{i:06d}" for i in range(args.people)], vectors, [(f"{i:064x}", "random") for i in range(args.people)])
            fill = time.perf_counter() - start
        results = {"people": args.people, "fill_seconds": round(fill, 2)}
        answers = {}
        for backend in ("torch", "faiss") if faiss_available() else ("torch",):
            with Gallery(path, "benchmark", create=False, backend=backend) as gallery:
                start = time.perf_counter()
                gallery.search(queries[0], 5)
                results[f"{backend}_first_query_ms"] = round((time.perf_counter() - start) * 1000, 1)
                times, found = [], []
                for query in queries:
                    start = time.perf_counter()
                    found.append([m.person for m in gallery.search(query, 5)])
                    times.append(time.perf_counter() - start)
                answers[backend] = found
                results[f"{backend}_median_ms"] = round(statistics.median(times) * 1000, 2)
                results[f"{backend}_p90_ms"] = round(statistics.quantiles(times, n=10)[-1] * 1000, 2)
        if "faiss" in answers:
            results["same_top5"] = answers["faiss"] == answers["torch"]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
