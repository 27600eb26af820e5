"""A page photographed with a phone: perspective, a surface around the paper, uneven light, a shadow,
blur, noise and JPEG, with every box carried through the warp exactly.

The warp is a homography. A mark's new box is the box of its own ink pixels' corners mapped through it
(a filled rectangle's, of its four corners), so it is as tight after the warp as before.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import Image, ImageFilter


def homography(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 3x3 matrix mapping the four ``source`` points (x, y) onto the four ``target`` points."""
    rows = []
    for (x, y), (u, v) in zip(source, target):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    _, _, vt = np.linalg.svd(np.asarray(rows, np.float64))
    matrix = vt[-1].reshape(3, 3)
    return matrix / matrix[2, 2]


def apply_homography(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points (x, y) mapped through ``matrix``."""
    mapped = np.c_[points, np.ones(len(points))] @ matrix.T
    return mapped[:, :2] / mapped[:, 2:]


def warped_boxes(matrix: np.ndarray, boxes: np.ndarray, pieces: Sequence[tuple[int, int, np.ndarray] | None]) -> np.ndarray:
    """Each mark's box after the warp: the bounds of its ink pixels' corners (``(left, top, mask)``),
    or of its box's corners where it has no piece (a filled rectangle)."""
    corners = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float64)
    result = np.zeros((len(boxes), 4), np.float32)
    for index, (box, piece) in enumerate(zip(boxes, pieces)):
        if piece is None:
            points = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]], np.float64)
        else:
            left, top, mask = piece
            rows, cols = np.nonzero(mask)
            pixels = np.c_[cols + left, rows + top].astype(np.float64)
            points = (pixels[:, None, :] + corners[None]).reshape(-1, 2)
        mapped = apply_homography(matrix, points)
        result[index] = (*mapped.min(0), *mapped.max(0))
    return result


def photograph(page: np.ndarray, boxes: np.ndarray, pieces: Sequence[tuple[int, int, np.ndarray] | None],
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``page`` (gray ``(H, W)`` in [0, 1]) as a phone photo of the same size, and its boxes after the warp.

    The paper fills 75-98% of the frame (all of it inside), its corners moved independently (perspective and a slight
    turn), on a darker surface; then light falling off across the frame, sometimes a soft shadow
    (a hand or the phone), blur, sensor noise and JPEG at quality 35-90.
    """
    height, width = page.shape
    fill = rng.uniform(0.75, 0.98)
    jitter = 0.06 * min(width, height)
    inset = np.array([width, height]) * (1 - fill) / 2
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    target = target + np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * inset + rng.uniform(-jitter, jitter, (4, 2))
    target = np.clip(target, 0, [width, height])  # the whole page in the frame: every mark keeps its box
    source = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    matrix = homography(source, target)
    inverse = np.linalg.inv(matrix)
    coefficients = tuple((inverse / inverse[2, 2]).flatten()[:8])
    paper = Image.fromarray((np.clip(page, 0, 1) * 255).astype(np.uint8))
    warped = np.asarray(paper.transform((width, height), Image.PERSPECTIVE, coefficients, Image.BILINEAR, fillcolor=0),
                        np.float32) / 255
    inside = np.asarray(Image.new("L", (width, height), 255).transform(
        (width, height), Image.PERSPECTIVE, coefficients, Image.BILINEAR, fillcolor=0), np.float32) / 255
    surface = rng.uniform(0.15, 0.6) + rng.normal(0, 0.03, (height, width))
    image = warped * inside + surface * (1 - inside)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 1 - rng.uniform(0, 0.35) * (np.cos(rng.uniform(0, 2 * np.pi)) * xs / width + np.sin(rng.uniform(0, 2 * np.pi)) * ys / height + 1) / 2
    if rng.random() < 0.5:  # a soft shadow over one side of a line through the frame
        angle, offset = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.8)
        side = np.cos(angle) * (xs / width - offset) + np.sin(angle) * (ys / height - offset)
        light = light * (1 - rng.uniform(0.2, 0.5) / (1 + np.exp(-side * rng.uniform(10, 40))))
    image = np.clip(image * light * rng.uniform(0.85, 1.05) + rng.normal(0, rng.uniform(0.005, 0.03), image.shape), 0, 1)
    photo = Image.fromarray((image * 255).astype(np.uint8))
    if rng.random() < 0.6:
        photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * max(width, height) / 640))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=int(rng.integers(35, 91)))
    photo = Image.open(buffer)
    return np.asarray(photo.convert("L"), np.float32) / 255, warped_boxes(matrix, boxes, pieces)
