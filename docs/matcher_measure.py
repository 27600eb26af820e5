"""Measure how reference distances combine (mean vs min) and what the cleaner changes, on held-out writers.

    python docs/matcher_measure.py --data ../shared/data/cedar --writers 33-40 --references 5

Per writer: the first ``--references`` genuine signatures are enrolled; every other genuine signature
is a positive query and every skilled forgery a negative one. Prints, for each way of combining the
distances to the references and with and without the cleaner, the EER and the FAR/FRR at the
extractor's calibrated threshold (one JSON object per line).
"""

from __future__ import annotations

import argparse
import json

import torch

from signver_torch.data.signatures import discover_signatures, writer_split
from signver_torch.metrics import verification_metrics
from signver_torch.pipeline import SignVer


def measure(data: str, writers: str, references: int, clean: bool) -> list[dict]:
    [records] = writer_split(discover_signatures(data), writers)
    signver = SignVer(clean=clean)
    embeddings, _ = signver.embed([record.path for record in records])
    vectors = torch.from_numpy(embeddings)
    rows = []
    for combine in ("mean", "min"):
        positives, negatives = [], []
        for writer in sorted({r.writer for r in records}):
            genuine = [i for i, r in enumerate(records) if r.writer == writer and not r.forged]
            forged = [i for i, r in enumerate(records) if r.writer == writer and r.forged]
            enrolled, queries = genuine[:references], genuine[references:]
            distances = 1 - vectors[queries + forged] @ vectors[enrolled].T
            combined = distances.mean(1) if combine == "mean" else distances.min(1).values
            positives.append(combined[: len(queries)])
            negatives.append(combined[len(queries):])
        report = verification_metrics(torch.cat(positives), torch.cat(negatives), signver.extractor.threshold)
        rows.append({"combine": combine, "cleaner": clean, "references": references, "eer": report["eer"],
                     "far": report["far"], "frr": report["frr"], "threshold": signver.extractor.threshold,
                     "n_pos": report["n_pos"], "n_neg": report["n_neg"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/cedar")
    parser.add_argument("--writers", default="33-40")
    parser.add_argument("--references", type=int, default=5)
    args = parser.parse_args()
    for clean in (False, True):
        for row in measure(args.data, args.writers, args.references, clean):
            print(json.dumps(row))


if __name__ == "__main__":
    main()
