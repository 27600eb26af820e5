"""The cleaner's evaluation and calibration on seeded synthetic pairs: PSNR/SSIM/ink F1, and the
tone curve fitted on the training writers."""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections import defaultdict
from typing import Any, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from signver_torch.checkpoints import resolve_checkpoint, update_card
from signver_torch.cleaner.api import Cleaner
from signver_torch.cleaner.data import CALIBRATION_SEED, EVAL_SEED, DirtConfig, DirtyPairs
from signver_torch.data.ink import load_ink_maps
from signver_torch.data.signatures import SignatureRecord, discover_signatures, writers_text
from signver_torch.errors import SignVerError
from signver_torch.metrics import cleaning_metrics


def fit_tone_curve(outputs: torch.Tensor, targets: torch.Tensor, knots: int = 64) -> torch.Tensor:
    """A monotone map from the network's output to the mean clean value seen at that output.

    BCE + Dice trains a confident network: a grey stroke edge comes out too dark or too light, which
    costs PSNR although the ink is right. The least-squares fix per output level (the mean target of
    the pixels at each of ``knots`` levels, made non-decreasing) is fitted on training writers' pairs;
    levels no pixel reached map to themselves.
    """
    index = (outputs.detach().float().clamp(0, 1) * (knots - 1)).round().long().flatten().cpu()
    sums = torch.zeros(knots).index_add_(0, index, targets.detach().float().flatten().cpu())
    counts = torch.bincount(index, minlength=knots).float()
    means = torch.where(counts > 0, sums / counts.clamp_min(1), torch.linspace(0, 1, knots))
    return torch.cummax(means, 0).values


def _cleaned_pairs(
    cleaner: Cleaner, records: Sequence[SignatureRecord], n_pairs: int, seed: int, progress: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
    """Batches of (cleaned, clean target, seconds spent cleaning) for ``n_pairs`` seeded synthetic pairs."""
    if n_pairs < 1:
        raise SignVerError(f"--pairs must be at least 1, not {n_pairs}")
    pairs = DirtyPairs(load_ink_maps(records, progress=progress), n_pairs, seed)
    for start in tqdm(range(0, n_pairs, cleaner.batch_size), desc="cleaning", unit="batch", file=sys.stderr, disable=not progress):
        dirty, clean = (torch.stack(column) for column in zip(*(pairs[i] for i in range(start, min(start + cleaner.batch_size, n_pairs)))))
        began = time.perf_counter()
        cleaned = torch.stack(cleaner.clean_pages(list(dirty)))
        yield cleaned, clean, time.perf_counter() - began


def evaluate_cleaner(
    data_dir: str | os.PathLike,
    writers: str | Sequence[str] | None = None,
    checkpoint: str | os.PathLike = "default",
    *,
    n_pairs: int = 256,
    device: str | None = None,
    backend: str = "torch",
    progress: bool = True,
) -> dict[str, Any]:
    """docs/design.md's cleaner contract: ``n_pairs`` synthetic pairs from ``data_dir``'s signatures, fixed seed,
    the network run by ``backend`` (:class:`~signver_torch.facade.ModelFacade`).

    The pairs depend on the data, the writers and ``n_pairs`` only (never on the checkpoint), so two
    checkpoints are always compared on the same images.
    """
    records = discover_signatures(data_dir, writers)
    cleaner = Cleaner(device=device, backend=backend).load(checkpoint)
    totals: dict[str, float] = defaultdict(float)
    seconds = 0.0
    for cleaned, clean, spent in _cleaned_pairs(cleaner, records, n_pairs, EVAL_SEED, progress):
        seconds += spent
        for name, values in cleaning_metrics(cleaned, clean).items():
            totals[name] += float(values.sum())
    return {
        **{name: total / n_pairs for name, total in totals.items()},
        "n_pairs": n_pairs,
        "pair_size": f"{DirtConfig().height}x{DirtConfig().width}",
        "seed": EVAL_SEED,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": cleaner.sha256,
        "backend": cleaner.backend,
        "precision": cleaner.precision,
        "data": str(data_dir),
        "writers": writers_text(writers),
        "n_signatures": len(records),
        "seconds_per_image": seconds / n_pairs,
    }


def calibrate_cleaner(
    data_dir: str | os.PathLike,
    writers: str | Sequence[str],
    checkpoint: str | os.PathLike = "default",
    *,
    n_pairs: int = 256,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit the checkpoint's tone curve (:func:`fit_tone_curve`) on synthetic pairs of ``writers`` (the
    training writers, never the evaluation ones) and write it into its card; returns the card."""
    weights = resolve_checkpoint("cleaner", checkpoint).weights
    cleaner = Cleaner(device=device).load(weights)
    cleaner.tone_curve = None  # fit on the network's own output, not on a previous curve's
    batches = _cleaned_pairs(cleaner, discover_signatures(data_dir, writers), n_pairs, CALIBRATION_SEED, progress)
    outputs, targets, _ = zip(*batches)
    curve = fit_tone_curve(torch.cat(outputs), torch.cat(targets))
    written = writers_text(writers)
    return update_card(weights, tone_curve={
        "values": [round(float(v), 5) for v in curve],
        "fitted_on": {"data": str(data_dir), "writers": written, "n_pairs": n_pairs, "seed": CALIBRATION_SEED},
        "command": "signver " + shlex.join(["calibrate", "cleaner", "--data", str(data_dir), "--writers", written,
                                           "--checkpoint", str(weights), "--pairs", str(n_pairs)]),
    })
