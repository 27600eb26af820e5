"""The gallery protocol: enrol K references per writer, then claim every other signature of theirs.

Per writer, the first ``k`` genuine signatures (by file name) are the references; the writer's other
genuine signatures are claims that should be accepted and the skilled forgeries of the writer claims
that should be rejected. A writer without forgeries whose files declare their texts (``n<NN>_<medium>``,
the Chinese set) is enrolled once per text instead: the first ``k`` signatures of that text are the
references, the others of it are the genuine claims, and the other writers' signatures of the same text
are the impostors to reject (the same-text protocol of docs/design.md, run through the gallery path).
Each decision rule of :mod:`signver_torch.matcher.decisions` scores every claim; one global threshold
per rule gives the EER, and at a rule's calibrated threshold the share of genuine claims accepted and
of impostors rejected.
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
    texts: Sequence[str | None] | None = None,
) -> dict[Rule, dict[str, list[Any]]]:
    """Per rule, per writer: the scores of genuine claims (``positive``) and of impostor claims (``negative``),
    and which impostors those are (``impostors``: ``"skilled forgeries"``, ``"same text, other writers"``, or ``""``
    for a writer with neither: no forgeries and texts undeclared).

    ``texts`` (one per embedding, ``None`` where undeclared) enrols a writer without forgeries once per text
    (module docstring); the writer's claims of every text are pooled, so intervals resample writers.
    Writers with ``k`` genuine signatures or fewer (of each text) have nothing left to claim and are skipped;
    the ``svm`` rule needs ``background`` (other writers' genuine embeddings) and is skipped without it.
    """
    writers, forged = np.asarray(writers), np.asarray(forged, bool)
    named = np.asarray([None] * len(writers) if texts is None else list(texts), object)
    rules = [rule for rule in rules if rule != "svm" or background is not None]
    if not rules:
        raise DataError("no decision rule to score: the svm rule needs a background of other writers' signatures")
    scores: dict[Rule, dict[str, list[Any]]] = {rule: {"positive": [], "negative": [], "writers": [], "impostors": []} for rule in rules}
    for writer in dict.fromkeys(writers.tolist()):
        genuine = np.flatnonzero((writers == writer) & ~forged)
        fakes = np.flatnonzero((writers == writer) & forged)
        by_text = not len(fakes) and all(named[i] is not None for i in genuine)
        groups = ([(genuine[named[genuine] == text], np.flatnonzero((named == text) & (writers != writer) & ~forged))
                   for text in dict.fromkeys(named[genuine].tolist())] if by_text else [(genuine, fakes)])
        claimed: dict[Rule, tuple[list[np.ndarray], list[np.ndarray]]] = {rule: ([], []) for rule in rules}
        for own, impostors in groups:
            if len(own) <= k:
                continue
            references, claims = embeddings[own[:k]], embeddings[own[k:]]
            model = fit_writer_model(references, background) if "svm" in rules else None
            for rule in rules:
                claimed[rule][0].append(rule_scores(rule, claims, references, model))
                claimed[rule][1].append(rule_scores(rule, embeddings[impostors], references, model) if len(impostors) else np.empty(0))
        if not claimed[rules[0]][0]:  # nothing left to claim after k references (of any text)
            continue
        for rule in rules:
            scores[rule]["positive"].append(np.concatenate(claimed[rule][0]))
            scores[rule]["negative"].append(np.concatenate(claimed[rule][1]))
            scores[rule]["writers"].append(writer)
            scores[rule]["impostors"].append("same text, other writers" if by_text else "skilled forgeries" if len(fakes) else "")
    if not any(scores[rule]["writers"] for rule in rules):
        raise DataError(f"no writer has more than {k} genuine signatures (of one text, where texts are declared): "
                        f"nothing to claim after enrolling {k} references")
    return scores


def rule_report(positive: list[np.ndarray], negative: list[np.ndarray], threshold: float | None, resamples: int = 1000) -> dict[str, Any]:
    """EER (with its bootstrap interval over writers) and, at ``threshold`` (default: the EER's),
    the shares of genuine claims accepted and of impostor claims rejected (``forgeries_rejected`` and
    ``n_forgery_claims`` keep their names: they count same-text impostors too, where those are the claims)."""
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
    scores: dict[Rule, dict[str, list[Any]]],
    thresholds: dict[str, float] | None = None,
    source_of: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per rule of ``scores`` (:func:`claim_scores`): its :func:`rule_report` at its threshold in
    ``thresholds`` (default: its EER's) and, with writers of several sources, the same per source."""
    thresholds, source_of = thresholds or {}, source_of or {}
    report = {}
    for rule, found in scores.items():
        entry = rule_report(found["positive"], found["negative"], thresholds.get(rule))
        entry["impostors"] = " and ".join(sorted(set(found["impostors"]) - {""}))
        entry["threshold_from"] = "checkpoint card" if rule in thresholds else "EER of these writers"
        if len(set(source_of.values())) > 1:  # several sources given: each gets its entry, or says why it has none
            entry["per_source"], unmeasured = {}, {}
            for name in sorted(set(source_of.values())):
                mine = [i for i, w in enumerate(found["writers"]) if source_of[w] == name]
                negative = [found["negative"][i] for i in mine]
                if not mine:
                    unmeasured[name] = ("no writer has more than the references' number of genuine signatures (of one "
                                        "text, where texts are declared): nothing to claim")
                elif not sum(len(n) for n in negative):  # no forgeries, and no other writer of the same texts
                    unmeasured[name] = "no impostor claims: no skilled forgeries, and no other writer of the same declared texts"
                else:
                    entry["per_source"][name] = {**rule_report([found["positive"][i] for i in mine], negative, entry["threshold"]),
                                                 "impostors": " and ".join(sorted({found["impostors"][i] for i in mine} - {""}))}
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
    texts: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """The gallery protocol's report: per rule its EER and rates, and with ``sources`` (one per
    embedding) the same per source, at the same thresholds; ``texts`` as in :func:`claim_scores`."""
    scores = claim_scores(embeddings, writers, forged, k, background, texts=texts)
    source_of = dict(zip(writers, sources)) if sources is not None else None
    return {"k": k, "rules": protocol_report(scores, thresholds, source_of)}


__all__ = ["claim_scores", "protocol_report", "reference_protocol", "rule_report"]
