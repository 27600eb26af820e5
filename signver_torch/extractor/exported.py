"""The extractor's export run without torch: numpy canvases (:mod:`~signver_torch.extractor.canvas`) into the graph."""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from signver_torch.cards import verification_threshold
from signver_torch.errors import BlankSignatureError, CheckpointError, SignVerError
from signver_torch.extractor.canvas import PreprocessConfig, ink_canvases
from signver_torch.matcher.decisions import DecisionPolicy
from signver_torch.runtime import ExportedFacade


class ExportedExtractor(ExportedFacade):
    """:class:`~signver_torch.extractor.api.MetricExtractor`'s ``embed``, ``threshold`` and ``decision`` over an export,
    without torch: what ``SignVer`` embeds with under an exported backend.

    Example::

        extractor = ExportedExtractor("onnxruntime").load("exports/")   # or "default", once exported into the cache
        embeddings = extractor.embed([gray_a, gray_b])                  # (2, 256) float32, unit rows
    """

    module = "extractor"
    default_batch_size = 64

    def _configure(self, card: dict[str, Any], export_card: dict[str, Any], name_or_path: str | os.PathLike) -> None:
        try:
            self.config = PreprocessConfig.from_card(card["preprocessing"])
            if card["threshold"] is not None:
                float(card["threshold"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{name_or_path}: model card lacks a valid preprocessing or threshold ({error})") from error
        self._decision: DecisionPolicy | None = None

    @property
    def threshold(self) -> float:
        """Calibrated cosine-distance threshold (accept as the same writer when distance <= threshold)."""
        return verification_threshold(self.card, str(self.weights))

    @property
    def decision(self) -> DecisionPolicy | None:
        """The per-person rule of the card (``None`` on cards without one), its background bank beside the graph."""
        if self._decision is None:
            self._decision = DecisionPolicy.from_card(self.card, self.loaded_graph.path)
        return self._decision

    def embed(self, images: Sequence[np.ndarray], progress: bool = False) -> np.ndarray:
        """Embed ``(1, H, W)`` or ``(H, W)`` grayscale arrays in ``[0, 1]`` (dark ink on light paper): ``(N, 256)``.

        Raises:
            BlankSignatureError: crops without ink, with their indices.
        """
        if len(images) == 0:
            raise SignVerError("empty batch: no signatures to embed")
        graph = self.loaded_graph
        chunks = []
        starts = range(0, len(images), self.batch_size)
        for start in tqdm(starts, desc="embedding", unit="batch", file=sys.stderr, disable=not progress, leave=False):
            group = [np.asarray(image, np.float32).reshape(np.shape(image)[-2:]) for image in images[start : start + self.batch_size]]
            try:
                canvas = ink_canvases(group, self.config)
            except BlankSignatureError as error:
                indices = [start + i for i in error.indices]
                raise BlankSignatureError(f"no signature ink found in input item(s) {indices} (blank or uniform crop)", indices) from error
            chunks.append(np.asarray(graph(canvas)[0], np.float32))
        return np.concatenate(chunks)
