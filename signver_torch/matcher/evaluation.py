"""The gallery protocol: enrol K references per writer, then claim every other signature of theirs.

Per writer, the first ``k`` genuine signatures (by file name) are the references; the writer's other
genuine signatures are claims that should be accepted and the skilled forgeries of the writer claims
that should be rejected. Each decision rule of :mod:`signver_torch.matcher.decisions` scores every
claim; one global threshold per rule gives the EER, and at a rule's calibrated threshold the share of
genuine claims accepted and of forgeries rejected.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from signver_torch.errors import DataError
from signver_torch.matcher.decisions import RULES, Rule, fit_writer_model, rule_scores
from signver_torch.metrics import bootstrap_eer_interval, verification_metrics


def claim_scores(
    embeddings: np.ndarray,
    writers: Sequence[str],
    forged: Sequence[bool],
    k: int,
    background: np.ndarray | None,
    rules: Sequence[Rule] = RULES,
) -> dict[Rule, dict[str, list[np.ndarray]]]:
    """Per rule, per writer: the scores of genuine claims (``positive``) and of forgeries (``negative``).

    Writers with ``k`` genuine signatures or fewer have nothing left to claim and are skipped; the
    ``svm`` rule needs ``background`` (other writers' genuine embeddings) and is skipped without it.
    """
    writers, forged = np.asarray(writers), np.asarray(forged, bool)
    rules = [rule for rule in rules if rule != "svm" or background is not None]
    scores: dict[Rule, dict[str, list[np.ndarray]]] = {rule: {"positive": [], "negative": [], "writers": []} for rule in rules}
    for writer in dict.fromkeys(writers.tolist()):
        genuine = np.flatnonzero((writers == writer) & ~forged)
        fakes = np.flatnonzero((writers == writer) & forged)
        if len(genuine) <= k:
            continue
        references, claims = embeddings[genuine[:k]], embeddings[genuine[k:]]
        model = fit_writer_model(references, background) if "svm" in rules else None
        for rule in rules:
            scores[rule]["positive"].append(rule_scores(rule, claims, references, model))
            scores[rule]["negative"].append(rule_scores(rule, embeddings[fakes], references, model) if len(fakes) else np.empty(0))
            scores[rule]["writers"].append(writer)
    if not any(scores[rule]["writers"] for rule in rules):
        raise DataError(f"no writer has more than {k} genuine signatures: nothing to claim after enrolling {k} references")
    return scores


def rule_report(positive: list[np.ndarray], negative: list[np.ndarray], threshold: float | None, resamples: int = 1000) -> dict[str, Any]:
    """EER (with its bootstrap interval over writers) and, at ``threshold`` (default: the EER's),
    the shares of genuine claims accepted and of forgeries rejected."""
    pos = [torch.from_numpy(np.asarray(p, np.float64)) for p in positive]
    neg = [torch.from_numpy(np.asarray(n, np.float64)) for n in negative]
    metrics = verification_metrics(torch.cat(pos), torch.cat(neg), threshold)
    return {
        "eer": metrics["eer"],
        "eer_ci": list(bootstrap_eer_interval(pos, neg, resamples)) if resamples else None,
        "threshold": metrics["threshold"],
        "threshold_at_eer": metrics["threshold_at_eer"],
        "genuine_accepted": 1 - metrics["frr"],
        "forgeries_rejected": 1 - metrics["far"],
        "n_writers": len(positive),
        "n_genuine_claims": metrics["n_pos"],
        "n_forgery_claims": metrics["n_neg"],
    }


def protocol_report(
    scores: dict[Rule, dict[str, list[np.ndarray]]],
    thresholds: dict[str, float] | None = None,
    source_of: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per rule of ``scores`` (:func:`claim_scores`): its :func:`rule_report` at its threshold in
    ``thresholds`` (default: its EER's) and, with writers of several sources, the same per source."""
    thresholds, source_of = thresholds or {}, source_of or {}
    report = {}
    for rule, found in scores.items():
        entry = rule_report(found["positive"], found["negative"], thresholds.get(rule))
        entry["threshold_from"] = "checkpoint card" if rule in thresholds else "EER of these writers"
        names = sorted({source_of[w] for w in found["writers"]}) if source_of else []
        if len(names) > 1:
            entry["per_source"], unmeasured = {}, {}
            for name in names:
                positive = [p for p, w in zip(found["positive"], found["writers"]) if source_of[w] == name]
                negative = [n for n, w in zip(found["negative"], found["writers"]) if source_of[w] == name]
                if not sum(len(n) for n in negative):  # e.g. the Chinese set: impostors, but no forgeries to claim
                    unmeasured[name] = "no skilled forgeries: the gallery protocol claims forgeries to reject"
                    continue
                entry["per_source"][name] = rule_report(positive, negative, entry["threshold"])
            if unmeasured:
                entry["per_source_unmeasured"] = unmeasured
        report[rule] = entry
    return report


def reference_protocol(
    embeddings: np.ndarray,
    writers: Sequence[str],
    forged: Sequence[bool],
    k: int,
    background: np.ndarray | None,
    thresholds: dict[str, float] | None = None,
    sources: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The gallery protocol's report: per rule its EER and rates, and with ``sources`` (one per
    embedding) the same per source, at the same thresholds."""
    scores = claim_scores(embeddings, writers, forged, k, background)
    source_of = dict(zip(writers, sources)) if sources is not None else None
    return {"k": k, "rules": protocol_report(scores, thresholds, source_of)}


__all__ = ["claim_scores", "protocol_report", "reference_protocol", "rule_report"]
