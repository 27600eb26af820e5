"""What every module's DataModule shares to train on several devices: each rank's share of an epoch
(drawn alike on every rank from a shared seed), the rank and world size of a Trainer, and where
``setup`` preprocesses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import torch
from torch.utils.data import Sampler

if TYPE_CHECKING:
    import lightning


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
