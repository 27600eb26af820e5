"""The extractor's per-person decision: which rule and threshold decide a claim against K references,
chosen on held-out writers or out of fold (what ``signver calibrate extractor --references K`` writes)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from signver_torch.checkpoints import encode_background
from signver_torch.data.signatures import SignatureRecord
from signver_torch.errors import SignVerError


def calibrate_decision(
    embeddings: np.ndarray,
    records: Sequence[SignatureRecord],
    references: int,
    background: torch.Tensor | None,
    rule: str | None = None,
    target_far: float | None = None,
) -> tuple[dict[str, Any], bytes | None]:
    """The per-person decision of ``records`` (held-out writers) with ``references`` references each.

    Every rule the data allows (``svm`` needs a background) is measured with the gallery protocol; the
    lowest EER wins (ties go to the simpler rule, in the order of ``RULES``) unless ``rule`` is given. Its threshold is at its EER,
    or where its FAR on forgeries is ``target_far``. Returns the card's ``decision`` entry (with
    ``thresholds``: every rule's, for ``evaluate --references``) and, for ``svm``, the background
    bank's bytes.
    """
    from signver_torch.matcher.evaluation import claim_scores

    check_decision_options(references, rule)
    bank = None if background is None else background.numpy()  # without one, claim_scores leaves svm out
    scores = claim_scores(embeddings, [r.writer for r in records], [r.forged for r in records], references, bank,
                          texts=[r.text for r in records])  # the protocol `evaluate --references` measures
    return decision_from_scores(scores, {r.writer: r.source for r in records}, references, background, rule, target_far)


def check_decision_options(references: int, rule: str | None) -> None:
    from signver_torch.matcher.decisions import RULES

    if references < 1:
        raise SignVerError(f"--references must be at least 1, not {references}")
    if rule is not None and rule not in RULES:
        raise SignVerError(f"--rule must be one of {', '.join(RULES)}, not {rule!r}")


def decision_from_scores(
    scores: dict[str, dict[str, list]],
    source_of: dict[str, str],
    references: int,
    background: torch.Tensor | None,
    rule: str | None = None,
    target_far: float | None = None,
    measured_on: str = "the held-out writers",
) -> tuple[dict[str, Any], bytes | None]:
    """The card's ``decision`` entry from gallery-protocol ``scores`` (:func:`~signver_torch.matcher.evaluation.claim_scores`,
    per rule): see :func:`calibrate_decision`. The ``svm`` rule is compared only with a ``background`` to ship."""
    from signver_torch.matcher.evaluation import protocol_report

    if rule == "svm" and background is None:
        raise SignVerError("--rule svm needs --background-writers (the genuine signatures it learns each person against)")
    scores = {name: found for name, found in scores.items() if name != "svm" or background is not None}  # no bank, no svm
    compared = protocol_report(scores, None, source_of)
    chosen = rule or min(compared, key=lambda name: compared[name]["eer"])  # min keeps the first of equals
    thresholds = {name: entry["threshold_at_eer"] for name, entry in compared.items()}
    if target_far is not None:
        negatives = torch.from_numpy(np.concatenate(scores[chosen]["negative"]))
        thresholds[chosen] = float(negatives.quantile(target_far, interpolation="lower"))
    point = protocol_report({chosen: scores[chosen]}, {chosen: thresholds[chosen]}, source_of)[chosen]
    decision: dict[str, Any] = {
        "rule": chosen,
        "threshold": thresholds[chosen],
        "threshold_from": f"EER of {measured_on}" if target_far is None else f"FAR {target_far:g} on {measured_on}' forgeries",
        "min_references": references,
        "chosen_by": "lowest EER of the rules compared" if rule is None else "--rule",
        "rules_compared": {name: {"eer": entry["eer"], "eer_ci": entry["eer_ci"]} for name, entry in compared.items()},
        "operating_point": {key: point[key] for key in ("genuine_accepted", "forgeries_rejected", "n_writers",
                                                      "n_genuine_claims", "n_forgery_claims", "per_source") if key in point},
        "thresholds": thresholds,
    }
    if chosen != "svm" or background is None:
        return decision, None
    data, digest = encode_background(background, {"what": "genuine embeddings of the background writers"})
    decision["background"] = {"sha256": digest, "n_signatures": len(background)}
    return decision, data
