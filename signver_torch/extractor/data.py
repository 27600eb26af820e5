"""The extractor's training data: signatures preprocessed once into canvases, writer-grouped batches,
the LightningDataModule (writer-disjoint splits) and the on-device augmentation the LightningModule
applies to each batch.

Only training imports this file (it imports Lightning); the preprocessing inference shares with
training is in :mod:`~signver_torch.extractor.transforms`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import kornia.augmentation as K
import lightning
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler, Subset, TensorDataset
from tqdm.auto import tqdm

from signver_torch.data.samplers import RankShare, preprocessing_device, rank_and_world
from signver_torch.data.signatures import (
    CLASS_KINDS,
    SignatureImages,
    SignatureRecord,
    class_labels,
    discover_signatures,
    parse_writers,
    writer_split,
)
from signver_torch.errors import DataError
from signver_torch.extractor.transforms import PreprocessConfig, SignaturePreprocessor


def preprocess_records(
    records: Sequence[SignatureRecord],
    preprocessor: SignaturePreprocessor,
    *,
    batch_size: int = 64,
    description: str = "preprocessing",
    device: torch.device | str = "cpu",
    classes: str = "writer",
    cache_dir: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load and preprocess ``records`` into ``(N, 1, H, W)`` uint8 canvases (on the CPU) and their labels
    (:func:`~signver_torch.data.signatures.class_labels` of ``classes``); the preprocessing itself runs on ``device``.

    With ``cache_dir``, each canvas is kept there under a key of the preprocessing settings and of its
    file's path, size and modification time (:func:`canvas_cache_path`), so later runs on any mix of the
    same scans skip the work; a changed file or setting is a new key, an unreadable entry is rebuilt.
    Blank scans (no ink found) are dropped with a warning naming them, never trained on as zeros.
    """
    images = SignatureImages(records, classes)
    cached = [canvas_cache_path(record, preprocessor, cache_dir) for record in records] if cache_dir is not None else None
    found = [_read_cached(path) for path in cached] if cached is not None else [None] * len(records)
    missing = [i for i, canvas in enumerate(found) if canvas is None]
    loader = DataLoader(Subset(images, missing), batch_size=batch_size, collate_fn=list)
    with tqdm(total=len(missing), desc=description, unit="img", file=sys.stderr, leave=False) as bar:
        for offset, batch in zip(range(0, len(missing), batch_size), loader):
            made = (preprocessor([image.to(device) for image, _ in batch], strict=False) * 255).round().to(torch.uint8).cpu()
            for i, canvas in zip(missing[offset:], made):
                found[i] = canvas
                if cached is not None:
                    _write_cached(cached[i], canvas)
            bar.update(len(batch))
    canvas = torch.stack(found)
    has_ink = canvas.flatten(1).amax(1) > 0
    if not has_ink.all():
        blank = [str(records[i].path) for i in (~has_ink).nonzero().flatten().tolist()]
        warnings.warn(f"skipping {len(blank)} blank signature image(s): {', '.join(blank)}", stacklevel=2)
    return canvas[has_ink], images.labels[has_ink]


def canvas_cache_path(record: SignatureRecord, preprocessor: SignaturePreprocessor, cache_dir: str | os.PathLike) -> Path:
    """Where :func:`preprocess_records` keeps the canvas of ``record``: a folder per preprocessing
    setting, a file named by the sha256 of the scan's resolved path, size and modification time."""
    setting = hashlib.sha256(json.dumps(preprocessor.config(), sort_keys=True).encode()).hexdigest()[:16]
    stat = record.path.stat()
    key = hashlib.sha256(f"{record.path.resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    return Path(cache_dir).expanduser() / f"canvases-{setting}" / f"{key}.safetensors"


def _read_cached(path: Path) -> torch.Tensor | None:
    if not path.is_file():
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        canvas = load_file(path)["canvas"]
    except (SafetensorError, KeyError, OSError, RuntimeError):
        return None  # rebuilt and rewritten
    return canvas if canvas.dtype == torch.uint8 and canvas.ndim == 3 else None


def _write_cached(path: Path, canvas: torch.Tensor) -> None:
    """Write under a temporary name, then rename: a crash never leaves a half-written entry."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    save_file({"canvas": canvas.contiguous()}, partial)
    os.replace(partial, path)


class WriterBatchSampler(RankShare, Sampler[list[int]]):
    """Batches of ``writers_per_batch`` writers, each with ``per_class`` genuine and ``per_class`` forged.

    PML's ``MPerClassSampler`` draws classes independently, so a writer's genuine and forged classes
    rarely meet in a batch; grouping by writer puts every skilled forgery next to the signatures it
    imitates, which is the negative that matters for verification. Writers without forgeries
    contribute genuine signatures only. Classes smaller than ``per_class`` are drawn with replacement.

    With ``texts`` (the declared text of each class, ``None`` where there is none), classes of the same
    text are batched together: a batch then holds several writers writing the same name, the
    content-matched impostors a set without forgeries offers. Classes without a text are batched as before,
    each group's batches repeated within a pass in proportion to its signatures, so that every group's
    signatures are drawn at the same rate whatever the size of its classes.

    It yields whole batches, so it is the DataLoader's ``sampler`` with ``batch_size=None`` (where
    Lightning finds its ``set_epoch``); an epoch is rounded up to a multiple of ``world_size`` batches.
    """

    def __init__(
        self, labels: torch.Tensor, writers_per_batch: int, per_class: int, seed: int = 0, rank: int = 0, world_size: int = 1,
        texts: Sequence[str | None] | None = None,
    ) -> None:
        super().__init__(seed, rank, world_size)
        self.by_class = {int(c): (labels == c).nonzero().flatten() for c in labels.unique()}
        self.writers = sorted({c // 2 for c in self.by_class})
        if len(self.writers) < 2:
            raise DataError("training needs at least 2 writers")
        self.writers_per_batch = min(writers_per_batch, len(self.writers))
        self.per_class = per_class
        groups: dict[str | None, list[int]] = {}
        for writer in self.writers:
            groups.setdefault(texts[writer] if texts is not None else None, []).append(writer)
        self.groups = list(groups.values())
        # each group's share of its signatures that one pass over its batches draws; the groups drawn
        # least are repeated until every group's signatures are drawn at about the same rate
        coverage = [math.ceil(len(group) / self.writers_per_batch) * self.writers_per_batch * per_class
                    * sum(label in self.by_class for w in group for label in (2 * w, 2 * w + 1)) / len(group)
                    / sum(len(self.by_class.get(label, ())) for w in group for label in (2 * w, 2 * w + 1))
                    for group in self.groups]
        self.repeats = [max(1, round(max(coverage) / share)) for share in coverage]
        epoch_batches = max(1, math.ceil(len(labels) / (self.writers_per_batch * 2 * per_class)))
        self.batches = math.ceil(epoch_batches / world_size)  # per rank

    def __len__(self) -> int:
        return self.batches

    def _chunks(self, generator: torch.Generator) -> list[list[int]]:
        """One pass over every class: each group (a text, or the classes without one) shuffled and cut
        into full batches of ``writers_per_batch`` (the last one filled from a fresh shuffle of its
        group), the batches in random order."""
        size, chunks = self.writers_per_batch, []
        for group, repeats in zip(self.groups, self.repeats):
            wanted = math.ceil(len(group) / size) * repeats
            stream: list[int] = []
            while len(stream) < wanted * size:
                stream += [group[i] for i in torch.randperm(len(group), generator=generator)]
            chunks += [stream[i * size : (i + 1) * size] for i in range(wanted)]
        return [chunks[i] for i in torch.randperm(len(chunks), generator=generator)]

    def __iter__(self) -> Iterator[list[int]]:
        generator = self.generator()
        chunks: list[list[int]] = []
        batches: list[list[int]] = []
        for _ in range(self.batches * self.world_size):
            if not chunks:
                chunks = self._chunks(generator)
            batch: list[int] = []
            for writer in chunks.pop():
                for label in (2 * writer, 2 * writer + 1):
                    members = self.by_class.get(label)
                    if members is None:
                        continue
                    if len(members) >= self.per_class:
                        picks = members[torch.randperm(len(members), generator=generator)[: self.per_class]]
                    else:
                        picks = members[torch.randint(len(members), (self.per_class,), generator=generator)]
                    batch += picks.tolist()
            batches.append(batch)
        yield from self.share(batches)


def holdout_writers(
    records: Sequence[SignatureRecord],
    train_writers: str | Sequence[str] | None,
    val_writers: str | Sequence[str] | None,
    val_fraction: float,
) -> tuple[list[str], list[str]]:
    """Fill in a missing split: the given one's complement, or the last ``val_fraction`` of writers (at least 2)."""
    writers = list(dict.fromkeys(r.writer for r in records))
    if train_writers is not None:
        train = parse_writers(train_writers, writers)
        return train, [w for w in writers if w not in train]
    if val_writers is not None:
        val = parse_writers(val_writers, writers)
        return [w for w in writers if w not in val], val
    if len(writers) < 4:
        raise DataError(
            f"{len(writers)} writers found: at least 4 are needed to train and hold some out for calibration"
        )
    held_out = max(2, round(len(writers) * val_fraction))
    return writers[:-held_out], writers[-held_out:]


#: ``val_writers`` of a run that holds no writer out (it trains on ``train_writers``: name every writer
#: there): its thresholds come from a cross-validation of the same recipe afterwards
#: (``signver calibrate extractor --out-of-fold``).
NO_VALIDATION = "none"


class SignatureDataModule(lightning.LightningDataModule):
    """Train/validation signatures from one folder or several (sources: CEDAR or writer folders, writers
    then named ``source:id``), split by writer; batches draw writers of every source alike.

    ``classes="writer_text"`` makes each (writer, declared text) a class of its own
    (:func:`~signver_torch.data.signatures.class_key`), and ``same_text_batches`` fills a batch with
    writers of the same text (:class:`WriterBatchSampler`); validation always groups by writer.
    ``cache_dir`` keeps the canvases between runs (:func:`preprocess_records`).

    Images are decoded and preprocessed once in ``setup`` (a few seconds for CEDAR) and kept as uint8
    canvases; augmentation happens on the device in the LightningModule.
    """

    def __init__(
        self,
        data_dir: list[str] | str | Path,
        train_writers: str | Sequence[str] | None = "1-32",
        val_writers: str | Sequence[str] | None = "33-40",
        writers_per_batch: int = 8,
        per_class: int = 4,
        eval_batch_size: int = 128,
        height: int = 112,
        width: int = 192,
        otsu_sample: int = 2,
        seed: int = 0,
        num_workers: int = 0,
        val_fraction: float = 0.2,
        classes: str = "writer",
        same_text_batches: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if classes not in CLASS_KINDS:
            raise DataError(f"classes must be one of {', '.join(CLASS_KINDS)}, not {classes!r}")
        if same_text_batches and classes != "writer_text":
            raise DataError("same_text_batches groups (writer, text) classes by their text: set classes to writer_text")
        self.save_hyperparameters()
        self.preprocessor = SignaturePreprocessor(PreprocessConfig(height=height, width=width, otsu_sample=otsu_sample))
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        records = discover_signatures(hp.data_dir)
        train_writers, val_writers = hp.train_writers, hp.val_writers
        if val_writers == NO_VALIDATION:
            train, val = writer_split(records, train_writers)[0], []
        else:
            if train_writers is None or val_writers is None:
                train_writers, val_writers = holdout_writers(records, train_writers, val_writers, hp.val_fraction)
            train, val = writer_split(records, train_writers, val_writers)
            if len({r.writer for r in val}) < 2:
                raise DataError("validation needs at least 2 held-out writers (to measure and calibrate verification), "
                                f"or --val-writers {NO_VALIDATION} to train on every writer")
        self.train_records, self.val_records = train, val
        device = preprocessing_device(self.trainer)
        self.train_set = TensorDataset(*preprocess_records(train, self.preprocessor, description="train signatures", device=device,
                                                           classes=hp.classes, cache_dir=hp.cache_dir))
        keys = class_labels(train, hp.classes)[1]
        self.class_texts = [key.partition("/")[2] or None for key in keys] if hp.classes == "writer_text" else None
        if val:
            self.val_set = TensorDataset(*preprocess_records(val, self.preprocessor, description="val signatures", device=device,
                                                         cache_dir=hp.cache_dir))
        self.num_classes = int(self.train_set.tensors[1].max()) + 1  # 2 per class: genuine, forged

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        sampler = WriterBatchSampler(
            self.train_set.tensors[1], self.hparams.writers_per_batch, self.hparams.per_class, self.hparams.seed,
            *rank_and_world(self.trainer), texts=self.class_texts if self.hparams.same_text_batches else None,
        )
        # the sampler yields whole batches of indices: batch_size=None hands each to TensorDataset at once
        return DataLoader(self.train_set, sampler=sampler, batch_size=None, num_workers=self.hparams.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        assert self.train_set is not None, "call setup() first"
        if self.val_set is None:  # every writer trains (NO_VALIDATION): Lightning skips validation
            return []
        return DataLoader(self.val_set, batch_size=self.hparams.eval_batch_size, num_workers=self.hparams.num_workers)


class StrokeWidthJitter(nn.Module):
    """Thicken strokes of a random part of the batch by blending in a 3x3 max-pool, and with
    ``thin_p`` thin those of another part by blending in a 3x3 min-pool (pen, pencil and scanner all
    change stroke width; the writer stays the same).

    Shapes: ``(N, 1, H, W)`` ink canvases in ``[0, 1]`` (ink bright on a zero background) → the same.
    """

    def __init__(self, p: float = 0.5, max_strength: float = 0.8, thin_p: float = 0.0) -> None:
        super().__init__()
        self.p, self.max_strength, self.thin_p = p, max_strength, thin_p

    def forward(self, ink: torch.Tensor) -> torch.Tensor:
        n = ink.shape[0]
        strength = torch.rand(n, 1, 1, 1, device=ink.device) * self.max_strength
        draw = torch.rand(n, 1, 1, 1, device=ink.device)
        thick = F.max_pool2d(ink, 3, stride=1, padding=1)
        out = torch.maximum(ink, strength * (draw < self.p) * thick)
        if self.thin_p > 0:
            thin = -F.max_pool2d(-ink, 3, stride=1, padding=1)
            thinning = ((draw >= self.p) & (draw < self.p + self.thin_p)).to(ink.dtype) * strength
            out = out + thinning * (thin - out)
        return out


class InkGamma(nn.Module):
    """Raise the ink of each canvas to a random power in ``gamma`` (log-uniform): faint pencil, dark
    felt pen and thresholded tablet strokes have the same shape at other tones.

    Shapes: ``(N, 1, H, W)`` in ``[0, 1]`` → the same.
    """

    def __init__(self, gamma: tuple[float, float] = (0.5, 2.0), p: float = 0.5) -> None:
        super().__init__()
        self.low, self.high, self.p = math.log(gamma[0]), math.log(gamma[1]), p

    def forward(self, ink: torch.Tensor) -> torch.Tensor:
        n = ink.shape[0]
        exponent = torch.empty(n, 1, 1, 1, device=ink.device).uniform_(self.low, self.high).exp()
        exponent = torch.where(torch.rand(n, 1, 1, 1, device=ink.device) < self.p, exponent, torch.ones_like(exponent))
        return ink.clamp_min(0).pow(exponent)


class SignatureAugment(nn.Module):
    """Batched, on-device augmentation of ink canvases: affine, elastic, stroke width, ink intensity;
    ``robust_ink`` adds stroke thinning and ink tone changes (pen, pencil, tablet, faint scans)."""

    def __init__(self, degrees: float = 5.0, translate: float = 0.05, shear: float = 6.0, elastic_p: float = 0.3,
                 robust_ink: bool = False) -> None:
        super().__init__()
        self.geometry = K.AugmentationSequential(
            K.RandomAffine(degrees=degrees, translate=(translate, translate), scale=(0.85, 1.1), shear=(-shear, shear), p=0.9),
            K.RandomElasticTransform(kernel_size=(31, 31), sigma=(8.0, 8.0), alpha=(0.4, 0.4), p=elastic_p),
        )
        self.stroke = StrokeWidthJitter(p=0.4, thin_p=0.3) if robust_ink else StrokeWidthJitter()
        self.tone = InkGamma() if robust_ink else nn.Identity()

    def forward(self, ink: torch.Tensor) -> torch.Tensor:
        ink = self.tone(self.stroke(self.geometry(ink)))
        gain = torch.empty(ink.shape[0], 1, 1, 1, device=ink.device).uniform_(0.75, 1.15)
        return (ink * gain).clamp(0, 1)
