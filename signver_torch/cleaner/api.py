"""User facade of the cleaner: load a checkpoint, clean signature crops given in any form."""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from signver_torch.cleaner.exported import MAX_SIDE, MIN_SIDE, cleaning_scale, max_side_property
from signver_torch.cleaner.model import InkCleaner, UNet, cleaner_from_card
from signver_torch.errors import CheckpointError, SignVerError
from signver_torch.facade import ExportGraph, ModelFacade
from signver_torch.io import ImageSource, load_image_tensor

class Cleaner(ModelFacade):
    """Removes lines, printed text, stamps and scan noise from signature crops, keeping the ink.

    ``clean`` takes the original SignVer batch ((N, H, W, 3) or (N, H, W) in [0, 1], any H and W)
    and returns the same shape with white paper and the signature's ink; or a list of crops of any
    size and kind (paths, PIL images, arrays, tensors) and returns a list of (H, W) arrays.

    Example::

        cleaner = Cleaner().load("default")
        cleaned = cleaner.clean(np_batch)          # same shape as np_batch
    """

    module = "cleaner"
    default_batch_size = 16
    model: UNet | None

    def __init__(self, device: str | torch.device | None = None, batch_size: int | None = None, backend: str = "torch",
                 max_side: int | None = MAX_SIDE) -> None:
        """``max_side``: crops whose longer side exceeds it are cleaned at that size and scaled back (``None``: every
        crop at its own resolution, slower on full-page scans and large references)."""
        super().__init__(device, batch_size, backend)
        self.max_side = max_side
        self._tone_curve: torch.Tensor | None = None
        self.stride = 1  # crops are padded with paper to a multiple of it, the network's output cropped back

    max_side = max_side_property

    def _build(self, card: dict[str, Any]) -> UNet:
        return cleaner_from_card(card)

    def _configure(self, card: dict[str, Any], name_or_path: str | os.PathLike) -> None:
        try:
            curve = card.get("tone_curve")
            tone_curve = None if curve is None else torch.tensor([float(v) for v in curve["values"]])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{name_or_path}: the card's tone_curve is not a list of at least two numbers ({error})") from error
        if tone_curve is not None and (tone_curve.ndim != 1 or len(tone_curve) < 2 or not torch.isfinite(tone_curve).all()):
            raise CheckpointError(f"{name_or_path}: the card's tone_curve is not a list of at least two numbers")
        self.tone_curve = tone_curve

    @property
    def tone_curve(self) -> torch.Tensor | None:
        """The card's tone curve; calibration sets it to ``None`` to fit a new one on the network's own output."""
        return self._tone_curve

    @tone_curve.setter
    def tone_curve(self, curve: torch.Tensor | None) -> None:
        if self.backend != "torch" and self.export_card:
            raise SignVerError("an exported cleaner carries its tone curve in the graph: change it with backend='torch'")
        self._tone_curve = curve
        if isinstance(self.network, InkCleaner):
            self.network.tone_curve = None if curve is None else curve.to(self.device)

    def _torch_network(self, model: torch.nn.Module) -> InkCleaner:
        self.stride = model.stride  # type: ignore[assignment]
        return InkCleaner(model, self.tone_curve).eval().to(self.device)  # type: ignore[arg-type]

    def graph(self) -> ExportGraph:
        """U-Net, clean page and tone curve in one graph; padding to the stride and cropping back stay on the host."""
        model = self.loaded_model
        network = self._torch_network(model)
        return ExportGraph(network, torch.rand(2, 1, 4 * self.stride, 6 * self.stride), "crops", ["cleaned"],
                           {0: ("batch", 1), 2: ("height", self.stride), 3: ("width", self.stride)},
                           {"multiple": self.stride, "input": f"(N, 1, H, W) grayscale crops in [0, 1], H and W multiples of "
                            f"{self.stride} (padded with paper, 1.0)", "output": "(N, 1, H, W) cleaned crops in [0, 1], "
                            "tone curve applied", "tone_curve": self.tone_curve is not None})

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
    def clean_pages(self, pages: Sequence[torch.Tensor | np.ndarray], progress: bool = False) -> list[torch.Tensor]:
        """Clean ``(1, H, W)`` grayscale tensors (or arrays, as ``SignVer`` holds crops) in ``[0, 1]``; crops of equal
        size share a batch."""
        network = self.loaded_network
        if len(pages) == 0:
            raise SignVerError("empty batch: no crops to clean")
        if self.exported is not None:  # an export: its host steps in numpy (ExportedCleaner), as SignVer runs it
            self.exported.max_side, self.exported.batch_size = self.max_side, self.batch_size
            return [torch.from_numpy(page) for page in self.exported.clean_pages([np.asarray(page, np.float32) for page in pages], progress)]
        pages = [torch.as_tensor(page) for page in pages]
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
            result = self._clean_batch(network, batch).cpu()
            for i, page in zip(group, result):
                cleaned[i] = page
        return cleaned  # type: ignore[return-value]

    def _clean_batch(self, network: Any, batch: torch.Tensor) -> torch.Tensor:
        """Clean one ``(N, 1, H, W)`` batch of equal-size crops, at most :attr:`max_side` on its longer side (the
        aspect ratio kept, the shorter side never below :data:`MIN_SIDE`), the result at the crops' own size."""
        height, width = batch.shape[-2:]
        scale = cleaning_scale(height, width, self.max_side)
        small = batch if scale == 1.0 else F.interpolate(batch, size=(round(height * scale), round(width * scale)), mode="area")
        small_height, small_width = small.shape[-2:]
        padded = F.pad(small, (0, -small_width % self.stride, 0, -small_height % self.stride), value=1.0)  # paper, as the U-Net pads
        cleaned = network(padded)[..., :small_height, :small_width]
        if scale == 1.0:
            return cleaned
        return F.interpolate(cleaned, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)
