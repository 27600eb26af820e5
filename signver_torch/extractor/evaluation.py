"""The extractor's evaluation and calibration: the writer protocol on folders of signatures, the
projection fitted on training writers, the threshold and the per-person decision on held-out ones."""

from __future__ import annotations

import os
import shlex
from functools import partial
import sys
import time
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from signver_torch.checkpoints import background_path, read_card, resolve_checkpoint, save_checkpoint, write_card
from signver_torch.data.signatures import (
    DataRoots,
    SignatureImages,
    SignatureRecord,
    compact_writers,
    data_roots,
    data_text,
    discover_signatures,
    source_of_writer,
    writers_text,
)
from signver_torch.errors import BlankSignatureError, SignVerError
from signver_torch.extractor.api import MetricExtractor
from signver_torch.extractor.decision import check_decision_options, calibrate_decision, decision_from_scores
from signver_torch.extractor.model import principal_projection
from signver_torch.metrics import protocol_negatives, same_text_metrics, verification_metrics, writer_protocol_metrics, writer_protocol_pairs


def embed_records(
    extractor: MetricExtractor, records: Sequence[SignatureRecord], progress: bool = True, pooled: bool = False,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None, refused_as_zero: bool = False,
) -> tuple[torch.Tensor, float]:
    """Embed signature files in batches (bounded memory); returns embeddings (backbone features with
    ``pooled``) and seconds spent embedding. ``transform`` alters each ``(1, H, W)`` grey scan first.

    A scan without ink is a :class:`BlankSignatureError` naming its file; with ``refused_as_zero`` (an altered
    query the preprocessing refuses) its embedding is the zero vector instead, at cosine distance 1 from every
    reference: a claim the system could not accept."""
    images = SignatureImages(records)
    loader = DataLoader(images, batch_size=extractor.batch_size, collate_fn=list)
    chunks, seconds = [], 0.0
    with tqdm(total=len(images), desc="embedding", unit="img", file=sys.stderr, disable=not progress) as bar:
        for offset, batch in zip(range(0, len(images), extractor.batch_size), loader):
            start = time.perf_counter()
            scans = [image if transform is None else transform(image) for image, _ in batch]
            try:
                chunks.append(extractor.embed(scans, pooled=pooled))
            except BlankSignatureError as error:
                if not refused_as_zero or pooled:
                    blank = ", ".join(str(records[offset + i].path) for i in error.indices)
                    raise BlankSignatureError(f"{blank}: no signature ink found (blank or uniform image)") from error
                refused = set(error.indices)
                kept = [i for i in range(len(scans)) if i not in refused]
                chunk = torch.zeros(len(scans), int(extractor.card["architecture"]["embedding_dim"]))
                if kept:
                    chunk[kept] = extractor.embed([scans[i] for i in kept])
                chunks.append(chunk)
            seconds += time.perf_counter() - start
            bar.update(len(batch))
    return torch.cat(chunks), seconds


#: Bootstrap resamples of the writers behind ``eer_ci``.
BOOTSTRAP_RESAMPLES = 1000


def ink_variant(gray: torch.Tensor, variant: str) -> torch.Tensor:
    """The scan ``gray`` (``(1, H, W)`` in ``[0, 1]``, dark ink on light paper) as another pen or scanner
    would give it: ``lighter`` (faint ink, 40% of its darkness), ``darker`` (mid tones darkened, the
    square root of darkness), ``thinner`` (strokes eroded by a 3x3 maximum filter) or ``thicker``
    (dilated by a 3x3 minimum filter). Same shape, dtype and device."""
    if variant == "lighter":
        return 1 - (1 - gray) * 0.4
    if variant == "darker":
        return 1 - (1 - gray).clamp_min(0).sqrt()
    if variant == "thinner":
        return torch.nn.functional.max_pool2d(gray[None], 3, stride=1, padding=1)[0]
    if variant == "thicker":
        return -torch.nn.functional.max_pool2d(-gray[None], 3, stride=1, padding=1)[0]
    raise SignVerError(f"unknown ink variant {variant!r}: choose {', '.join(INK_VARIANTS)}")


#: What ``--ink-variants`` measures (:func:`ink_variant`).
INK_VARIANTS = ("lighter", "darker", "thinner", "thicker")


def _operating_point(writers: Sequence[str], rates: Callable[[list[str]], dict[str, Any]], threshold: float) -> dict[str, Any]:
    """FAR and FRR at ``threshold`` of ``writers``, overall and per source; ``rates`` measures a group of writers."""
    writers = list(dict.fromkeys(writers))
    point = {"threshold": threshold, **rates(writers)}
    sources = sorted({source_of_writer(w) for w in writers})
    if len(sources) > 1:
        point["per_source"] = {source: rates([w for w in writers if source_of_writer(w) == source]) for source in sources}
    return point


def same_text_report(embeddings: torch.Tensor, records: Sequence[SignatureRecord], threshold: float | None,
                     queries: torch.Tensor | None = None) -> dict[str, Any]:
    """The same-text protocol by medium, for genuine signatures that declare their text and medium
    (``n<NN>_<medium>`` files); the writer protocol's report already holds it over every medium.

    Impostors are always other writers' signatures of the same text. ``same_text_cross_media``: both
    kinds of pair across two different media; ``same_text_by_medium``
    (both signatures on one medium; a writer's positives there are all their pairs on it, since each
    name is usually written once per medium). ``queries``: as in :func:`~signver_torch.metrics.writer_protocol_distances`."""
    writers, texts, media = [r.writer for r in records], [r.text for r in records], [r.medium for r in records]

    def measured(pairing: str, chosen: list[int] | None = None, positive_texts: str = "same") -> dict[str, Any]:
        chosen = list(range(len(records))) if chosen is None else chosen
        return same_text_metrics(embeddings[chosen], [writers[i] for i in chosen], [texts[i] for i in chosen],
                                 [media[i] for i in chosen], pairing, threshold, BOOTSTRAP_RESAMPLES, positive_texts,
                                 None if queries is None else queries[chosen])

    report: dict[str, Any] = {}
    kinds = sorted({m for m in media if m is not None})
    if len(kinds) > 1:
        report["same_text_by_medium"] = {kind: measured("same", [i for i, m in enumerate(media) if m == kind], "any") for kind in kinds}
        report["same_text_cross_media"] = measured("cross")
    return report


def evaluate_extractor(
    data_dir: DataRoots,
    writers: str | Sequence[str] | None = None,
    checkpoint: str | os.PathLike = "default",
    *,
    threshold: float | None = None,
    references: int | None = None,
    background_writers: str | Sequence[str] | None = None,
    ink_variants: bool = False,
    cleaner: str | os.PathLike | None = None,
    device: str | None = None,
    backend: str = "torch",
    progress: bool = True,
) -> dict[str, Any]:
    """docs/design.md's writer-independent protocol on ``data_dir`` (one or several folders, CEDAR or
    writer folders). With ``cleaner`` (a cleaner checkpoint), every signature is cleaned first, queries and
    references alike: the path ``SignVer`` takes by default, rather than the scans as they are.

    Per writer, positives are all genuine–genuine pairs and negatives all genuine–skilled-forgery
    pairs; one global threshold. Where files declare their text, the same-text protocol is added
    (:func:`same_text_report`). FAR/FRR are at ``threshold``, by default the checkpoint's calibrated
    one. ``eer_ci`` is a 95% bootstrap interval over writers; with several sources, ``per_source``
    holds the same report for each. With ``references=K``, ``references`` adds the gallery protocol
    (:mod:`signver_torch.matcher.evaluation`) for each decision rule; the writer-dependent SVMs use
    the genuine signatures of ``background_writers`` (never among ``writers``) as background.
    ``backend``: what runs the network (:class:`~signver_torch.facade.ModelFacade`). With ``ink_variants``,
    ``ink_robustness`` holds, per :data:`INK_VARIANTS` entry, the same protocols with every query altered so
    (references as scanned), and how far each signature moves from itself.
    """
    records = discover_signatures(data_dir, writers)
    extractor = MetricExtractor(device=device, backend=backend).load(checkpoint)
    cleaning = None
    if cleaner is not None:
        from signver_torch.cleaner.api import Cleaner

        cleaning = Cleaner(device=device, backend=backend).load(cleaner)

    def prepared(transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """``transform`` (an ink variant: what reaches the scanner), then the cleaner where one is given."""
        if cleaning is None:
            return transform
        return lambda image: cleaning.clean_pages([image if transform is None else transform(image)])[0]

    embeddings, seconds = embed_records(extractor, records, progress, transform=prepared())
    operating = extractor.threshold if threshold is None else threshold

    def report_of(chosen: list[int], queries: torch.Tensor | None = None) -> dict[str, Any]:
        asked = None if queries is None else queries[chosen]
        report = writer_protocol_metrics(embeddings[chosen], [records[i].writer for i in chosen], [records[i].forged for i in chosen],
                                         operating, BOOTSTRAP_RESAMPLES, asked, [records[i].text for i in chosen])
        texts = [i for i in chosen if records[i].text is not None and not records[i].forged]
        if texts:
            report.update(same_text_report(embeddings[texts], [records[i] for i in texts], operating,
                                           None if queries is None else queries[texts]))
        return report

    def by_source(queries: torch.Tensor | None = None) -> dict[str, Any]:
        report = report_of(list(range(len(records))), queries)
        sources = sorted({record.source for record in records})
        if len(sources) > 1:
            report["per_source"] = {source: report_of([i for i, r in enumerate(records) if r.source == source], queries)
                                    for source in sources}
        return report

    report = by_source()
    if ink_variants:
        report["ink_robustness"] = {}
        for variant in INK_VARIANTS:
            altered, _ = embed_records(extractor, records, progress, transform=prepared(partial(ink_variant, variant=variant)),
                                       refused_as_zero=True)
            moved = 1 - torch.nn.functional.cosine_similarity(embeddings.double(), altered.double())  # a refused query: 1
            report["ink_robustness"][variant] = {
                **by_source(altered),
                "n_refused": int((altered.norm(dim=1) == 0).sum()),
                "self_distance_median": float(moved.median()),
                "self_beyond_threshold": float((moved > operating).double().mean()) if operating is not None else None,
            }
    if references is not None:
        from signver_torch.matcher.evaluation import reference_protocol

        background = None
        if background_writers is not None:
            bank = [r for r in discover_signatures(data_dir, background_writers) if not r.forged]
            if {r.writer for r in bank} & {r.writer for r in records}:
                raise SignVerError("--background-writers must not include the evaluated writers")
            background = embed_records(extractor, bank, progress, transform=prepared())[0].numpy()
        report["references"] = reference_protocol(
            embeddings.numpy(), [r.writer for r in records], [r.forged for r in records], references, background,
            extractor.card.get("decision_thresholds"), [r.source for r in records], [r.text for r in records])
        report["references"]["background_writers"] = writers_text(background_writers)
    return {
        **report,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": extractor.sha256,
        "cleaner": None if cleaner is None else str(cleaner),
        "cleaner_sha256": None if cleaning is None else cleaning.sha256,
        "cleaner_precision": None if cleaning is None else cleaning.precision,
        "cleaner_max_side": None if cleaning is None else cleaning.max_side,
        "backend": extractor.backend,
        "precision": extractor.precision,
        "data": data_text(data_dir),
        "writers": writers_text(writers),
        "n_images": len(records),
        "signatures_per_second": len(records) / seconds,
    }


def calibrate_extractor(
    data_dir: DataRoots,
    writers: str | Sequence[str] | None,
    val_writers: str | Sequence[str] | None,
    checkpoint: str | os.PathLike = "default",
    *,
    target_far: float | None = None,
    references: int | None = None,
    background_writers: str | Sequence[str] | None = None,
    rule: str | None = None,
    out_of_fold: Sequence[str | os.PathLike] | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit the checkpoint's projection to its backbone and recalibrate its threshold; returns the card.

    With ``writers`` (the training writers), the projection head becomes the principal axes of their
    backbone features (:func:`~signver_torch.extractor.model.principal_projection`); without, the
    projection is kept. Then the threshold is set on ``val_writers`` (held-out writers; all writers of
    ``data_dir`` when ``None``): at their skilled-forgery EER, or where their FAR is ``target_far``.
    The card records FAR and FRR at that threshold, per source too.

    With ``references=K``, the per-person decision is calibrated as well (:func:`calibrate_decision`):
    the rule of lowest gallery-protocol EER on ``val_writers`` (or ``rule``), its threshold the same
    way, and for the ``svm`` rule a background bank of the genuine signatures of ``background_writers``
    written beside the weights.

    With ``out_of_fold`` (the embeddings files of a cross-validation of this checkpoint's recipe,
    :mod:`~signver_torch.extractor.crossval`), a model trained on every writer takes its thresholds
    from the distances and claims of the writers each fold model never saw, instead of from
    ``val_writers`` (there are none); the background bank is still embedded by this checkpoint.
    The checkpoint is rewritten atomically (its card loses the old metrics:
    rerun the evaluate command); the backbone is untouched, so running it twice changes nothing.
    """
    if target_far is not None and not 0 < target_far < 1:
        raise SignVerError(f"--target-far must be between 0 and 1, not {target_far}")
    if references is None and (background_writers is not None or rule is not None):
        raise SignVerError("--background-writers and --rule calibrate the per-person decision: give --references K too")
    if out_of_fold is not None and val_writers is not None:
        raise SignVerError("--out-of-fold takes the thresholds from a cross-validation's held-out writers: not with --val-writers")
    if references is not None:
        check_decision_options(references, rule)
    weights = resolve_checkpoint("extractor", checkpoint).weights
    extractor = MetricExtractor(device=device).load(weights)
    if extractor.card.get("threshold") is None and out_of_fold is None and val_writers is None:
        raise SignVerError(f"{weights}: trained on every writer, none held out: its thresholds need --out-of-fold "
                           "(a cross-validation of its recipe) or --val-writers it never trained on")
    if out_of_fold is not None:  # read (and refuse a bad file) before any embedding
        from signver_torch.extractor.crossval import load_fold_embeddings, out_of_fold_scores

        found = load_fold_embeddings(out_of_fold)
    held_out = discover_signatures(data_dir, val_writers) if out_of_fold is None else []
    card = dict(extractor.card)
    if writers is not None:
        train = discover_signatures(data_dir, writers)
        if {r.writer for r in train} & {r.writer for r in held_out}:
            raise SignVerError("--writers and --val-writers share writers: the threshold must come from held-out writers")
        extractor.model.normalize_features = True
        features, _ = embed_records(extractor, train, progress, pooled=True)
        try:
            projection = principal_projection(features, extractor.model.embedding_dim)
        except ValueError as error:
            raise SignVerError(f"{data_text(data_dir)}: writers {writers}: {error}; calibrate on more training signatures") from error
        extractor.model.head[-1] = projection.to(extractor.device)
        # embed from here on with the weights as they will be stored (fp16), so that the threshold and
        # the background bank describe the saved checkpoint exactly
        extractor.model.load_state_dict({key: value.half().float() if value.is_floating_point() else value
                                         for key, value in extractor.model.state_dict().items()})
        card["architecture"] = {**card["architecture"], "normalize_features": True}
        card["projection"] = {
            "method": "principal axes of the L2-normalised backbone features (replaces the trained projection head)",
            "fitted_on": {"data": data_text(data_dir), "writers": writers_text(writers), "n_images": len(train)},
            # the file as trained, whose backbone this checkpoint keeps (the detector recipe names it)
            "trained_sha256": card.get("projection", {}).get("trained_sha256", extractor.sha256),
        }
    if out_of_fold is None:
        embeddings, _ = embed_records(extractor, held_out, progress)
        held_writers, held_forged, held_texts = [r.writer for r in held_out], [r.forged for r in held_out], [r.text for r in held_out]
        held = writers_text(val_writers) or "all"
        pairs = writer_protocol_pairs(embeddings, held_writers, held_forged, texts=held_texts)
        negatives_kind, impostors = protocol_negatives(pairs)  # genuine-only folders without texts: random forgeries
        positive, negatives = torch.cat(pairs["positive"]), torch.cat(impostors)
        described = (f"cosine distance at the EER ({negatives_kind} forgeries) of the held-out writers {held}" if target_far is None
                     else f"cosine distance where the FAR ({negatives_kind} forgeries) of writers {held} is {target_far:g}")

        def rates(group: list[str]) -> dict[str, Any]:
            members = set(group)
            chosen = [i for i, w in enumerate(held_writers) if w in members]
            report = writer_protocol_metrics(embeddings[chosen], [held_writers[i] for i in chosen], [held_forged[i] for i in chosen], threshold,
                                             texts=[held_texts[i] for i in chosen])
            return {key: report[key] for key in ("far", "frr", "eer", "negatives", "n_writers")}
    else:
        oof = out_of_fold_scores(found["embeddings"], found["writers"], found["forged"], found["folds"], references)
        held_writers = oof.writers
        positive, negatives = (torch.cat(part) for part in oof.pairs(held_writers))
        held = f"out of fold ({len(held_writers)} writers of {len(found['folds'])} folds)"
        pooled = f"(skilled forgeries) pooled out of fold: {len(held_writers)} writers, each scored by the fold model that never saw it"
        described = (f"cosine distance at the EER {pooled}" if target_far is None
                     else f"cosine distance where the FAR is {target_far:g} {pooled}")

        def rates(group: list[str]) -> dict[str, Any]:
            report = verification_metrics(*(torch.cat(part) for part in oof.pairs(group)), threshold)
            return {**{key: report[key] for key in ("far", "frr", "eer")}, "negatives": "skilled", "n_writers": len(group)}
    if target_far is None:
        threshold = verification_metrics(positive, negatives)["threshold_at_eer"]
    else:
        threshold = float(negatives.quantile(target_far, interpolation="lower"))
    command = ["calibrate", "extractor", "--data", *map(str, data_roots(data_dir))]
    command += [*(["--writers", writers_text(writers)] if writers is not None else []),
                *(["--val-writers", held] if val_writers is not None else []),
                *(["--target-far", f"{target_far:g}"] if target_far is not None else []),
                *(["--references", str(references)] if references is not None else []),
                *(["--background-writers", writers_text(background_writers)] if background_writers is not None else []),
                *(["--rule", rule] if rule is not None else []),
                *(["--out-of-fold", *map(str, out_of_fold)] if out_of_fold is not None else []), "--checkpoint", str(weights)]
    background = None
    if references is not None:
        bank = [r for r in discover_signatures(data_dir, background_writers) if not r.forged] if background_writers is not None else []
        if out_of_fold is None and {r.writer for r in bank} & set(held_writers):  # out of fold, claims met each fold's own bank
            raise SignVerError("--background-writers and --val-writers share writers: the background must be other people")
        bank_embeddings = embed_records(extractor, bank, progress)[0] if bank else None
        if out_of_fold is None:
            card["decision"], background = calibrate_decision(
                embeddings.numpy(), held_out, references, bank_embeddings, rule, target_far)
        else:
            card["decision"], background = decision_from_scores(
                oof.claims, {w: source_of_writer(w) for w in held_writers}, references, bank_embeddings, rule, target_far,
                "the out-of-fold writers")
        if "background" in card["decision"]:
            card["decision"]["background"].update(file=background_path(weights).name, writers=writers_text(background_writers),
                                                  data=data_text(data_dir))
        card["decision"]["calibrated_on"] = {"data": data_text(data_dir), "writers": held}
        card["decision_thresholds"] = card["decision"].pop("thresholds")
    elif writers is not None:  # a new projection: the old per-person calibration described other embeddings
        card = {key: value for key, value in card.items() if key not in ("decision", "decision_thresholds")}
    card.update({
        "threshold": threshold,
        "threshold_calibration": described + (", after the projection was fitted" if writers is not None else ""),
        "calibration_command": "signver " + shlex.join(command),
        "operating_point": _operating_point(held_writers, rates, threshold),
    })
    if out_of_fold is not None:
        card["out_of_fold"] = {"files": [str(path) for path in out_of_fold], "n_writers": len(held_writers),
                               "folds": [compact_writers(fold) for fold in found["folds"]],
                               "fold_checkpoints": [{key: entry.get(key) for key in ("sha256", "recipe_command", "hardware")}
                                                    for entry in found["checkpoints"]]}
    else:
        card.pop("out_of_fold", None)
    if writers is not None:
        card["projection"]["command"] = card["calibration_command"]
    # the old metrics described the old head or threshold: rerun the evaluate command for the new ones
    stale = ("metrics", "metrics_command")
    if writers is None:  # the weights stay as they are: only the card changes
        write_card(weights, {key: value for key, value in card.items() if key not in stale}, background)
    else:
        card = {key: value for key, value in card.items() if key not in (*stale, "sha256", "weights_dtype")}
        save_checkpoint(weights, extractor.model.state_dict(), card, dtype=torch.float16, background=background)
    return read_card(weights)
