"""The original SignVer's helpers, for code written against it: images as arrays, crops from boxes."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from signver_torch.io import ImageSource, load_image


def img_to_np_array(source: ImageSource, invert_image: bool = False) -> np.ndarray:
    """An image as an ``(H, W, 3)`` uint8 array (through the one loader); ``invert_image`` gives 255 - pixels."""
    array = np.asarray(load_image(source).convert("RGB"))
    return 255 - array if invert_image else array.copy()


def get_image_crops(
    image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> list[np.ndarray]:
    """Crops of ``image`` for the boxes scoring at least ``threshold``; boxes as SignVer's detector gives
    them: ``[ymin, xmin, ymax, xmax]`` normalised to 0..1."""
    height, width = image.shape[:2]
    crops = []
    for (ymin, xmin, ymax, xmax), score in zip(np.asarray(boxes), np.asarray(scores)):
        if score < threshold:
            continue
        top, bottom = int(ymin * height), int(np.ceil(ymax * height))
        left, right = int(xmin * width), int(np.ceil(xmax * width))
        if bottom > top and right > left:
            crops.append(image[top:bottom, left:right].copy())
    return crops


def make_square(image: Image.Image, fill: Any = (255, 255, 255)) -> Image.Image:
    """Pad a crop to a square with paper, centred (SignVer squared crops before cleaning)."""
    side = max(image.size)
    square = Image.new(image.mode, (side, side), fill if image.mode == "RGB" else 255)
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square


def resnet_preprocess(batch: np.ndarray, size: int = 224) -> np.ndarray:
    """SignVer's extractor input: crops resized to ``size``×``size``, RGB, float in [0, 1] — ``(N, size, size, 3)``."""
    return np.stack([
        np.asarray(load_image(crop, "RGB").resize((size, size), Image.BILINEAR), np.float32) / 255 for crop in batch
    ])


def plot_np_array(arrays: Sequence[np.ndarray], titles: Sequence[str] | None = None, path: str | os.PathLike | None = None) -> Any:
    """Show (or save to ``path``) images side by side; needs matplotlib (``pip install signver-torch[docs]``)."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(arrays), figsize=(3 * len(arrays), 3), squeeze=False)
    for index, (axis, array) in enumerate(zip(axes[0], arrays)):
        axis.imshow(array, cmap="gray" if np.asarray(array).ndim == 2 else None)
        axis.set_axis_off()
        if titles:
            axis.set_title(titles[index], fontsize=9)
    if path is not None:
        figure.savefig(path, bbox_inches="tight")
        plt.close(figure)
    return figure
