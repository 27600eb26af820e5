"""The cleaner's LightningModule (``cleaner/lit.py``): its loss terms, and training steps that learn to clean."""

from __future__ import annotations

import numpy as np
import torch

from signver_torch.cleaner.data import DirtConfig, DirtyPairs
from signver_torch.cleaner.lit import CleanerModule, soft_dice_loss


def test_dice_loss_rewards_overlap_only() -> None:
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:8, 4:12] = 1
    assert float(soft_dice_loss(target, target)) < 0.02
    assert float(soft_dice_loss(torch.zeros_like(target), target)) > 0.95
    assert float(soft_dice_loss(1 - target, target)) > 0.95


def test_the_squared_error_term_scores_grey_levels(ink_maps: list[np.ndarray]) -> None:
    pairs = DirtyPairs(ink_maps, 4, seed=1, config=DirtConfig(height=64, width=128))
    dirty, clean = (torch.stack(column) for column in zip(*(pairs[i] for i in range(4))))
    torch.manual_seed(0)
    plain = CleanerModule(channels=4, depth=2, dice_weight=0.0)
    torch.manual_seed(0)
    weighted = CleanerModule(channels=4, depth=2, dice_weight=0.0, mse_weight=5.0)
    probability = torch.sigmoid(plain(dirty))
    expected = 5.0 * torch.nn.functional.mse_loss(probability, 1 - clean)
    gap = weighted.training_step((dirty, clean), 0) - plain.training_step((dirty, clean), 0)
    torch.testing.assert_close(gap, expected, rtol=1e-4, atol=1e-6)


def test_training_steps_learn_to_clean(ink_maps: list[np.ndarray]) -> None:
    torch.manual_seed(0)
    module = CleanerModule(channels=4, depth=2, lr=5e-3)
    pairs = DirtyPairs(ink_maps, 8, seed=0, config=DirtConfig(height=64, width=128))
    dirty, clean = (torch.stack(column) for column in zip(*(pairs[i] for i in range(8))))
    optimizer = torch.optim.Adam(module.parameters(), lr=5e-3)
    losses = []
    for _ in range(40):
        loss = module.training_step((dirty, clean), 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.85 * losses[0]
