"""Training under CPU bf16 autocast: the metric-learning loss stays in float32, so runs resume."""

from __future__ import annotations

import torch

from signver_torch.extractor.lit import ExtractorModule


def test_bf16_autocast_keeps_the_proxies_and_their_gradients_in_float32() -> None:
    torch.manual_seed(0)
    module = ExtractorModule(backbone="resnet18", loss="proxy_anchor", augment=False)
    module.configure_loss(8)
    canvas, labels = torch.rand(8, 1, 112, 192), torch.tensor([0, 0, 2, 2, 4, 4, 6, 6])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = module.training_loss((canvas, labels))
    loss.backward()
    proxies = module.loss_fn.proxies
    assert proxies.dtype == torch.float32 and proxies.grad is not None and proxies.grad.dtype == torch.float32
    assert torch.isfinite(loss) and loss.dtype == torch.float32
