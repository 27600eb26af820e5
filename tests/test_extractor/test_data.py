"""The extractor's training data (``extractor/data.py``): augmentation that keeps the ink, held-out writers,
batches that put forgeries beside their genuine signatures."""

from __future__ import annotations

from pathlib import Path

import torch

from signver_torch.data.signatures import class_labels, discover_signatures, writer_split
from signver_torch.extractor.data import SignatureAugment, WriterBatchSampler, holdout_writers


def test_augmentation_keeps_shape_range_and_ink() -> None:
    torch.manual_seed(0)
    canvas = torch.zeros(8, 1, 112, 192)
    canvas[:, :, 50:60, 40:150] = 1.0
    out = SignatureAugment()(canvas)
    assert out.shape == canvas.shape and out.min() >= 0 and out.max() <= 1
    assert (out.flatten(1).sum(1) > 0.3 * canvas.flatten(1).sum(1)).all()
    assert not torch.allclose(out, canvas)


def test_holdout_takes_the_complement_or_the_last_fifth(small_data: Path) -> None:
    records = discover_signatures(small_data)
    train, val = holdout_writers(records, None, None, 0.2)
    assert val == ["37", "39"] and train == ["1", "2", "35", "36"]  # at least two held out
    train, val = holdout_writers(records, "1-2,35", None, 0.2)
    assert val == ["36", "37", "39"]
    train, val = holdout_writers(records, None, "39", 0.2)
    assert train == ["1", "2", "35", "36", "37"]


def test_writer_batches_put_forgeries_beside_their_genuine(small_data: Path) -> None:
    records = discover_signatures(small_data)
    [train] = writer_split(records, "35-37,39")
    labels, _ = class_labels(train)
    sampler = WriterBatchSampler(labels, writers_per_batch=2, per_class=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4  # ceil(40 signatures / 12 a batch)
    for batch in batches:
        batch_labels = labels[batch]
        assert len(batch) == 12
        writers = (batch_labels // 2).unique()
        assert len(writers) == 2
        for writer in writers:
            assert (batch_labels == 2 * writer).sum() == 3 and (batch_labels == 2 * writer + 1).sum() == 3
    assert list(sampler) == batches, "an epoch is fixed by the seed and the epoch number"
    sampler.set_epoch(1)
    assert list(sampler) != batches, "a new epoch draws new batches"
