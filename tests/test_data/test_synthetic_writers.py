"""Synthetic writers (``data/synthetic_writers.py``): folders every reader takes, fixed by the seed, writers that
differ more than one writer's signatures do, imitations that sit between."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from signver_torch.data.signatures import discover_signatures
from signver_torch.data.synthetic_writers import SyntheticWritersConfig, write_synthetic_writers
from signver_torch.errors import DataError
from signver_torch.extractor.canvas import PreprocessConfig, ink_canvases
from signver_torch.io import load_image_array


def _canvases(paths: list[Path]) -> np.ndarray:
    canvases = ink_canvases([load_image_array(path)[0] for path in paths], PreprocessConfig(height=56, width=96))
    return canvases.reshape(len(paths), -1)


def test_synthetic_writers_are_writer_folders_with_declared_texts(tmp_path: Path) -> None:
    config = SyntheticWritersConfig(writers=6, genuine=3, forged=2, names=2, seed=3)
    root = write_synthetic_writers(tmp_path / "synthetic", config, progress=False)
    records = discover_signatures(root)
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]  # drawn aside, renamed whole
    assert sorted({r.writer for r in records}) == [f"{w:04d}" for w in range(1, 7)]
    assert sum(r.forged for r in records) == 12 and len(records) == 30
    texts = {r.writer: r.text for r in records}
    assert set(texts.values()) <= {"n000", "n001"} and len(set(texts.values())) == 2  # writers share names
    again = write_synthetic_writers(tmp_path / "again", config, progress=False)
    for record in records:
        twin = again / record.path.relative_to(root)
        assert np.array_equal(load_image_array(record.path), load_image_array(twin))


def test_a_writer_is_closer_to_itself_than_to_others_and_imitations_sit_between(tmp_path: Path) -> None:
    root = write_synthetic_writers(tmp_path / "synthetic", SyntheticWritersConfig(writers=8, genuine=4, forged=4, names=8),
                                   progress=False)
    own, imitated, others = [], [], []
    for writer in sorted(root.iterdir()):
        if not writer.is_dir():
            continue
        genuine = _canvases(sorted((writer / "genuine").iterdir()))
        forged = _canvases(sorted((writer / "forged").iterdir()))
        other = _canvases(sorted(next(w for w in sorted(root.iterdir()) if w.is_dir() and w != writer).glob("genuine/*")))
        distance = lambda a, b: float(np.abs(a[:, None] - b[None]).mean())  # noqa: E731
        own.append(distance(genuine[:2], genuine[2:]))
        imitated.append(distance(genuine, forged))
        others.append(distance(genuine, other))
    assert np.mean(own) < np.mean(imitated) < np.mean(others)


def test_synthetic_writers_refuse_a_folder_in_use(tmp_path: Path) -> None:
    (tmp_path / "kept.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        write_synthetic_writers(tmp_path, SyntheticWritersConfig(writers=1), progress=False)
    with pytest.raises(DataError, match="genuine >= 2"):
        write_synthetic_writers(tmp_path / "new", SyntheticWritersConfig(writers=2, genuine=1), progress=False)
    assert (tmp_path / "kept.txt").read_text() == "mine" and not (tmp_path / "new").exists()
