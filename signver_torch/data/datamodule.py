"""The LightningDataModules that train each module: the extractor's writer-disjoint, writer-grouped
batches, the cleaner's dirty/clean pairs and the detector's pages.

Only training imports this file (it imports Lightning); the readers, synthesizers and preprocessing
that inference uses live in the other ``data`` files.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import lightning
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler, TensorDataset
from tqdm.auto import tqdm

from signver_torch.data.detection import DetectionPages, PageRecord, read_detection_dataset, split_pages
from signver_torch.data.dirt import EVAL_SEED, DirtConfig, DirtyPairs, load_ink_maps
from signver_torch.data.page_transforms import Augmented, Letterboxed, PaddedTargets, collate_pages
from signver_torch.data.pages import PageConfig, SyntheticPages
from signver_torch.data.preprocess import PreprocessConfig, SignaturePreprocessor
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


def preprocess_records(
    records: Sequence[SignatureRecord],
    preprocessor: SignaturePreprocessor,
    *,
    batch_size: int = 64,
    description: str = "preprocessing",
    device: torch.device | str = "cpu",
    classes: str = "writer",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load and preprocess ``records`` into ``(N, 1, H, W)`` uint8 canvases (on the CPU) and their labels
    (:func:`~signver_torch.data.signatures.class_labels` of ``classes``); the preprocessing itself runs on ``device``.

    Blank scans (no ink found) are dropped with a warning naming them, never trained on as zeros.
    """
    images = SignatureImages(records, classes)
    loader = DataLoader(images, batch_size=batch_size, collate_fn=list)
    canvases = []
    with tqdm(total=len(images), desc=description, unit="img", file=sys.stderr, leave=False) as bar:
        for batch in loader:
            canvas = preprocessor([image.to(device) for image, _ in batch], strict=False)
            canvases.append((canvas * 255).round().to(torch.uint8).cpu())
            bar.update(len(batch))
    canvas = torch.cat(canvases)
    has_ink = canvas.flatten(1).amax(1) > 0
    if not has_ink.all():
        blank = [str(records[i].path) for i in (~has_ink).nonzero().flatten().tolist()]
        warnings.warn(f"skipping {len(blank)} blank signature image(s): {', '.join(blank)}", stacklevel=2)
    return canvas[has_ink], images.labels[has_ink]


class RankShare:
    """One rank's share of an epoch: every rank draws the same epoch from a seed shared by all ranks
    and ``set_epoch`` (Lightning calls it on ``DataLoader.sampler`` each epoch), then keeps items
    ``rank, rank + world_size, ...``. The ranks' shares are disjoint and together make the epoch, so
    N devices split an epoch's work instead of each repeating it."""

    def __init__(self, seed: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)

    def share(self, items: list) -> list:
        return items[self.rank :: self.world_size]


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


class StreamSampler(RankShare, Sampler[int]):
    """``num_samples`` indices a epoch drawn from ``range(length)`` (with replacement: the cleaner's
    pair stream is practically unbounded, so an epoch never repeats another), this rank's share."""

    def __init__(self, length: int, num_samples: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(seed, rank, world_size)
        self.length, self.num_samples = length, num_samples - num_samples % world_size

    def __len__(self) -> int:
        return self.num_samples // self.world_size

    def __iter__(self) -> Iterator[int]:
        yield from self.share(torch.randint(self.length, (self.num_samples,), generator=self.generator()).tolist())


class ShuffledSampler(RankShare, Sampler[int]):
    """A fresh permutation of ``range(length)`` each epoch, this rank's share (the tail that does not
    divide by ``world_size`` is left out of that epoch, like ``DistributedSampler(drop_last=True)``)."""

    def __init__(self, length: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(seed, rank, world_size)
        self.length, self.kept = length, length - length % world_size

    def __len__(self) -> int:
        return self.kept // self.world_size

    def __iter__(self) -> Iterator[int]:
        yield from self.share(torch.randperm(self.length, generator=self.generator())[: self.kept].tolist())


def preprocessing_device(trainer: lightning.Trainer | None) -> torch.device:
    """Where ``setup`` preprocesses the scans: the run's CUDA device (per-image kornia work, which on a
    GPU host with several runs side by side would otherwise queue on shared CPU cores), else the CPU
    (an HPU would compile a graph for every image size)."""
    device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
    return device if device.type == "cuda" else torch.device("cpu")


def rank_and_world(trainer: lightning.Trainer | None) -> tuple[int, int]:
    """This process's rank and the number of ranks (0 and 1 outside a Trainer)."""
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


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
        seed: int = 0,
        num_workers: int = 0,
        val_fraction: float = 0.2,
        classes: str = "writer",
        same_text_batches: bool = False,
    ) -> None:
        super().__init__()
        if classes not in CLASS_KINDS:
            raise DataError(f"classes must be one of {', '.join(CLASS_KINDS)}, not {classes!r}")
        if same_text_batches and classes != "writer_text":
            raise DataError("same_text_batches groups (writer, text) classes by their text: set classes to writer_text")
        self.save_hyperparameters()
        self.preprocessor = SignaturePreprocessor(PreprocessConfig(height=height, width=width))
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
                                                           classes=hp.classes))
        keys = class_labels(train, hp.classes)[1]
        self.class_texts = [key.partition("/")[2] or None for key in keys] if hp.classes == "writer_text" else None
        if val:
            self.val_set = TensorDataset(*preprocess_records(val, self.preprocessor, description="val signatures", device=device))
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


#: Size of the index stream training pairs are drawn from (each index is a distinct pair).
STREAM_LENGTH = 2**31 - 1


class CleanerDataModule(lightning.LightningDataModule):
    """Dirty/clean pairs drawn on the fly from the training writers' signatures, fixed pairs from the held-out ones.

    Each epoch draws ``samples_per_epoch`` fresh pairs, shared out among the ranks (indices sampled
    from an unbounded stream, so no two epochs repeat); validation uses ``val_pairs`` pairs fixed by
    :data:`EVAL_SEED`, the same pairs ``signver evaluate cleaner`` builds from the same writers.
    """

    def __init__(
        self,
        data_dir: str | Path,
        train_writers: str | Sequence[str] | None = "1-32",
        val_writers: str | Sequence[str] | None = "33-40",
        height: int = 128,
        width: int = 256,
        batch_size: int = 16,
        samples_per_epoch: int = 2048,
        val_pairs: int = 256,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dirt = DirtConfig(height=height, width=width)
        self.train_set: DirtyPairs | None = None
        self.val_set: DirtyPairs | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        records = discover_signatures(hp.data_dir)
        train, val = writer_split(records, hp.train_writers, hp.val_writers)
        self.train_records, self.val_records = train, val
        self.train_set = DirtyPairs(load_ink_maps(train), STREAM_LENGTH, hp.seed, self.dirt)
        self.val_set = DirtyPairs(load_ink_maps(val), hp.val_pairs, EVAL_SEED, self.dirt)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        sampler = StreamSampler(STREAM_LENGTH, self.hparams.samples_per_epoch, self.hparams.seed, *rank_and_world(self.trainer))
        return DataLoader(
            self.train_set, self.hparams.batch_size, sampler=sampler, num_workers=self.hparams.num_workers,
            drop_last=True, persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "call setup() first"
        return DataLoader(self.val_set, self.hparams.batch_size * 2, num_workers=self.hparams.num_workers)


class PageDataModule(lightning.LightningDataModule):
    """Synthetic pages (all four classes, signatures from the training writers) plus, optionally, the
    real labelled pages of ``real_dir`` not held out. Validation: the held-out real pages (every
    ``held_out_every``-th by file name) and fixed synthetic pages from the validation writers.

    ``max_boxes`` pads every training page's boxes to that many on the host
    (:class:`~signver_torch.data.page_transforms.PaddedTargets`): batches of one shape, which the
    detector's loss reads without a host sync; ``None`` keeps torchvision's list of targets.
    """

    def __init__(
        self,
        signatures_dir: str | Path,
        train_writers: str = "1-32",
        val_writers: str = "33-40",
        real_dir: str | Path | None = None,
        held_out_every: int = 3,
        real_repeat: int = 2,
        synthetic_pages: int = 1000,
        val_synthetic_pages: int = 64,
        image_size: int = 640,
        batch_size: int = 4,
        seed: int = 0,
        num_workers: int = 0,
        max_boxes: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_collate = PaddedTargets(max_boxes) if max_boxes else collate_pages
        self.train_set: Dataset | None = None
        self.val_sets: list[Dataset] = []
        self.real_train: list[PageRecord] = []
        self.real_val: list[PageRecord] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        records = discover_signatures(hp.signatures_dir)
        train_writers, val_writers = writer_split(records, hp.train_writers, hp.val_writers)
        config = PageConfig(size=hp.image_size)
        parts: list[Dataset] = [SyntheticPages(load_ink_maps(train_writers), hp.synthetic_pages, hp.seed, config)]
        if hp.real_dir is not None:
            self.real_train, self.real_val = split_pages(read_detection_dataset(hp.real_dir), hp.held_out_every)
            parts += [Letterboxed(DetectionPages(self.real_train), hp.image_size)] * hp.real_repeat
            self.val_sets.append(Letterboxed(DetectionPages(self.real_val), hp.image_size))
        self.train_set = Augmented(ConcatDataset(parts), hp.seed)
        self.val_sets.append(SyntheticPages(load_ink_maps(val_writers), hp.val_synthetic_pages, hp.seed + 10_000, config))

    @property
    def val_names(self) -> list[str]:
        return (["real"] if self.hparams.real_dir is not None else []) + ["synthetic"]

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        self.train_set.epoch = self.trainer.current_epoch if self.trainer is not None else 0  # type: ignore[attr-defined]
        sampler = ShuffledSampler(len(self.train_set), self.hparams.seed, *rank_and_world(self.trainer))
        return DataLoader(
            self.train_set, self.hparams.batch_size, sampler=sampler, drop_last=True,
            collate_fn=self.train_collate, num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> list[DataLoader]:
        return [
            DataLoader(dataset, self.hparams.batch_size, collate_fn=collate_pages, num_workers=self.hparams.num_workers)
            for dataset in self.val_sets
        ]
