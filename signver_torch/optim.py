"""The one optimiser and schedule every module trains with: AdamW, one-cycle learning rate per step."""

from __future__ import annotations

from typing import Any, Iterable

import torch


def adamw_one_cycle(
    parameters: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    lr: float,
    weight_decay: float,
    total_steps: int,
    warmup_fraction: float,
) -> dict[str, Any]:
    """AdamW and a one-cycle schedule over ``total_steps`` (``warmup_fraction`` of them rising), in the
    form ``LightningModule.configure_optimizers`` returns. A parameter group's own ``lr`` is its peak."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=max(1, int(total_steps)),
        pct_start=warmup_fraction,
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
