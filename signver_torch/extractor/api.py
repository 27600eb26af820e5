"""User facade of the extractor: load a checkpoint, embed signatures given in any form."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from signver_torch.checkpoints import load_checkpoint
from signver_torch.data.preprocess import BlankSignatureError, PreprocessConfig, SignaturePreprocessor
from signver_torch.errors import CheckpointError, SignVerError
from signver_torch.extractor.model import SignatureEmbedder, build_extractor
from signver_torch.io import ImageSource, load_image_tensor


def best_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class MetricExtractor:
    """Signature → 256-d L2-normalised embedding, with the checkpoint's preprocessing replayed.

    ``extract`` takes the original SignVer batch ((N, H, W, 3) or (N, H, W) in [0, 1], e.g. 224x224
    crops) or a list of crops of any size and kind (paths, PIL images, arrays, tensors).

    Example::

        extractor = MetricExtractor().load("default")
        feats = extractor.extract(["a.png", "b.png"])        # (2, 256) numpy
        same = 1 - feats[0] @ feats[1] <= extractor.threshold
    """

    def __init__(self, device: str | torch.device | None = None, batch_size: int = 64) -> None:
        self.device = torch.device(device) if device is not None else best_device()
        self.batch_size = batch_size
        self.model: SignatureEmbedder | None = None
        self.preprocessor: SignaturePreprocessor | None = None
        self.card: dict[str, Any] = {}

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "default", **kwargs: Any) -> "MetricExtractor":
        return cls(**kwargs).load(name_or_path)

    def load(self, name_or_path: str | os.PathLike = "default") -> "MetricExtractor":
        """Load a shipped checkpoint by name (``"default"``) or a ``.safetensors`` path."""
        state, card = load_checkpoint("extractor", name_or_path)
        try:
            model = build_extractor(**card["architecture"])
            model.load_state_dict({key: value.float() for key, value in state.items()})
            preprocessor = SignaturePreprocessor(PreprocessConfig(**card["preprocessing"]))
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{name_or_path}: checkpoint does not match its card ({error})") from error
        self.model = model.eval().to(self.device)
        self.preprocessor = preprocessor.to(self.device)
        self.card = card
        return self

    @property
    def threshold(self) -> float:
        """Calibrated cosine-distance threshold (accept as the same writer when distance <= threshold)."""
        if "threshold" not in self.card:
            raise CheckpointError("no checkpoint loaded (call load() first)")
        return float(self.card["threshold"])

    @property
    def sha256(self) -> str:
        return str(self.card.get("sha256", ""))

    def extract(self, batch: np.ndarray | torch.Tensor | Sequence[ImageSource], progress: bool = False) -> np.ndarray:
        """Embed a batch of signatures; returns an ``(N, 256)`` float32 array of unit vectors.

        Raises:
            SignVerError: empty batch, wrong shape, NaN values, or a blank crop (with its index).
        """
        return self.embed(self._as_images(batch), progress=progress).numpy()

    @torch.inference_mode()
    def embed(self, images: Sequence[torch.Tensor], progress: bool = False) -> torch.Tensor:
        """Embed ``(C, H, W)`` tensors in ``[0, 1]`` (dark ink on light paper); returns a CPU tensor."""
        if self.model is None or self.preprocessor is None:
            raise CheckpointError("no checkpoint loaded (call load() first)")
        if len(images) == 0:
            raise SignVerError("empty batch: no signatures to embed")
        chunks = []
        starts = range(0, len(images), self.batch_size)
        for start in tqdm(starts, desc="embedding", unit="batch", file=sys.stderr, disable=not progress, leave=False):
            group = [image.to(self.device) for image in images[start : start + self.batch_size]]
            try:
                canvas = self.preprocessor(group)
            except BlankSignatureError as error:
                indices = [start + i for i in error.indices]
                raise BlankSignatureError(
                    f"no signature ink found in input item(s) {indices} (blank or uniform crop)", indices
                ) from error
            chunks.append(self.model(canvas).float().cpu())
        return torch.cat(chunks)

    def _as_images(self, batch: Any) -> list[torch.Tensor]:
        if isinstance(batch, (np.ndarray, torch.Tensor)):
            array = batch
            if array.ndim not in (3, 4):
                raise SignVerError(
                    f"expected a batch shaped (N, H, W) or (N, H, W, C); got shape {tuple(array.shape)}"
                )
            if array.shape[0] == 0:
                raise SignVerError("empty batch: no signatures to embed")
            return [load_image_tensor(item, "L", name=f"batch item {i}") for i, item in enumerate(_channels_last(array))]
        if isinstance(batch, (str, bytes, os.PathLike)):
            raise SignVerError("extract() takes a batch: wrap a single signature in a list")
        items = list(batch)
        if not items:
            raise SignVerError("empty batch: no signatures to embed")
        return [load_image_tensor(item, "L", name=None if isinstance(item, (str, os.PathLike)) else f"batch item {i}") for i, item in enumerate(items)]


def _channels_last(array: np.ndarray | torch.Tensor) -> list[np.ndarray]:
    """Split an (N, H, W[, C]) batch into numpy images the loader understands (uint8 or [0, 1] floats)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return list(array)


Extractor = MetricExtractor


def evaluate_extractor(
    data_dir: str | os.PathLike,
    writers: str | Sequence[str] | None = None,
    checkpoint: str | os.PathLike = "default",
    *,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """DESIGN.md's writer-independent protocol on ``data_dir`` (CEDAR or writer folders).

    Per writer, positives are all genuine–genuine pairs and negatives all genuine–skilled-forgery
    pairs; one global threshold. FAR/FRR are at the checkpoint's calibrated threshold.
    """
    from signver_torch.data.signatures import SignatureImages, discover_signatures, writer_split
    from signver_torch.metrics import writer_protocol_metrics

    extractor = MetricExtractor(device=device).load(checkpoint)
    records = discover_signatures(data_dir)
    if writers is not None:
        [records] = writer_split(records, writers)
    images = SignatureImages(records)
    loader = DataLoader(images, batch_size=extractor.batch_size, collate_fn=list)
    chunks, seconds = [], 0.0
    with tqdm(total=len(images), desc="evaluating", unit="img", file=sys.stderr, disable=not progress) as bar:
        for offset, batch in zip(range(0, len(images), extractor.batch_size), loader):
            start = time.perf_counter()
            try:
                chunks.append(extractor.embed([image for image, _ in batch]))
            except BlankSignatureError as error:
                blank = ", ".join(str(records[offset + i].path) for i in error.indices)
                raise BlankSignatureError(f"{blank}: no signature ink found (blank or uniform image)") from error
            seconds += time.perf_counter() - start
            bar.update(len(batch))
    embeddings = torch.cat(chunks)
    report = writer_protocol_metrics(
        embeddings, [r.writer for r in records], [r.forged for r in records], extractor.threshold
    )
    return {
        **report,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": extractor.sha256,
        "data": str(data_dir),
        "writers": writers if isinstance(writers, str) or writers is None else ",".join(map(str, writers)),
        "n_images": len(records),
        "signatures_per_second": len(records) / seconds,
    }
