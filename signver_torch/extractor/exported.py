"""The extractor's export run without torch: numpy canvases (:mod:`~signver_torch.extractor.canvas`) into the graph."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from signver_torch.cards import verification_threshold
from signver_torch.errors import BlankSignatureError, CheckpointError, SignVerError
from signver_torch.extractor.canvas import PreprocessConfig, ink_canvas
from signver_torch.io import ImageSource, load_image_array
from signver_torch.matcher.decisions import DecisionPolicy
from signver_torch.runtime import ExportedFacade, default_threads


def card_preprocessing(card: dict[str, Any], where: str | os.PathLike) -> PreprocessConfig:
    """The preprocessing an extractor card records, once its threshold is checked to be a number or null (null: trained
    on every writer, calibrated later, out of fold)."""
    try:
        config = PreprocessConfig.from_card(card["preprocessing"])
        if card["threshold"] is not None:
            float(card["threshold"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: model card lacks a valid preprocessing or threshold ({error})") from error
    return config


class ExportedExtractor(ExportedFacade):
    """:class:`~signver_torch.extractor.api.MetricExtractor`'s ``embed``, ``threshold`` and ``decision`` over an export,
    without torch: what ``SignVer`` embeds with under an exported backend.

    Example::

        extractor = ExportedExtractor("onnxruntime").load("exports/")   # or "default", once exported into the cache
        embeddings = extractor.extract(["a.png", "b.png"])              # (2, 256) float32, unit rows
    """

    module = "extractor"
    default_batch_size = 64

    def __init__(self, backend: str = "auto", batch_size: int | None = None, on_cpu: bool | None = None) -> None:
        super().__init__(backend, batch_size, on_cpu)
        self.config = PreprocessConfig()  # the card's, once loaded
        self._decision: DecisionPolicy | None = None

    def _configure(self, card: dict[str, Any], export_card: dict[str, Any], name_or_path: str | os.PathLike) -> None:
        self.config, self._decision = card_preprocessing(card, name_or_path), None

    @property
    def threshold(self) -> float:
        """Calibrated cosine-distance threshold (accept as the same writer when distance <= threshold)."""
        return verification_threshold(self.card, str(self.loaded_graph.path))

    @property
    def decision(self) -> DecisionPolicy | None:
        """The per-person rule of the card (``None`` on cards without one), its background bank beside the graph."""
        if self._decision is None:
            self._decision = DecisionPolicy.from_card(self.card, self.loaded_graph.path)
        return self._decision

    def extract(self, sources: Sequence[ImageSource], progress: bool = False) -> np.ndarray:
        """Embed signatures given as paths, bytes, PIL images or arrays (read by :func:`~signver_torch.io.load_image_array`,
        each decoded and preprocessed on the host's threads while none is waiting on the graph): ``(N, 256)``.

        Raises:
            ImageLoadError: a source that cannot be read (naming it); BlankSignatureError: crops without ink.
        """
        if isinstance(sources, (str, bytes, bytearray, os.PathLike, Image.Image, np.ndarray)):
            raise SignVerError("extract() takes a list of signatures: wrap a single one in a list")
        return self._embed_with(list(sources), _loaded_canvas, progress)

    def embed(self, images: Sequence[np.ndarray], progress: bool = False) -> np.ndarray:
        """Embed ``(1, H, W)`` or ``(H, W)`` grayscale arrays in ``[0, 1]`` (dark ink on light paper): ``(N, 256)``.

        Raises:
            BlankSignatureError: crops without ink, with their indices.
        """
        return self._embed_with(list(images), _array_canvas, progress)

    def _embed_with(self, items: list[Any], canvas_of: Callable[[Any, int, PreprocessConfig], np.ndarray | None],
                    progress: bool) -> np.ndarray:
        """Each item's canvas (``None``: blank) on a pool of the host's threads (decoding and numpy release the GIL),
        then the graph, a batch at a time."""
        if len(items) == 0:
            raise SignVerError("empty batch: no signatures to embed")
        graph = self.loaded_graph
        workers = min(len(items), default_threads() or len(os.sched_getaffinity(0)))
        if workers == 1:
            canvases = [canvas_of(item, index, self.config) for index, item in enumerate(items)]
        else:
            with ThreadPoolExecutor(workers) as pool:
                canvases = list(pool.map(canvas_of, items, range(len(items)), [self.config] * len(items)))
        blank = [index for index, canvas in enumerate(canvases) if canvas is None]
        if blank:
            raise BlankSignatureError(f"no signature ink found in input item(s) {blank} (blank or uniform crop)", blank)
        chunks = []
        starts = range(0, len(items), self.batch_size)
        for start in tqdm(starts, desc="embedding", unit="batch", file=sys.stderr, disable=not progress, leave=False):
            chunks.append(np.asarray(graph(np.stack(canvases[start : start + self.batch_size]))[0], np.float32))
        return np.concatenate(chunks)


def _array_canvas(image: np.ndarray, index: int, config: PreprocessConfig) -> np.ndarray | None:
    """The canvas of a ``(1, H, W)``, ``(3, H, W)`` (RGB: its luma, as the torch preprocessing takes it) or ``(H, W)``
    array in ``[0, 1]``, ``None`` when it has no ink."""
    gray = np.asarray(image, np.float32)
    if gray.ndim == 3 and gray.shape[0] in (1, 3):
        gray = gray[0] if gray.shape[0] == 1 else np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), gray, 1)
    if gray.ndim != 2:
        raise SignVerError(f"signature {index}: expected a (1, H, W), (3, H, W) or (H, W) array, got shape {gray.shape}")
    return ink_canvas(gray, config)


def _loaded_canvas(source: ImageSource, index: int, config: PreprocessConfig) -> np.ndarray | None:
    """The canvas of an image source, read through the one loader (named by its path, else by its place)."""
    name = None if isinstance(source, (str, os.PathLike)) else f"batch item {index}"
    return _array_canvas(load_image_array(source, "L", name=name), index, config)
