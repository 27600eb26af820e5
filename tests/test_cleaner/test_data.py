"""The cleaner's dirty/clean pairs (``cleaner/data.py``) on real signatures: fixed by seed and index, dirt
added over a target of ink on white, cheap enough to draw on the fly."""

from __future__ import annotations

import numpy as np
import torch

from signver_torch.cleaner.data import DirtConfig, DirtyPairs


def test_pairs_are_fixed_by_seed_and_index(ink_maps: list[np.ndarray]) -> None:
    pairs = DirtyPairs(ink_maps, 50, seed=3)
    dirty, clean = pairs[7]
    again_dirty, again_clean = DirtyPairs(ink_maps, 50, seed=3)[7]
    assert torch.equal(dirty, again_dirty) and torch.equal(clean, again_clean)
    assert not torch.equal(dirty, DirtyPairs(ink_maps, 50, seed=4)[7][0])
    assert not torch.equal(dirty, pairs[8][0])


def test_pairs_add_dirt_but_the_target_is_ink_on_white(ink_maps: list[np.ndarray]) -> None:
    config = DirtConfig(p_skew=0.0)
    pairs = DirtyPairs(ink_maps, 40, seed=0, config=config)
    for index in range(40):
        dirty, clean = pairs[index]
        assert dirty.shape == clean.shape == (1, config.height, config.width)
        assert 0 <= float(dirty.min()) and float(dirty.max()) <= 1 and 0 <= float(clean.min()) and float(clean.max()) <= 1
        paper = clean == 1.0
        assert 0.5 < paper.float().mean() < 1.0  # mostly white paper, some ink
        # the dirty page is never cleaner than its target: paper darkened, lines and text added
        assert float((dirty - clean).abs().mean()) > 0.01
        # where the target has dark ink the dirty page is darker than its paper (the ink is not invented)
        strong_ink = clean < 0.3
        if strong_ink.any():
            assert float(dirty[strong_ink].mean()) < float(dirty[paper].mean()) - 0.08  # the pen may be faint


def test_pairs_are_fast_enough_to_draw_on_the_fly(ink_maps: list[np.ndarray]) -> None:
    import time

    pairs = DirtyPairs(ink_maps, 100, seed=0)
    start = time.perf_counter()
    for index in range(100):
        pairs[index]
    assert time.perf_counter() - start < 10  # a pair costs far less than a training step on it
