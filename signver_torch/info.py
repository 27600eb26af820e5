"""What ``signver info`` reports: versions, the accelerators present and the shipped checkpoints."""

from __future__ import annotations

import platform
from typing import Any

#: Distributions whose versions `signver info` reports, in this order.
REPORTED_PACKAGES = (
    "signver-torch",
    "torch",
    "torchvision",
    "lightning",
    "lightning-habana",
    "timm",
    "kornia",
    "pytorch-metric-learning",
    "torchmetrics",
    "numpy",
    "pillow",
    "safetensors",
    "faiss-cpu",
)


def collect_info() -> dict[str, Any]:
    """Versions, accelerators present and shipped checkpoints, as a JSON-ready dict."""
    from signver_torch.accelerators import describe_present, installed_version
    from signver_torch.checkpoints import iter_cards

    checkpoints = []
    for checkpoint, card in iter_cards():
        entry = {"module": checkpoint.module, "name": checkpoint.name, "path": str(checkpoint.weights)}
        if isinstance(card, dict):
            entry["metrics"] = card.get("metrics", {})
        else:
            entry["error"] = card
        checkpoints.append(entry)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: installed_version(name) for name in REPORTED_PACKAGES},
        "accelerators": describe_present(),
        "checkpoints": checkpoints,
    }
