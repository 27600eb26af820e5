"""Pretend accelerators are present: availability mocked, everything else the real code path."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator
from unittest import mock

import torch
from lightning_habana import HPUAccelerator
from lightning_habana.pytorch.plugins import precision as habana_precision


@contextmanager
def hpus(count: int) -> Iterator[None]:
    """Pretend this machine has ``count`` Gaudi cards with a recent SynapseAI."""
    with mock.patch.object(HPUAccelerator, "is_available", return_value=count > 0), mock.patch.object(
        HPUAccelerator, "auto_device_count", return_value=count
    ), mock.patch.object(habana_precision, "_HPU_SYNAPSE_GREATER_EQUAL_1_11_0", True):
        yield


@contextmanager
def cuda_gpus(count: int) -> Iterator[None]:
    with mock.patch.object(torch.cuda, "is_available", return_value=count > 0), mock.patch.object(
        torch.cuda, "device_count", return_value=count
    ), mock.patch.object(torch.cuda, "is_bf16_supported", return_value=True):
        yield
