"""The cleaner's tests draw dirty/clean pairs from the ink of twelve of the fixture's CEDAR training scans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from signver_torch.data.ink import load_ink_maps
from signver_torch.data.signatures import discover_signatures, writer_split


@pytest.fixture(scope="module")
def ink_maps(small_data: Path) -> list[np.ndarray]:
    [records] = writer_split(discover_signatures(small_data / "cedar"), "1-2")
    return load_ink_maps(records[:12], progress=False)
