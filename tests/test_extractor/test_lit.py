"""The extractor's LightningModule (``extractor/lit.py``): a real training signal, frozen layers, the weight average."""

from __future__ import annotations

import pytest
import torch

from signver_torch.extractor.lit import ExtractorModule


def fit_fixed_batch(module: ExtractorModule, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    """``steps`` optimiser steps of the module's loss and miner on one sparse random batch of 4 classes;
    returns the losses."""
    canvas = torch.rand(16, 1, 112, 192) * (torch.rand(16, 1, 112, 192) > 0.9)
    labels = torch.arange(4).repeat_interleave(4)
    losses = []
    for _ in range(steps):
        embeddings = module(canvas)
        loss = module.loss_fn(embeddings, labels, module.miner(embeddings, labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_training_steps_pull_same_class_together() -> None:
    """A few optimiser steps on a fixed batch lower the metric-learning loss (the loop really learns)."""
    torch.manual_seed(0)
    module = ExtractorModule(backbone="resnet10t", loss="multi_similarity", augment=False)
    losses = fit_fixed_batch(module, torch.optim.AdamW(module.parameters(), lr=1e-3), steps=8)
    assert losses[-1] < 0.8 * losses[0]


def test_frozen_layers_keep_their_weights_and_statistics_while_the_rest_trains() -> None:
    """``freeze``: frozen submodules get no gradient, are left out of the optimiser and keep their
    batch-norm statistics in training mode; the unfrozen layers still move."""
    torch.manual_seed(0)
    frozen_names = ["backbone.conv1", "backbone.bn1", "backbone.layer1"]
    module = ExtractorModule(backbone="resnet10t", loss="multi_similarity", augment=False, freeze=frozen_names)
    before = {name: tensor.clone() for name, tensor in module.model.state_dict().items()}
    optimizer = module.optimization(total_steps=4)["optimizer"]
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == sum(
        p.numel() for p in module.model.parameters() if p.requires_grad) < sum(p.numel() for p in module.model.parameters())
    module.train()
    assert not module.model.backbone.layer1.training and module.model.backbone.layer2.training
    fit_fixed_batch(module, optimizer, steps=2)
    after = module.model.state_dict()
    for name, tensor in before.items():
        frozen = any(name.startswith(prefix + ".") for prefix in frozen_names)
        assert torch.equal(after[name], tensor) == frozen or "num_batches_tracked" in name, name
    with pytest.raises(ValueError, match="no submodule 'backbone.layer9'.*backbone, head"):
        ExtractorModule(backbone="resnet10t", freeze=["backbone.layer9"])


def test_weight_average_trails_the_trained_weights() -> None:
    module = ExtractorModule(backbone="signet", ema_decay=0.9, augment=False)
    assert module.export_model is module.ema.module
    module.on_train_batch_end(None, None, 0)  # the first update copies the weights
    first = next(module.model.parameters()).detach().clone()
    with torch.no_grad():
        for parameter in module.model.parameters():
            parameter.add_(1.0)
    module.on_train_batch_end(None, None, 1)
    averaged = next(module.export_model.parameters())
    torch.testing.assert_close(averaged, first + 0.1)
    plain = ExtractorModule(backbone="signet")
    assert plain.ema is None and plain.export_model is plain.model
