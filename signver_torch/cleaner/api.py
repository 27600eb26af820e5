"""User facade of the cleaner: load a checkpoint, clean signature crops given in any form."""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections import defaultdict
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from signver_torch.checkpoints import load_model, resolve_checkpoint, update_card
from signver_torch.cleaner.model import UNet, build_cleaner
from signver_torch.data.dirt import CALIBRATION_SEED, EVAL_SEED, DirtConfig, DirtyPairs, load_ink_maps
from signver_torch.data.signatures import SignatureRecord, discover_signatures, writers_text
from signver_torch.errors import CheckpointError, SignVerError
from signver_torch.extractor.api import best_device
from signver_torch.io import ImageSource, load_image_tensor
from signver_torch.metrics import cleaning_metrics

#: Smallest crop side the cleaner accepts: below it there is no stroke to tell from a line.
MIN_SIDE = 8


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


def apply_tone_curve(images: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """``images`` in [0, 1] through ``curve`` (values at evenly spaced levels), linearly interpolated."""
    curve = curve.to(images.device, images.dtype)
    position = images.clamp(0, 1) * (len(curve) - 1)
    low = position.floor().long().clamp(max=len(curve) - 2)
    return torch.lerp(curve[low], curve[low + 1], position - low)


class Cleaner:
    """Removes lines, printed text, stamps and scan noise from signature crops, keeping the ink.

    ``clean`` takes the original SignVer batch ((N, H, W, 3) or (N, H, W) in [0, 1], any H and W)
    and returns the same shape with white paper and the signature's ink; or a list of crops of any
    size and kind (paths, PIL images, arrays, tensors) and returns a list of (H, W) arrays.

    Example::

        cleaner = Cleaner().load("default")
        cleaned = cleaner.clean(np_batch)          # same shape as np_batch
    """

    def __init__(self, device: str | torch.device | None = None, batch_size: int = 16) -> None:
        self.device = torch.device(device) if device is not None else best_device()
        self.batch_size = batch_size
        self.model: UNet | None = None
        self.card: dict[str, Any] = {}
        self.tone_curve: torch.Tensor | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "default", **kwargs: Any) -> "Cleaner":
        return cls(**kwargs).load(name_or_path)

    def load(self, name_or_path: str | os.PathLike = "default") -> "Cleaner":
        """Load a shipped checkpoint by name (``"default"``) or a ``.safetensors`` path."""
        model, card = load_model("cleaner", name_or_path, lambda card: build_cleaner(**card["architecture"]))
        try:
            curve = card.get("tone_curve")
            tone_curve = None if curve is None else torch.tensor([float(v) for v in curve["values"]])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{name_or_path}: the card's tone_curve is not a list of at least two numbers ({error})") from error
        if tone_curve is not None and (tone_curve.ndim != 1 or len(tone_curve) < 2 or not torch.isfinite(tone_curve).all()):
            raise CheckpointError(f"{name_or_path}: the card's tone_curve is not a list of at least two numbers")
        self.model = model.eval().to(self.device)
        self.tone_curve = tone_curve
        self.card = card
        return self

    def clean(self, batch: np.ndarray | torch.Tensor | Sequence[ImageSource], progress: bool = False) -> Any:
        """Clean a batch; arrays and tensors come back in their own shape, lists as lists of (H, W) arrays.

        Raises:
            SignVerError: empty batch, wrong rank, NaN values, values outside [0, 1], a crop under 8×8.
        """
        if isinstance(batch, (str, bytes, bytearray, os.PathLike, Image.Image)):
            raise SignVerError("clean() takes a batch: wrap a single crop in a list")
        if isinstance(batch, (np.ndarray, torch.Tensor)):
            return self._clean_array(batch, progress)
        items = list(batch)
        if not items:
            raise SignVerError("empty batch: no crops to clean")
        pages = [
            load_image_tensor(item, "L", name=None if isinstance(item, (str, os.PathLike)) else f"batch item {i}")
            for i, item in enumerate(items)
        ]
        return [page[0].numpy() for page in self.clean_pages(pages, progress)]

    def _clean_array(self, batch: np.ndarray | torch.Tensor, progress: bool) -> np.ndarray | torch.Tensor:
        is_tensor = isinstance(batch, torch.Tensor)
        array = batch.detach().cpu().numpy() if is_tensor else np.asarray(batch)
        if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (1, 3)):
            raise SignVerError(f"expected a batch shaped (N, H, W) or (N, H, W, 1|3); got shape {tuple(array.shape)}")
        if array.shape[0] == 0:
            raise SignVerError("empty batch: no crops to clean")
        if array.dtype == np.uint8:
            array = array.astype(np.float32) / 255
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise SignVerError("crop batch contains NaN or infinite values")
        if array.min() < 0 or array.max() > 1:
            raise SignVerError(f"expected values in [0, 1], got {array.min():.3g}..{array.max():.3g} (divide 8-bit images by 255)")
        if array.ndim == 3:
            gray = array
        elif array.shape[-1] == 1:
            gray = array[..., 0]
        else:
            gray = array @ np.array([0.299, 0.587, 0.114], np.float32)
        pages = list(torch.from_numpy(np.ascontiguousarray(gray))[:, None])
        cleaned = torch.stack(self.clean_pages(pages, progress))[:, 0].numpy()
        if array.ndim == 4:
            cleaned = np.repeat(cleaned[..., None], array.shape[-1], axis=-1)
        return torch.from_numpy(cleaned).to(batch.device) if is_tensor else cleaned

    @torch.inference_mode()
    def clean_pages(self, pages: Sequence[torch.Tensor], progress: bool = False) -> list[torch.Tensor]:
        """Clean ``(1, H, W)`` grayscale tensors in ``[0, 1]``; crops of equal size share a batch."""
        if self.model is None:
            raise CheckpointError("no checkpoint loaded (call load() first)")
        if len(pages) == 0:
            raise SignVerError("empty batch: no crops to clean")
        by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, page in enumerate(pages):
            if page.ndim != 3 or page.shape[0] != 1:
                raise SignVerError(f"crop {index}: expected a (1, H, W) grayscale tensor, got shape {tuple(page.shape)}")
            if min(page.shape[-2:]) < MIN_SIDE:
                raise SignVerError(f"crop {index} is {page.shape[-2]}x{page.shape[-1]} pixels; the cleaner needs at least {MIN_SIDE}x{MIN_SIDE}")
            if not torch.isfinite(page).all():
                raise SignVerError(f"crop {index} contains NaN or infinite values")
            by_size[tuple(page.shape)].append(index)
        cleaned: list[torch.Tensor | None] = [None] * len(pages)
        groups = [indices[i : i + self.batch_size] for indices in by_size.values() for i in range(0, len(indices), self.batch_size)]
        for group in tqdm(groups, desc="cleaning", unit="batch", file=sys.stderr, disable=not progress, leave=False):
            batch = torch.stack([pages[i] for i in group]).to(self.device, torch.float32)
            result = 1.0 - torch.sigmoid(self.model(batch.clamp(0, 1)))
            if self.tone_curve is not None:
                result = apply_tone_curve(result, self.tone_curve)
            result = result.cpu()
            for i, page in zip(group, result):
                cleaned[i] = page
        return cleaned  # type: ignore[return-value]

    @property
    def sha256(self) -> str:
        return str(self.card.get("sha256", ""))


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
    progress: bool = True,
) -> dict[str, Any]:
    """docs/design.md's cleaner contract: ``n_pairs`` synthetic pairs from ``data_dir``'s signatures, fixed seed.

    The pairs depend on the data, the writers and ``n_pairs`` only (never on the checkpoint), so two
    checkpoints are always compared on the same images.
    """
    records = discover_signatures(data_dir, writers)
    cleaner = Cleaner(device=device).load(checkpoint)
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
