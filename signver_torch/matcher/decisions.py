"""Decisions that use what several references say about their writer.

Each rule turns a query's embedding and the claimed person's reference embeddings into a score where
lower means "more likely the same writer", so every rule is thresholded the same way:

* ``mean``: the mean cosine distance to the references (what one global threshold on distances does);
* ``spread``: that mean divided by the spread among the references themselves (their mean pairwise
  distance), so a writer who varies a lot is not refused for varying;
* ``svm``: a writer-dependent classifier (Hafemann et al.'s writer-dependent SVMs): an RBF SVM that
  separates the person's references from a background bank of other writers' genuine signatures;
  the score is minus its decision value.

The SVM is kept as plain arrays (:class:`WriterModel`: support vectors, weights, bias, gamma), so a
gallery stores it without pickling and scores it in numpy: the support vectors are stored as indices
into the person's references followed by the checkpoint's background bank.

A checkpoint's card names the rule its calibration measured best (:class:`DecisionPolicy`): its
threshold, from how many references it applies, and the background bank beside the weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from signver_torch.errors import CheckpointError, SignVerError
from signver_torch.matcher.distance import cosine_distances

Rule = Literal["mean", "spread", "svm"]
RULES: tuple[Rule, ...] = ("mean", "spread", "svm")
#: Spreads below this (near-identical references) are clamped, so a score never divides by ~0.
MIN_SPREAD = 0.02


def reference_spread(references: np.ndarray) -> float:
    """Mean pairwise cosine distance among a person's references (``MIN_SPREAD`` for a single one)."""
    if len(references) < 2:
        return MIN_SPREAD
    distances = cosine_distances(references, references)[np.triu_indices(len(references), 1)]
    return max(float(distances.mean()), MIN_SPREAD)


@dataclass(frozen=True)
class WriterModel:
    """A fitted writer-dependent RBF SVM as arrays: ``f(x) = sum_i w_i exp(-gamma |s_i - x|^2) + b``."""

    support_vectors: np.ndarray  # (S, D) float32
    weights: np.ndarray  # (S,) float32, the dual coefficients (signed)
    bias: float
    gamma: float
    support: np.ndarray  # (S,) int32: rows of concatenate([references, background]) that are the support vectors

    @classmethod
    def from_support(
        cls, support: np.ndarray, weights: np.ndarray, bias: float, gamma: float, references: np.ndarray, background: np.ndarray
    ) -> "WriterModel":
        """Rebuild a stored model from its support indices and the arrays they index."""
        features = np.concatenate([references, background]).astype(np.float32)
        support = np.asarray(support, np.int32)
        if len(support) != len(weights) or (len(support) and support.max() >= len(features)):
            raise SignVerError(f"a stored writer model indexes {int(support.max()) + 1 if len(support) else 0} signatures, "
                               f"but {len(features)} are there")
        return cls(features[support], np.asarray(weights, np.float32), float(bias), float(gamma), support)

    def decision(self, queries: np.ndarray) -> np.ndarray:
        """Decision values of ``(Q, D)`` queries: positive for the person, negative for the background."""
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        squared = ((queries[:, None, :] - self.support_vectors[None, :, :]) ** 2).sum(-1)
        return np.exp(-self.gamma * squared) @ self.weights + self.bias


def fit_writer_model(references: np.ndarray, background: np.ndarray, c: float = 1.0) -> WriterModel:
    """Fit the person's SVM: references (class 1) against the background bank (class 0), classes
    weighted by their size; ``gamma`` is scikit-learn's ``"scale"`` rule."""
    from sklearn.svm import SVC  # only where a writer-dependent model is fitted

    if len(references) < 1 or len(background) < 1:
        raise SignVerError("a writer-dependent model needs at least one reference and a background bank")
    features = np.concatenate([references, background]).astype(np.float64)
    labels = np.concatenate([np.ones(len(references)), np.zeros(len(background))])
    svm = SVC(kernel="rbf", C=c, gamma="scale", class_weight="balanced").fit(features, labels)
    sign = 1.0 if svm.classes_[1] == 1 else -1.0  # decision_function is positive for classes_[1]
    return WriterModel(svm.support_vectors_.astype(np.float32), (sign * svm.dual_coef_[0]).astype(np.float32),
                       float(sign * svm.intercept_[0]), float(svm._gamma), svm.support_.astype(np.int32))


def rule_scores(
    rule: Rule, queries: np.ndarray, references: np.ndarray, model: WriterModel | None = None
) -> np.ndarray:
    """Scores of ``queries`` against one person's ``references`` under ``rule`` (lower = same writer)."""
    if rule == "mean":
        return cosine_distances(queries, references).mean(1)
    if rule == "spread":
        return cosine_distances(queries, references).mean(1) / reference_spread(references)
    if rule == "svm":
        if model is None:
            raise SignVerError("the svm rule needs the person's writer-dependent model")
        return -model.decision(queries)
    raise SignVerError(f"unknown decision rule {rule!r} (one of {', '.join(RULES)})")


@dataclass(frozen=True)
class DecisionPolicy:
    """How a checkpoint decides a claim against several references of one person.

    ``rule`` scores the claim and accepts when the score is ``<= threshold``; it applies from
    ``min_references`` references on (the number it was calibrated with), below that the pair
    threshold on distances decides. ``background`` is the bank the ``svm`` rule fits against.
    """

    rule: Rule
    threshold: float
    min_references: int
    background: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise SignVerError(f"unknown decision rule {self.rule!r} (one of {', '.join(RULES)})")
        if self.needs_model and self.background is None:
            raise SignVerError("the svm rule needs the checkpoint's background bank")

    @classmethod
    def from_card(cls, card: dict, weights: str | os.PathLike) -> "DecisionPolicy | None":
        """The rule an extractor card's calibration chose (``None`` on cards without one), its background bank read
        from beside ``weights`` (a checkpoint's or an export's graph) and checked against the card."""
        if "decision" not in card:
            return None
        from signver_torch.checkpoints import read_background

        entry = card["decision"]
        try:
            background = read_background(weights, entry["background"]["sha256"]) if "background" in entry else None
            return cls(entry["rule"], float(entry["threshold"]), int(entry["min_references"]), background)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{weights}: the card's decision entry is incomplete ({error})") from error

    @property
    def needs_model(self) -> bool:
        return self.rule == "svm"

    def applies(self, n_references: int) -> bool:
        return n_references >= self.min_references

    def score(self, query: np.ndarray, references: np.ndarray, model: WriterModel | None = None) -> float:
        """The claim's score (lower = same writer); the svm model is fitted here when not given."""
        if self.needs_model and model is None:
            model = fit_writer_model(references, self.background)  # type: ignore[arg-type]
        return float(rule_scores(self.rule, np.atleast_2d(query), references, model)[0])


__all__ = ["RULES", "DecisionPolicy", "Rule", "WriterModel", "cosine_distances", "fit_writer_model", "reference_spread", "rule_scores"]
