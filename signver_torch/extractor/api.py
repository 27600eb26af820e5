"""User facade of the extractor: load a checkpoint, embed signatures given in any form."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from signver_torch.cards import verification_threshold
from signver_torch.errors import BlankSignatureError, CheckpointError, SignVerError
from signver_torch.extractor.exported import card_preprocessing
from signver_torch.extractor.transforms import SignaturePreprocessor
from signver_torch.facade import ExportGraph, ModelFacade
from signver_torch.io import ImageSource, load_image_tensor

if TYPE_CHECKING:
    from signver_torch.extractor.model import SignatureEmbedder
    from signver_torch.matcher.decisions import DecisionPolicy


class MetricExtractor(ModelFacade):
    """Signature → 256-d L2-normalised embedding, with the checkpoint's preprocessing replayed.

    ``extract`` takes the original SignVer batch ((N, H, W, 3) or (N, H, W) in [0, 1], e.g. 224x224
    crops) or a list of crops of any size and kind (paths, PIL images, arrays, tensors).

    Example::

        extractor = MetricExtractor().load("default")
        feats = extractor.extract(["a.png", "b.png"])        # (2, 256) numpy
        same = 1 - feats[0] @ feats[1] <= extractor.threshold
    """

    module = "extractor"
    default_batch_size = 64
    int8_calibration_count = 256
    model: SignatureEmbedder | None

    def __init__(self, device: str | torch.device | None = None, batch_size: int | None = None, backend: str = "torch") -> None:
        super().__init__(device, batch_size, backend)
        self.preprocessor: SignaturePreprocessor | None = None
        self._decision: DecisionPolicy | None = None

    def _build(self, card: dict[str, Any]) -> SignatureEmbedder:
        from signver_torch.extractor.model import extractor_from_card  # torchvision: only the torch backend builds it

        return extractor_from_card(card)

    def _configure(self, card: dict[str, Any], name_or_path: str | os.PathLike) -> None:
        self.preprocessor = SignaturePreprocessor(card_preprocessing(card, name_or_path)).to(self.device)
        self._decision = None

    def graph(self) -> ExportGraph:
        """The embedding network on the preprocessed canvas (preprocessing runs before it, on the host)."""
        config = self.preprocessor.cfg  # type: ignore[union-attr]
        return ExportGraph(self.loaded_model, torch.rand(2, 1, config.height, config.width), "canvas", ["embedding"],
                           {0: ("batch", 1)}, {"input": f"(N, 1, {config.height}, {config.width}) ink canvases of "
                                               "SignaturePreprocessor (card: preprocessing), ink 1 on paper 0",
                                               "output": "(N, 256) L2-normalised embeddings"})

    def calibration_inputs(self, files: Sequence[os.PathLike]) -> np.ndarray:
        """The ink canvases of ``files``, blank scans dropped (they calibrate nothing)."""
        canvas = self.preprocessor([load_image_tensor(path, "L") for path in files], strict=False).numpy()  # type: ignore[misc]
        canvas = canvas[canvas.reshape(len(canvas), -1).max(1) > 0]
        if not len(canvas):
            raise SignVerError("no calibration signature has ink: give scans of signatures (--calibration-data)")
        return canvas

    @property
    def threshold(self) -> float:
        """Calibrated cosine-distance threshold (accept as the same writer when distance <= threshold)."""
        if not self.card:
            raise CheckpointError("no checkpoint loaded (call load() first)")
        return verification_threshold(self.card, str(self.weights))

    @property
    def decision(self) -> "DecisionPolicy | None":
        """The per-person decision rule the card's calibration chose (``None`` on cards without one):
        claims against several references are scored by it instead of the pair threshold."""
        if not self.card:
            raise CheckpointError("no checkpoint loaded (call load() first)")
        if self._decision is None:
            from signver_torch.matcher.decisions import DecisionPolicy

            self._decision = DecisionPolicy.from_card(self.card, self.weights)  # type: ignore[arg-type]
        return self._decision

    def extract(self, batch: np.ndarray | torch.Tensor | Sequence[ImageSource], progress: bool = False) -> np.ndarray:
        """Embed a batch of signatures; returns an ``(N, 256)`` float32 array of unit vectors.

        Raises:
            SignVerError: empty batch, wrong shape, NaN values, or a blank crop (with its index).
        """
        return self.embed(self._as_images(batch), progress=progress).numpy()

    @torch.inference_mode()
    def embed(self, images: Sequence[torch.Tensor | np.ndarray], progress: bool = False, pooled: bool = False) -> torch.Tensor:
        """Embed ``(C, H, W)`` tensors (or arrays, as ``SignVer`` holds crops) in ``[0, 1]`` (dark ink on light paper);
        returns a CPU tensor.

        ``pooled`` returns the backbone's features as the projection head receives them instead (torch backend).
        """
        network = self.loaded_model.features if pooled else self.loaded_network
        if len(images) == 0:
            raise SignVerError("empty batch: no signatures to embed")
        if self.exported is not None:  # an export: its host steps in numpy (ExportedExtractor), as SignVer runs it
            self.exported.batch_size = self.batch_size
            return torch.from_numpy(self.exported.embed([np.asarray(image) for image in images], progress=progress))
        chunks = []
        starts = range(0, len(images), self.batch_size)
        for start in tqdm(starts, desc="embedding", unit="batch", file=sys.stderr, disable=not progress, leave=False):
            group = [torch.as_tensor(image).to(self.device) for image in images[start : start + self.batch_size]]
            try:
                canvas = self.preprocessor(group)  # type: ignore[misc]
            except BlankSignatureError as error:
                indices = [start + i for i in error.indices]
                raise BlankSignatureError(
                    f"no signature ink found in input item(s) {indices} (blank or uniform crop)", indices
                ) from error
            chunks.append(network(canvas).float().cpu())
        return torch.cat(chunks)

    @staticmethod
    def _as_images(batch: Any) -> list[torch.Tensor]:
        """Split a batch into grayscale ``(1, H, W)`` tensors through the one image loader.

        Arrays and tensors: ``(N, H, W)``, ``(N, H, W, C)`` (SignVer's layout) or, for tensors,
        ``(N, C, H, W)`` with C in 1, 3 (torch's layout). Lists: any mix of paths, bytes, PIL
        images, arrays and tensors, each of its own size.
        """
        if isinstance(batch, (str, bytes, bytearray, os.PathLike, Image.Image)):
            raise SignVerError("extract() takes a batch: wrap a single signature in a list")
        if isinstance(batch, (np.ndarray, torch.Tensor)):
            if batch.ndim not in (3, 4):
                raise SignVerError(f"expected a batch shaped (N, H, W) or (N, H, W, C); got shape {tuple(batch.shape)}")
            if isinstance(batch, torch.Tensor):
                if batch.ndim == 4 and batch.shape[1] in (1, 3) and batch.shape[-1] not in (1, 3, 4):
                    batch = batch.permute(0, 2, 3, 1)  # NCHW -> NHWC
                batch = batch.detach().cpu().float().numpy() if batch.is_floating_point() else batch.detach().cpu().numpy()
        items = list(batch)
        if not items:
            raise SignVerError("empty batch: no signatures to embed")
        return [
            load_image_tensor(item, "L", name=None if isinstance(item, (str, os.PathLike)) else f"batch item {i}")
            for i, item in enumerate(items)
        ]


Extractor = MetricExtractor
