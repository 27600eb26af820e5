"""The matcher (``matcher/api.py``) keeps SignVer's calls: cosine distances, verify, the shipped threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from signver_torch.errors import SignVerError
from signver_torch.matcher.api import Matcher


def test_matcher_keeps_signvers_calls() -> None:
    matcher = Matcher()
    a = torch.nn.functional.normalize(torch.randn(256), dim=0)
    assert matcher.cosine_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert matcher.cosine_distance(a, -a) == pytest.approx(2.0, abs=1e-6)
    assert matcher.verify(a, a) and not matcher.verify(a, -a)
    assert matcher.threshold == pytest.approx(json.loads(Path("checkpoints/extractor/default.json").read_text())["threshold"])
    assert not Matcher(threshold=0.0).verify(a, torch.nn.functional.normalize(a + 0.1 * torch.randn(256), dim=0))
    assert matcher.cosine_distance(np.stack([a.numpy()] * 3), a.numpy()[None]).shape == (3, 1)
    with pytest.raises(SignVerError, match="sizes differ"):
        matcher.cosine_distance(np.ones(256), np.ones(128))
    with pytest.raises(SignVerError, match="NaN"):
        matcher.cosine_distance(np.full(256, np.nan), np.ones(256))
