"""User facade of the extractor: load a checkpoint, embed signatures given in any form."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from signver_torch.checkpoints import (
    background_path,
    encode_background,
    load_model,
    read_background,
    read_card,
    resolve_checkpoint,
    save_checkpoint,
    write_card,
)
from signver_torch.data.preprocess import PreprocessConfig, SignaturePreprocessor
from signver_torch.data.signatures import DataRoots, SignatureImages, SignatureRecord, data_roots, data_text, discover_signatures, writers_text
from signver_torch.errors import BlankSignatureError, CheckpointError, SignVerError
from signver_torch.extractor.model import SignatureEmbedder, build_extractor, principal_projection
from signver_torch.io import ImageSource, load_image_tensor
from signver_torch.metrics import writer_protocol_distances, writer_protocol_metrics

if TYPE_CHECKING:
    from signver_torch.matcher.decisions import DecisionPolicy


def best_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class MetricExtractor:
    """Signature → 256-d L2-normalised embedding, with the checkpoint's preprocessing replayed.

    ``extract`` takes the original SignVer batch ((N, H, W, 3) or (N, H, W) in [0, 1], e.g. 224x224
    crops) or a list of crops of any size and kind (paths, PIL images, arrays, tensors).

    Example::

        extractor = MetricExtractor().load("default")
        feats = extractor.extract(["a.png", "b.png"])        # (2, 256) numpy
        same = 1 - feats[0] @ feats[1] <= extractor.threshold
    """

    def __init__(self, device: str | torch.device | None = None, batch_size: int = 64) -> None:
        self.device = torch.device(device) if device is not None else best_device()
        self.batch_size = batch_size
        self.model: SignatureEmbedder | None = None
        self.preprocessor: SignaturePreprocessor | None = None
        self.card: dict[str, Any] = {}
        self.weights: Path | None = None
        self._decision: DecisionPolicy | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "default", **kwargs: Any) -> "MetricExtractor":
        return cls(**kwargs).load(name_or_path)

    def load(self, name_or_path: str | os.PathLike = "default") -> "MetricExtractor":
        """Load a shipped checkpoint by name (``"default"``) or a ``.safetensors`` path."""
        model, card = load_embedder(name_or_path)
        self.weights = resolve_checkpoint("extractor", name_or_path).weights
        self._decision = None
        try:
            preprocessor = SignaturePreprocessor(PreprocessConfig(**card["preprocessing"]))
            float(card["threshold"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{name_or_path}: model card lacks a valid preprocessing or threshold ({error})") from error
        self.model = model.eval().to(self.device)
        self.preprocessor = preprocessor.to(self.device)
        self.card = card
        return self

    @property
    def threshold(self) -> float:
        """Calibrated cosine-distance threshold (accept as the same writer when distance <= threshold)."""
        if not self.card:
            raise CheckpointError("no checkpoint loaded (call load() first)")
        return float(self.card["threshold"])

    @property
    def sha256(self) -> str:
        return str(self.card.get("sha256", ""))

    @property
    def decision(self) -> "DecisionPolicy | None":
        """The per-person decision rule the card's calibration chose (``None`` on cards without one):
        claims against several references are scored by it instead of the pair threshold."""
        if not self.card:
            raise CheckpointError("no checkpoint loaded (call load() first)")
        if "decision" not in self.card:
            return None
        if self._decision is None:
            from signver_torch.matcher.decisions import DecisionPolicy

            entry = self.card["decision"]
            try:
                background = (read_background(self.weights, entry["background"]["sha256"]).numpy()
                              if "background" in entry else None)
                self._decision = DecisionPolicy(entry["rule"], float(entry["threshold"]), int(entry["min_references"]), background)
            except (KeyError, TypeError, ValueError) as error:
                raise CheckpointError(f"{self.weights}: the card's decision entry is incomplete ({error})") from error
        return self._decision

    def extract(self, batch: np.ndarray | torch.Tensor | Sequence[ImageSource], progress: bool = False) -> np.ndarray:
        """Embed a batch of signatures; returns an ``(N, 256)`` float32 array of unit vectors.

        Raises:
            SignVerError: empty batch, wrong shape, NaN values, or a blank crop (with its index).
        """
        return self.embed(self._as_images(batch), progress=progress).numpy()

    @torch.inference_mode()
    def embed(self, images: Sequence[torch.Tensor], progress: bool = False, pooled: bool = False) -> torch.Tensor:
        """Embed ``(C, H, W)`` tensors in ``[0, 1]`` (dark ink on light paper); returns a CPU tensor.

        ``pooled`` returns the backbone's features as the projection head receives them instead.
        """
        if self.model is None or self.preprocessor is None:
            raise CheckpointError("no checkpoint loaded (call load() first)")
        if len(images) == 0:
            raise SignVerError("empty batch: no signatures to embed")
        chunks = []
        starts = range(0, len(images), self.batch_size)
        for start in tqdm(starts, desc="embedding", unit="batch", file=sys.stderr, disable=not progress, leave=False):
            group = [image.to(self.device) for image in images[start : start + self.batch_size]]
            try:
                canvas = self.preprocessor(group)
            except BlankSignatureError as error:
                indices = [start + i for i in error.indices]
                raise BlankSignatureError(
                    f"no signature ink found in input item(s) {indices} (blank or uniform crop)", indices
                ) from error
            network = self.model.features if pooled else self.model
            chunks.append(network(canvas).float().cpu())
        return torch.cat(chunks)

    @staticmethod
    def _as_images(batch: Any) -> list[torch.Tensor]:
        """Split a batch into grayscale ``(1, H, W)`` tensors through the one image loader.

        Arrays and tensors: ``(N, H, W)``, ``(N, H, W, C)`` (SignVer's layout) or, for tensors,
        ``(N, C, H, W)`` with C in 1, 3 (torch's layout). Lists: any mix of paths, bytes, PIL
        images, arrays and tensors, each of its own size.
        """
        if isinstance(batch, (str, bytes, bytearray, os.PathLike, Image.Image)):
            raise SignVerError("extract() takes a batch: wrap a single signature in a list")
        if isinstance(batch, (np.ndarray, torch.Tensor)):
            if batch.ndim not in (3, 4):
                raise SignVerError(f"expected a batch shaped (N, H, W) or (N, H, W, C); got shape {tuple(batch.shape)}")
            if isinstance(batch, torch.Tensor):
                if batch.ndim == 4 and batch.shape[1] in (1, 3) and batch.shape[-1] not in (1, 3, 4):
                    batch = batch.permute(0, 2, 3, 1)  # NCHW -> NHWC
                batch = batch.detach().cpu().float().numpy() if batch.is_floating_point() else batch.detach().cpu().numpy()
        items = list(batch)
        if not items:
            raise SignVerError("empty batch: no signatures to embed")
        return [
            load_image_tensor(item, "L", name=None if isinstance(item, (str, os.PathLike)) else f"batch item {i}")
            for i, item in enumerate(items)
        ]


def load_embedder(name_or_path: str | os.PathLike) -> tuple[SignatureEmbedder, dict[str, Any]]:
    """Build the network a checkpoint's card describes and load its weights (float32)."""
    return load_model("extractor", name_or_path, lambda card: build_extractor(**card["architecture"]))  # type: ignore[return-value]


Extractor = MetricExtractor


def embed_records(
    extractor: MetricExtractor, records: Sequence[SignatureRecord], progress: bool = True, pooled: bool = False
) -> tuple[torch.Tensor, float]:
    """Embed signature files in batches (bounded memory); returns embeddings (backbone features with
    ``pooled``) and seconds spent embedding."""
    images = SignatureImages(records)
    loader = DataLoader(images, batch_size=extractor.batch_size, collate_fn=list)
    chunks, seconds = [], 0.0
    with tqdm(total=len(images), desc="embedding", unit="img", file=sys.stderr, disable=not progress) as bar:
        for offset, batch in zip(range(0, len(images), extractor.batch_size), loader):
            start = time.perf_counter()
            try:
                chunks.append(extractor.embed([image for image, _ in batch], pooled=pooled))
            except BlankSignatureError as error:
                blank = ", ".join(str(records[offset + i].path) for i in error.indices)
                raise BlankSignatureError(f"{blank}: no signature ink found (blank or uniform image)") from error
            seconds += time.perf_counter() - start
            bar.update(len(batch))
    return torch.cat(chunks), seconds


#: Bootstrap resamples of the writers behind ``eer_ci``.
BOOTSTRAP_RESAMPLES = 1000


def _operating_point(embeddings: torch.Tensor, records: Sequence[SignatureRecord], threshold: float) -> dict[str, Any]:
    """FAR and FRR of ``records`` at ``threshold``, overall and per source."""
    def rates(chosen: list[int]) -> dict[str, Any]:
        report = writer_protocol_metrics(embeddings[chosen], [records[i].writer for i in chosen], [records[i].forged for i in chosen], threshold)
        return {key: report[key] for key in ("far", "frr", "eer", "negatives", "n_writers")}

    point = {"threshold": threshold, **rates(list(range(len(records))))}
    sources = sorted({r.source for r in records})
    if len(sources) > 1:
        point["per_source"] = {source: rates([i for i, r in enumerate(records) if r.source == source]) for source in sources}
    return point


def evaluate_extractor(
    data_dir: DataRoots,
    writers: str | Sequence[str] | None = None,
    checkpoint: str | os.PathLike = "default",
    *,
    threshold: float | None = None,
    references: int | None = None,
    background_writers: str | Sequence[str] | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """docs/design.md's writer-independent protocol on ``data_dir`` (one or several folders, CEDAR or
    writer folders).

    Per writer, positives are all genuine–genuine pairs and negatives all genuine–skilled-forgery
    pairs; one global threshold. FAR/FRR are at ``threshold``, by default the checkpoint's calibrated
    one. ``eer_ci`` is a 95% bootstrap interval over writers; with several sources, ``per_source``
    holds the same report for each. With ``references=K``, ``references`` adds the gallery protocol
    (:mod:`signver_torch.matcher.evaluation`) for each decision rule; the writer-dependent SVMs use
    the genuine signatures of ``background_writers`` (never among ``writers``) as background.
    """
    records = discover_signatures(data_dir, writers)
    extractor = MetricExtractor(device=device).load(checkpoint)
    embeddings, seconds = embed_records(extractor, records, progress)
    operating = extractor.threshold if threshold is None else threshold

    def report_of(chosen: list[int]) -> dict[str, Any]:
        return writer_protocol_metrics(embeddings[chosen], [records[i].writer for i in chosen],
                                       [records[i].forged for i in chosen], operating, BOOTSTRAP_RESAMPLES)

    report = report_of(list(range(len(records))))
    sources = sorted({record.source for record in records})
    if len(sources) > 1:
        report["per_source"] = {source: report_of([i for i, r in enumerate(records) if r.source == source]) for source in sources}
    if references is not None:
        from signver_torch.matcher.evaluation import reference_protocol

        background = None
        if background_writers is not None:
            bank = [r for r in discover_signatures(data_dir, background_writers) if not r.forged]
            if {r.writer for r in bank} & {r.writer for r in records}:
                raise SignVerError("--background-writers must not include the evaluated writers")
            background = embed_records(extractor, bank, progress)[0].numpy()
        report["references"] = reference_protocol(
            embeddings.numpy(), [r.writer for r in records], [r.forged for r in records], references, background,
            extractor.card.get("decision_thresholds"), [r.source for r in records])
        report["references"]["background_writers"] = writers_text(background_writers)
    return {
        **report,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": extractor.sha256,
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
    written beside the weights. The checkpoint is rewritten atomically (its card loses the old metrics:
    rerun the evaluate command); the backbone is untouched, so running it twice changes nothing.
    """
    if target_far is not None and not 0 < target_far < 1:
        raise SignVerError(f"--target-far must be between 0 and 1, not {target_far}")
    if references is None and (background_writers is not None or rule is not None):
        raise SignVerError("--background-writers and --rule calibrate the per-person decision: give --references K too")
    weights = resolve_checkpoint("extractor", checkpoint).weights
    extractor = MetricExtractor(device=device).load(weights)
    held_out = discover_signatures(data_dir, val_writers)
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
    embeddings, _ = embed_records(extractor, held_out, progress)
    held_writers, held_forged = [r.writer for r in held_out], [r.forged for r in held_out]
    calibration = writer_protocol_metrics(embeddings, held_writers, held_forged)
    held = writers_text(val_writers) or "all"
    if target_far is None:
        threshold = calibration["threshold_at_eer"]
        described = f"cosine distance at the EER ({calibration['negatives']} forgeries) of the held-out writers {held}"
    else:
        negatives = writer_protocol_distances(embeddings, held_writers, held_forged)[calibration["negatives"]]
        threshold = float(negatives.quantile(target_far, interpolation="lower"))
        described = f"cosine distance where the FAR ({calibration['negatives']} forgeries) of writers {held} is {target_far:g}"
    command = ["calibrate", "extractor", "--data", *map(str, data_roots(data_dir))]
    command += [*(["--writers", writers_text(writers)] if writers is not None else []),
                *(["--val-writers", held] if val_writers is not None else []),
                *(["--target-far", f"{target_far:g}"] if target_far is not None else []),
                *(["--references", str(references)] if references is not None else []),
                *(["--background-writers", writers_text(background_writers)] if background_writers is not None else []),
                *(["--rule", rule] if rule is not None else []), "--checkpoint", str(weights)]
    background = None
    if references is not None:
        bank = [r for r in discover_signatures(data_dir, background_writers) if not r.forged] if background_writers is not None else []
        if {r.writer for r in bank} & set(held_writers):
            raise SignVerError("--background-writers and --val-writers share writers: the background must be other people")
        bank_embeddings = embed_records(extractor, bank, progress)[0] if bank else None
        card["decision"], background = calibrate_decision(
            embeddings.numpy(), held_out, references, bank_embeddings, rule, target_far)
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
        "operating_point": _operating_point(embeddings, held_out, threshold),
    })
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
    from signver_torch.matcher.decisions import RULES
    from signver_torch.matcher.evaluation import claim_scores, protocol_report

    if references < 1:
        raise SignVerError(f"--references must be at least 1, not {references}")
    if rule is not None and rule not in RULES:
        raise SignVerError(f"--rule must be one of {', '.join(RULES)}, not {rule!r}")
    if rule == "svm" and background is None:
        raise SignVerError("--rule svm needs --background-writers (the genuine signatures it learns each person against)")
    writers, forged = [r.writer for r in records], [r.forged for r in records]
    bank = None if background is None else background.numpy()
    measured = [name for name in RULES if name != "svm" or bank is not None]
    scores = claim_scores(embeddings, writers, forged, references, bank, measured)
    source_of = {r.writer: r.source for r in records}
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
        "threshold_from": "EER of the held-out writers" if target_far is None else f"FAR {target_far:g} on the held-out writers' forgeries",
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
