"""Writer-grouped cross-validation of extractor recipes.

Twenty validation writers cannot choose between models (their EER swings by several points with the
writers drawn), so recipes are compared on every writer of every source: the writers are split into
folds that never divide a writer, each source dealt across all folds, one fold being the recipes' fixed
validation writers; one model is trained per fold (``signver train extractor`` with the fold's writers),
every signature is embedded by every fold's model (``embed``), and the report pools, for each writer,
the pairs and claims scored by the model that never saw that writer (out of fold).

    signver crossval folds --data ../shared/data/cedar ../shared/data/dutch \\
        --folds 5 --fixed cedar:33-40,dutch:037-048 > folds.json
    signver crossval embed --data ... --folds folds.json \\
        --checkpoints fold1/model.safetensors ... --out embeddings.safetensors
    signver crossval report embeddings.safetensors [--references 5]
    (or ``embed --fold N --checkpoints foldN/model.safetensors --out foldN.safetensors`` as each fold
    finishes, then ``report fold1.safetensors ... fold5.safetensors``)
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import save_file

from signver_torch.data.signatures import (
    DataRoots,
    SignatureImages,
    SignatureRecord,
    compact_writers,
    discover_signatures,
    parse_writers,
    source_of_writer,
    writer_sort_key,
)
from signver_torch.errors import DataError, SignVerError
from signver_torch.metrics import bootstrap_eer_interval, verification_metrics, writer_protocol_distances

#: Bootstrap resamples of the writers behind every interval of the report.
RESAMPLES = 1000


def writer_folds(records: Sequence[SignatureRecord], folds: int, fixed: str | Sequence[str] | None = None) -> list[list[str]]:
    """Split the writers of ``records`` into ``folds`` writer-disjoint groups.

    ``fixed`` writers (the recipes' validation writers) form the last fold, so its model is the one
    trained on the recipes' own training writers; the other writers of each source are cut, in order,
    into contiguous runs dealt one per remaining fold, so every fold holds writers of every source.
    """
    writers = sorted({r.writer for r in records}, key=writer_sort_key)
    held = parse_writers(fixed, writers) if fixed else []
    free = folds - 1 if held else folds
    rest = [w for w in writers if w not in held]
    if free < 1 or len(rest) < 2 * free:
        raise DataError(f"{folds} folds of {len(writers)} writers: each fold needs at least 2 writers")
    groups: list[list[str]] = [[] for _ in range(free)]
    for source in dict.fromkeys(source_of_writer(w) for w in rest):
        mine = [w for w in rest if source_of_writer(w) == source]
        for group, part in zip(groups, np.array_split(np.arange(len(mine)), free)):
            group += [mine[i] for i in part]
    return groups + ([held] if held else [])


def fold_specs(folds: list[list[str]]) -> list[dict[str, str]]:
    """Each fold's ``train_writers``/``val_writers`` as compact specifications for a recipe override."""
    return [
        {"train_writers": compact_writers([w for j, other in enumerate(folds) if j != i for w in other]),
         "val_writers": compact_writers(fold)}
        for i, fold in enumerate(folds)
    ]


def embed_folds(data: DataRoots, folds: list[list[str]], checkpoints: Sequence[str | Path], device: str | None = None,
                progress: bool = True, fold_numbers: Sequence[int] | None = None) -> tuple[torch.Tensor, list[SignatureRecord]]:
    """Every signature of ``folds``' writers embedded by each checkpoint: ``(len(checkpoints), N, D)``.

    ``checkpoints`` are the models of ``fold_numbers`` (0-based; default: every fold, in order), so one
    fold's model can be embedded as soon as it is trained. The scans are decoded once and kept in
    memory; each checkpoint replays its own preprocessing.
    """
    from tqdm.auto import tqdm

    from signver_torch.extractor.api import MetricExtractor

    numbers = list(range(len(folds))) if fold_numbers is None else list(fold_numbers)
    if len(checkpoints) != len(numbers) or not set(numbers) <= set(range(len(folds))):
        raise SignVerError(f"{len(checkpoints)} checkpoints for folds {[n + 1 for n in numbers]} of {len(folds)}: "
                           "give one checkpoint per fold, in fold order")
    writers = [w for fold in folds for w in fold]
    records = discover_signatures(data, writers)
    images = [image for image, _ in tqdm(SignatureImages(records), desc="decoding", unit="img", file=sys.stderr, disable=not progress)]
    embedded = []
    for checkpoint in tqdm(checkpoints, desc="fold models", unit="model", file=sys.stderr, disable=not progress):
        embedded.append(MetricExtractor(device=device).load(checkpoint).embed(images))
    return torch.stack(embedded), records


def save_fold_embeddings(path: Path, embeddings: torch.Tensor, records: Sequence[SignatureRecord], folds: list[list[str]],
                         checkpoints: Sequence[str | Path], fold_numbers: Sequence[int] | None = None) -> None:
    """One safetensors file (fp16 embeddings) whose metadata names the records, folds, which folds'
    models it holds (``fold_numbers``, 0-based; default all) and their checkpoints."""
    from signver_torch.checkpoints import resolve_checkpoint

    cards = [resolve_checkpoint("extractor", c).card() for c in checkpoints]
    metadata = {
        "folds": json.dumps(folds),
        "fold_numbers": json.dumps(list(range(len(folds))) if fold_numbers is None else list(fold_numbers)),
        "writers": json.dumps([r.writer for r in records]),
        "forged": json.dumps([bool(r.forged) for r in records]),
        "paths": json.dumps([r.path.name for r in records]),
        "checkpoints": json.dumps([{"path": str(c), "sha256": card.get("sha256"), "recipe_command": card.get("recipe_command"),
                                    "hardware": card.get("hardware"), "wall_time_seconds": card.get("wall_time_seconds"),
                                    "epochs": card.get("training", {}).get("epochs")} for c, card in zip(checkpoints, cards)]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": embeddings.half().contiguous()}, str(path), metadata=metadata)


#: What every part of one cross-validation must agree on.
_SHARED_KEYS = ("folds", "writers", "forged", "paths")


def load_fold_embeddings(paths: str | Path | Sequence[str | Path]) -> dict[str, Any]:
    """What :func:`save_fold_embeddings` wrote, from one file or from several (one per fold, say), put
    together in fold order: embeddings ``(folds, N, D)`` (float32), writers, forged flags, folds, checkpoints.

    Raises:
        SignVerError: a file that is not such a file, files of different cross-validations, or a fold
            missing or given twice.
    """
    from safetensors import SafetensorError, safe_open

    parts = []
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        try:
            with safe_open(str(path), "pt") as handle:
                metadata = handle.metadata() or {}
                embeddings = handle.get_tensor("embeddings").float()
            found = {key: json.loads(metadata[key]) for key in (*_SHARED_KEYS, "fold_numbers", "checkpoints")}
        except (SafetensorError, OSError, KeyError, ValueError) as error:
            raise SignVerError(f"{path}: not a cross-validation embeddings file ({error})") from error
        if parts and any(found[key] != parts[0][1][key] for key in _SHARED_KEYS):
            raise SignVerError(f"{path}: another cross-validation (folds or signatures differ from {parts[0][0]})")
        parts.append((path, found, embeddings))
    by_fold: dict[int, tuple[torch.Tensor, dict[str, Any]]] = {}
    for path, found, embeddings in parts:
        for number, space, checkpoint in zip(found["fold_numbers"], embeddings, found["checkpoints"]):
            if number in by_fold:
                raise SignVerError(f"{path}: fold {number + 1} is given twice")
            by_fold[number] = (space, checkpoint)
    first = parts[0][1]
    missing = [n + 1 for n in range(len(first["folds"])) if n not in by_fold]
    if missing:
        raise SignVerError(f"folds {missing} missing: give the embeddings of every fold's model")
    order = sorted(by_fold)
    return {"embeddings": torch.stack([by_fold[n][0] for n in order]), **{key: first[key] for key in _SHARED_KEYS},
            "checkpoints": [by_fold[n][1] for n in order]}


@dataclass
class OutOfFoldScores:
    """What the fold models say about the writers they never saw: per writer its genuine-pair and
    skilled-forgery distances, per fold its random-forgery distances, and per rule the gallery
    protocol's claims (each fold's training writers as the svm background)."""

    folds: list[list[str]]
    positive: dict[str, torch.Tensor]
    skilled: dict[str, torch.Tensor]
    random: list[torch.Tensor]
    claims: dict[str, dict[str, list]]

    @property
    def writers(self) -> list[str]:
        return [w for fold in self.folds for w in fold]

    def pairs(self, writers: Sequence[str]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Genuine-pair and skilled-forgery distances of ``writers``, one tensor per writer."""
        return [self.positive[w] for w in writers], [self.skilled[w] for w in writers]


def out_of_fold_scores(
    embeddings: torch.Tensor, writers: Sequence[str], forged: Sequence[bool], folds: list[list[str]], references: int | None = None
) -> OutOfFoldScores:
    """Every writer's pairs (and with ``references`` its claims) scored by the fold model that did not
    train on it; random forgeries pair writers of one fold only (one model)."""
    from signver_torch.matcher.evaluation import claim_scores

    writers_arr, forged_arr = np.asarray(writers), np.asarray(forged, bool)
    scores = OutOfFoldScores(folds, {}, {}, [], {})
    for i, fold in enumerate(folds):
        chosen = np.flatnonzero(np.isin(writers_arr, fold))
        space = embeddings[i]
        for writer in fold:
            mine = chosen[writers_arr[chosen] == writer]
            pairs = writer_protocol_distances(space[mine], [writer] * len(mine), forged_arr[mine].tolist())
            scores.positive[writer], scores.skilled[writer] = pairs["positive"], pairs["skilled"]
        scores.random.append(writer_protocol_distances(space[chosen], writers_arr[chosen].tolist(), forged_arr[chosen].tolist())["random"])
        if references is not None:
            background_rows = np.flatnonzero(~np.isin(writers_arr, fold) & ~forged_arr)
            found = claim_scores(space[chosen].numpy(), writers_arr[chosen].tolist(), forged_arr[chosen].tolist(), references,
                                 space[background_rows].numpy())
            for rule, entry in found.items():
                merged = scores.claims.setdefault(rule, {key: [] for key in entry})
                for key in merged:
                    merged[key] += entry[key]
    return scores


def out_of_fold_report(
    embeddings: torch.Tensor,
    writers: Sequence[str],
    forged: Sequence[bool],
    folds: list[list[str]],
    references: int | None = None,
    resamples: int = RESAMPLES,
) -> dict[str, Any]:
    """Single pairs and (with ``references``) the gallery protocol of :func:`out_of_fold_scores`, with
    intervals over writers, per source and per fold."""
    from signver_torch.matcher.evaluation import protocol_report

    scores = out_of_fold_scores(embeddings, writers, forged, folds, references)

    def pairs_report(chosen_writers: list[str]) -> dict[str, Any]:
        pos, neg = scores.pairs(chosen_writers)
        metrics = verification_metrics(torch.cat(pos), torch.cat(neg))
        return {**metrics, "eer_ci": list(bootstrap_eer_interval(pos, neg, resamples)), "n_writers": len(chosen_writers)}

    everyone = scores.writers
    report: dict[str, Any] = {"pairs": pairs_report(everyone)}
    report["pairs"]["eer_random"] = verification_metrics(torch.cat(scores.pairs(everyone)[0]), torch.cat(scores.random))["eer"]
    sources = sorted({source_of_writer(w) for w in everyone})
    if len(sources) > 1:
        report["pairs"]["per_source"] = {s: pairs_report([w for w in everyone if source_of_writer(w) == s]) for s in sources}
    report["per_fold"] = [{"writers": compact_writers(fold), "n_writers": len(fold),
                           "eer": verification_metrics(*map(torch.cat, scores.pairs(fold)))["eer"]} for fold in folds]
    if references is not None:
        report["references"] = {"k": references, "background": "the genuine signatures of each fold model's training writers",
                                "rules": protocol_report(scores.claims, None, {w: source_of_writer(w) for w in everyone})}
    return report


def fold_cards_summary(run_dir: str | Path) -> dict[str, Any]:
    """What each fold's training export measured on its held-out writers (``<config>/fold<N>/model.json``),
    and per configuration the writer-weighted mean of the fold EERs, overall and per source."""
    from signver_torch.checkpoints import read_card

    summary: dict[str, Any] = {}
    for card_path in sorted(Path(run_dir).glob("*/fold*/model.json"), key=lambda p: (p.parent.parent.name, int(p.parent.name[4:]))):
        card = read_card(card_path.with_suffix(".safetensors"))
        metrics = card.get("metrics", {})
        if "n_writers" not in metrics:
            raise SignVerError(f"{card_path}: no held-out metrics (did that fold's export fail? its log says)")
        entry = summary.setdefault(card_path.parent.parent.name, {"folds": []})
        entry["folds"].append({
            "fold": card_path.parent.name, "val_writers": card["training"]["val_writers"], "n_writers": metrics["n_writers"],
            "eer": metrics["eer"], "eer_ci": metrics.get("eer_ci"), "eer_random": metrics.get("eer_random"),
            "per_source": {name: {"eer": found["eer"], "n_writers": found["n_writers"]} for name, found in metrics.get("per_source", {}).items()},
            "epochs": card["training"]["epochs"], "wall_time_seconds": card["wall_time_seconds"], "hardware": card["hardware"],
            "recipe_command": card["recipe_command"], "sha256": card["sha256"],
            "trained_sha256": card.get("projection", {}).get("trained_sha256", card["sha256"]),
        })
    if not summary:
        raise SignVerError(f"{run_dir}: no <config>/fold<N>/model.json cards found")
    for entry in summary.values():
        folds = entry["folds"]
        entry["mean_eer"] = _weighted([(f["eer"], f["n_writers"]) for f in folds])
        sources = sorted({name for f in folds for name in f["per_source"]})
        entry["mean_eer_per_source"] = {name: _weighted([(f["per_source"][name]["eer"], f["per_source"][name]["n_writers"])
                                                         for f in folds if name in f["per_source"]]) for name in sources}
    return summary


def record_summary(summary: dict[str, Any], config: str, checkpoint: str | Path, name: str, command: str) -> None:
    """File ``config``'s cross-validation under ``extra_metrics[name]`` of ``checkpoint``'s card, which must
    be that configuration's last-fold model (the recipes' training writers), as trained or recalibrated."""
    from signver_torch.checkpoints import resolve_checkpoint, update_card

    if config not in summary:
        raise SignVerError(f"no configuration {config!r} in the run (found: {', '.join(summary)})")
    found = resolve_checkpoint("extractor", checkpoint)
    card = found.card()
    last = summary[config]["folds"][-1]["trained_sha256"]
    if last not in (card.get("sha256"), card.get("projection", {}).get("trained_sha256")):
        raise SignVerError(f"{found.weights}: not the last-fold model of {config!r} (sha256 {last[:12]}…): not recorded")
    update_card(found.weights, extra_metrics={**card.get("extra_metrics", {}), name: {
        "metrics": summary[config], "command": command, "data_command": "bash recipes/extractor/gpu_crossval.sh"}})


def _weighted(values: list[tuple[float, int]]) -> float:
    return sum(value * weight for value, weight in values) / sum(weight for _, weight in values)

