"""Ink maps (``data/ink.py``) of real scans: ink kept, paper dropped, a blank scan named in the error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from signver_torch.data.ink import ink_only, load_ink_maps
from signver_torch.data.signatures import discover_signatures
from signver_torch.errors import DataError
from signver_torch.io import load_image


def test_ink_map_of_a_real_scan_keeps_ink_and_drops_paper(small_data: Path) -> None:
    scan = load_image(small_data / "samples" / "original_2_12.png")
    ink = ink_only(scan)
    gray = np.asarray(scan.convert("L"))
    assert 0.005 < (ink > 0).mean() < 0.3  # a signature covers a small part of its crop
    assert ink.max() == pytest.approx(1.0) and ink.min() == 0.0
    assert max(ink.shape) <= max(gray.shape)
    # the darkest scan pixels are ink, the typical pixel is paper
    assert (ink > 0.5).sum() > 100 and np.median(ink) == 0.0


def test_a_blank_scan_is_named_in_the_error(tmp_path: Path) -> None:
    blank = tmp_path / "writer" / "genuine" / "blank.png"
    blank.parent.mkdir(parents=True)
    Image.new("L", (80, 40), 240).save(blank)
    [record] = discover_signatures(tmp_path)
    with pytest.raises(DataError, match="blank.png"):
        load_ink_maps([record], progress=False)
