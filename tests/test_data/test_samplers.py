"""The samplers (``data/samplers.py``, the extractor's writer batches): ranks split each epoch without
duplicates."""

from __future__ import annotations

import torch

from signver_torch.data.samplers import ShuffledSampler, StreamSampler
from signver_torch.extractor.data import WriterBatchSampler


def union_of_ranks(make, world: int) -> list:
    shares = []
    for rank in range(world):
        sampler = make(rank, world)
        sampler.set_epoch(3)
        shares.append(list(sampler))
        assert len(shares[-1]) == len(sampler)
    return shares


def test_ranks_split_each_epoch_without_duplicates() -> None:
    labels = torch.arange(12).repeat_interleave(4)  # 6 writers, genuine and forged, 4 each
    one = union_of_ranks(lambda rank, world: WriterBatchSampler(labels, 2, 2, seed=7, rank=rank, world_size=world), 1)[0]
    two = union_of_ranks(lambda rank, world: WriterBatchSampler(labels, 2, 2, seed=7, rank=rank, world_size=world), 2)
    assert len(one) == 6 and [len(share) for share in two] == [3, 3]
    assert sorted(map(tuple, two[0] + two[1])) == sorted(map(tuple, one))  # the 1-rank epoch, shared out

    streams = union_of_ranks(lambda rank, world: StreamSampler(2**31 - 1, 64, seed=1, rank=rank, world_size=world), 2)
    [whole] = union_of_ranks(lambda rank, world: StreamSampler(2**31 - 1, 64, seed=1, rank=rank, world_size=world), 1)
    assert sorted(streams[0] + streams[1]) == sorted(whole) and not set(streams[0]) & set(streams[1])

    pages = union_of_ranks(lambda rank, world: ShuffledSampler(11, seed=2, rank=rank, world_size=world), 2)
    assert [len(share) for share in pages] == [5, 5] and len(set(pages[0] + pages[1])) == 10
    next_epoch = ShuffledSampler(11, seed=2)
    next_epoch.set_epoch(4)
    assert list(next_epoch) != union_of_ranks(lambda rank, world: ShuffledSampler(11, seed=2), 1)[0]
