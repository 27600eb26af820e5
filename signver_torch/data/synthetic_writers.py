"""Synthetic writers: signatures drawn from per-writer motor programs, with skilled imitations.

Issue 32's candidate (b): pre-train the extractor on many more writers than the real sets hold before
fine-tuning on them. Each writer has a *style* (slant, proportions, pen width, spacing, how far the name
stays legible before it runs into a garland, a flourish) and its own *allographs* (its way of drawing each
letter of a shared alphabet). Names are drawn from a shared pool, so several writers write the same name:
content-matched impostors as in the Chinese set. Every signature adds the variation of one act of writing
(control points moved, a small rotation and scale, pen pressure); an imitation is another writer copying the
target's shapes: the target's allographs and style pulled part-way towards the forger's own, more scatter,
a slower, more even stroke with tremor (the cues forensic examiners look for).

:func:`write_synthetic_writers` writes a writer-folder dataset (``<writer>/genuine/n<NNN>_synthetic_<i>.png``,
``<writer>/forged/…``) that every reader of the library takes as it takes the real sets.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm.auto import tqdm

from signver_torch.data.detection import SYNTHESIS_RECORD
from signver_torch.errors import DataError

_LETTERS = 26
_ALPHABET_SEED = 20261207


@dataclass(frozen=True)
class SyntheticWritersConfig:
    """What :func:`write_synthetic_writers` draws; every image is fixed by ``(seed, writer, index)``."""

    writers: int = 1000
    genuine: int = 12
    forged: int = 6
    names: int = 250
    seed: int = 0

    def check(self) -> None:
        if self.writers < 1 or self.genuine < 2 or self.forged < 0 or self.names < 1:
            raise DataError(f"synthetic writers need writers >= 1, genuine >= 2, forged >= 0 and names >= 1, not {self}")


@dataclass(frozen=True)
class Style:
    """How one writer writes (lengths in pixels of a letter ``height`` high)."""

    slant: float
    aspect: float
    height: float
    pen: float
    spacing: float
    tilt: float
    scatter: float
    legible: int
    garland: float
    flourish: int
    pressure: float
    allographs: np.ndarray  # (26, 4, 2) the writer's control points of each letter, in a unit cell


def alphabet() -> np.ndarray:
    """The shared letter skeletons ``(26, 4, 2)``: four control points in a unit cell, entering low on the
    left and leaving low on the right, so letters join as in cursive."""
    rng = np.random.default_rng(_ALPHABET_SEED)
    points = rng.uniform(0.0, 1.0, size=(_LETTERS, 4, 2))
    points[:, 0] = [0.0, 0.15]
    points[:, -1, 0] = 1.0
    points[:, -1, 1] = rng.uniform(0.0, 0.3, _LETTERS)
    points[:, 1:3, 1] *= rng.choice([1.0, 1.8, 2.4], size=(_LETTERS, 1), p=[0.6, 0.25, 0.15])  # ascenders
    return points


def random_style(rng: np.random.Generator, letters: np.ndarray) -> Style:
    """A writer: its proportions and its own version of each letter."""
    return Style(
        slant=float(rng.normal(0.25, 0.25)), aspect=float(rng.uniform(0.6, 1.4)), height=float(rng.uniform(22, 40)),
        pen=float(rng.uniform(1.0, 4.0)), spacing=float(rng.uniform(0.55, 1.05)), tilt=float(rng.normal(0.0, 0.06)),
        scatter=float(rng.uniform(0.03, 0.07)), legible=int(rng.integers(1, 8)), garland=float(rng.uniform(0.3, 0.9)),
        flourish=int(rng.choice(3, p=[0.4, 0.35, 0.25])), pressure=float(rng.uniform(0.2, 0.7)),
        allographs=letters + rng.normal(0.0, 0.18, size=letters.shape),
    )


def blend(target: Style, forger: Style, share: float) -> Style:
    """The target's style as ``forger`` reproduces it: every number and letter ``share`` of the way to the forger's."""
    mixed = {}
    for name, value in asdict(target).items():
        other = getattr(forger, name)
        if name in ("legible", "flourish"):
            mixed[name] = value
        else:
            mixed[name] = (1 - share) * value + share * other
    return Style(**mixed)


def name_pool(count: int, seed: int) -> list[np.ndarray]:
    """``count`` names: an initial and a surname of 4–9 letters, as letter indices (``-1`` lifts the pen)."""
    rng = np.random.default_rng([seed, 1])
    return [np.concatenate([rng.integers(0, _LETTERS, 1), [-1], rng.integers(0, _LETTERS, int(rng.integers(4, 10)))])
            for _ in range(count)]


def _catmull_rom(points: np.ndarray, samples: int = 8) -> np.ndarray:
    """A smooth curve through ``points`` ``(N, 2)``."""
    if len(points) < 2:
        return points
    padded = np.concatenate([points[:1], points, points[-1:]])
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[:, None]
    out = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1], padded[i], padded[i + 1], padded[i + 2]
        out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (3 * p1 - p0 - 3 * p2 + p3) * t**3))
    out.append(points[-1:])
    return np.concatenate(out)


def trajectory(name: np.ndarray, style: Style, rng: np.random.Generator, scatter: float) -> list[np.ndarray]:
    """The pen's strokes for one act of writing ``name``: a list of ``(N, 2)`` curves, y down."""
    strokes: list[list[np.ndarray]] = [[]]
    x = 0.0
    written = 0
    for letter in name:
        if letter < 0:
            strokes.append([])
            x += style.height * 0.6
            continue
        cell = np.array([style.height * style.aspect, style.height])
        if written < style.legible:
            shape = style.allographs[letter]
        else:  # past the legible start the name runs into a garland of arches
            shape = np.array([[0.0, 0.1], [0.3, style.garland], [0.7, style.garland], [1.0, 0.1]])
        points = shape * cell + [x, 0.0]
        points = points + rng.normal(0.0, scatter * style.height, size=points.shape)
        strokes[-1].append(points)
        x += cell[0] * style.spacing
        written += 1
    curves = [_catmull_rom(np.concatenate(parts)) for parts in strokes if parts]
    if style.flourish == 1:  # an underline
        y = -0.35 * style.height
        line = np.array([[-0.1 * x, y], [0.5 * x, y - 0.1 * style.height], [1.05 * x, y + 0.05 * style.height]])
        curves.append(_catmull_rom(line + rng.normal(0.0, scatter * style.height, line.shape)))
    elif style.flourish == 2:  # a loop back from the last letter
        end = curves[-1][-1]
        loop = end + np.array([[0, 0], [0.4, -0.8], [-0.3, -1.1], [-0.8, -0.4], [1.2, -0.2]]) * style.height
        curves[-1] = np.concatenate([curves[-1], _catmull_rom(loop + rng.normal(0.0, scatter * style.height, loop.shape))[1:]])
    angle = style.tilt + rng.normal(0.0, 0.04)
    scale = rng.normal(1.0, 0.05)
    shear = np.array([[1.0, -style.slant], [0.0, 1.0]])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    flip = np.array([1.0, -1.0])  # up in the cell is up on the page
    return [(curve @ shear.T @ rotation.T) * scale * flip for curve in curves]


def render(strokes: list[np.ndarray], style: Style, rng: np.random.Generator, tremor: float = 0.0,
           even: float = 0.0, supersample: int = 2) -> Image.Image:
    """A grey scan of ``strokes``: pen width from the writing speed (fast strokes thin, ``even`` flattens it),
    ``tremor`` the shake of a slow hand, paper and ink tones varying by scan."""
    if tremor:
        strokes = [s + tremor * style.height * np.stack([np.sin(np.arange(len(s)) * f + p) for f, p in
                                                          rng.uniform([0.7, 0], [1.6, 6.3], size=(2, 2))], 1)
                   for s in strokes]
    every = np.concatenate(strokes)
    low = every.min(0) - style.height
    size = np.ceil((every.max(0) - low + style.height) * supersample).astype(int)
    image = Image.new("L", (int(size[0]), int(size[1])), 0)
    draw = ImageDraw.Draw(image)
    pen = style.pen * rng.uniform(0.85, 1.15) * supersample
    for stroke in strokes:
        points = (stroke - low) * supersample
        steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
        speed = steps / (np.median(steps) + 1e-6)
        widths = pen * (1 + style.pressure * (1 - even) * (1 - np.clip(speed, 0, 2)))
        for (a, b), width in zip(zip(points[:-1], points[1:]), widths):
            w = max(1, int(round(width)))
            draw.line([tuple(a), tuple(b)], fill=255, width=w)
            draw.ellipse([b[0] - w / 2, b[1] - w / 2, b[0] + w / 2, b[1] + w / 2], fill=255)
    image = image.resize((max(1, image.width // supersample), max(1, image.height // supersample)), Image.BOX)
    darkness = np.asarray(image, dtype=np.float32) / 255.0 * rng.uniform(0.55, 0.95)
    paper = rng.uniform(0.88, 1.0) - rng.normal(0.0, 0.01, darkness.shape)
    grey = np.clip(paper - darkness, 0.0, 1.0)
    scan = Image.fromarray((grey * 255).astype(np.uint8))
    return scan.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.7)))


def write_synthetic_writers(out: str | os.PathLike, config: SyntheticWritersConfig = SyntheticWritersConfig(),
                            progress: bool = True, command: str | None = None) -> Path:
    """Write ``config.writers`` writer folders under ``out`` (new or empty), numbered ``0001`` on; each writer
    signs one name of the pool ``config.genuine`` times and is imitated ``config.forged`` times by other writers.
    File names declare the name (``n017_synthetic_03.png``), so writers of the same name are same-text impostors.
    Beside the folders, ``SYNTHESIS_RECORD`` holds ``command`` (the ``signver synthesize`` that drew them, which
    ``signver evaluate --record-as`` names as the data's command, as for synthetic pages) and ``config``."""
    config.check()
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise DataError(f"{root}: not empty (synthetic writers go into a new or empty folder)")
    # drawn beside it and renamed when whole: a stopped run leaves no half-written set behind that trains
    staging = root.with_name(f".tmp-{root.name}")
    shutil.rmtree(staging, ignore_errors=True)
    letters = alphabet()
    names = name_pool(config.names, config.seed)
    width = max(4, len(str(config.writers)))
    styles = [random_style(np.random.default_rng([config.seed, 2, w]), letters) for w in range(config.writers)]
    for w in tqdm(range(config.writers), desc="synthetic writers", disable=not progress):
        rng = np.random.default_rng([config.seed, 3, w])
        text = int(rng.integers(config.names))
        folder = staging / f"{w + 1:0{width}d}"
        style = styles[w]
        for kind, count in (("genuine", config.genuine), ("forged", config.forged)):
            if not count:
                continue
            (folder / kind).mkdir(parents=True)
            for i in range(count):
                if kind == "genuine":
                    strokes = trajectory(names[text], style, rng, style.scatter)
                    image = render(strokes, style, rng)
                else:
                    other = int(rng.integers(max(1, config.writers - 1)))
                    forger = styles[other + (other >= w) if config.writers > 1 else w]
                    copied = blend(style, forger, float(rng.uniform(0.15, 0.45)))
                    strokes = trajectory(names[text], copied, rng, style.scatter * rng.uniform(1.3, 2.2))
                    image = render(strokes, copied, rng, tremor=float(rng.uniform(0.0, 0.012)), even=float(rng.uniform(0.4, 1.0)))
                image.save(folder / kind / f"n{text:03d}_synthetic_{i:02d}.png")
    (staging / SYNTHESIS_RECORD).write_text(json.dumps({"command": command, "config": asdict(config)}) + "\n")
    if root.exists():
        root.rmdir()
    staging.rename(root)
    return root
