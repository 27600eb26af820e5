"""The shipped extractor as users call it (``extractor/api.py``): SignVer call shapes, real CEDAR signatures,
bad input, wrong and corrupt checkpoints."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from signver_torch.checkpoints import resolve_checkpoint, save_checkpoint
from signver_torch.errors import BlankSignatureError, CheckpointError, ImageLoadError, SignVerError
from signver_torch.extractor.api import MetricExtractor


@pytest.fixture(scope="module")
def extractor() -> MetricExtractor:
    return MetricExtractor().load("default")


def cedar_file(small_data: Path, writer: int, n: int, forged: bool = False) -> Path:
    folder, prefix = ("full_forg", "forgeries") if forged else ("full_org", "original")
    return small_data / "cedar" / folder / f"{prefix}_{writer}_{n}.png"


def test_original_signver_call_shape(extractor: MetricExtractor, small_data: Path) -> None:
    crops = np.stack(
        [
            np.asarray(Image.open(cedar_file(small_data, 35, n)).convert("RGB").resize((224, 224)), np.float32) / 255
            for n in range(1, 5)
        ]
    )
    assert crops.shape == (4, 224, 224, 3)
    features = extractor.extract(crops)
    assert features.shape == (4, 256) and features.dtype == np.float32
    assert np.allclose(np.linalg.norm(features, axis=1), 1, atol=1e-5)
    gray = extractor.extract(crops.mean(axis=3))  # (N, H, W) works too
    assert np.allclose(gray, features, atol=0.05)


def test_any_input_kind_gives_the_same_embedding(extractor: MetricExtractor, small_data: Path) -> None:
    path = cedar_file(small_data, 36, 3)
    image = Image.open(path)
    kinds = [path, str(path), path.read_bytes(), image, np.asarray(image.convert("L"))]
    features = extractor.extract(kinds)
    assert np.allclose(features, features[0], atol=1e-5)


def test_torch_layout_batches_match_signver_layout(extractor: MetricExtractor, small_data: Path) -> None:
    crops = np.stack(
        [np.asarray(Image.open(cedar_file(small_data, 37, n)).convert("RGB").resize((200, 120)), np.float32) / 255 for n in (1, 2)]
    )
    nhwc = extractor.extract(crops)
    nchw = extractor.extract(torch.from_numpy(crops).permute(0, 3, 1, 2))
    assert np.allclose(nhwc, nchw, atol=1e-5)
    with pytest.raises(SignVerError, match="wrap a single signature"):
        extractor.extract(Image.open(cedar_file(small_data, 37, 1)))  # type: ignore[arg-type]


def test_cpu_networks_are_channels_last_with_unchanged_embeddings(extractor: MetricExtractor, small_data: Path) -> None:
    """The facade stores conv weights channels-last on CPU (faster oneDNN kernels); the embeddings of
    real scans must equal those of the same network in PyTorch's default layout."""
    assert extractor.device.type == "cpu"
    convs = [m.weight for m in extractor.loaded_model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not all(w.is_contiguous() for w in convs)  # (a 1-channel or 1x1 kernel is both)
    files = [cedar_file(small_data, 35, n) for n in (1, 2)] + [cedar_file(small_data, 35, 3, forged=True)]
    fast = extractor.extract(files)
    default_layout = MetricExtractor(device="cpu").load("default")
    default_layout.loaded_model.to(memory_format=torch.contiguous_format)
    assert np.allclose(fast, default_layout.extract(files), atol=1e-5)


def test_genuine_signatures_are_closer_than_skilled_forgeries(extractor: MetricExtractor, small_data: Path) -> None:
    """On the fixture's held-out writers, a writer's genuine pairs are nearer than genuine-forgery pairs."""
    wins = 0
    for writer in (35, 36, 37, 39):
        genuine = extractor.extract([cedar_file(small_data, writer, n) for n in range(1, 6)])
        forged = extractor.extract([cedar_file(small_data, writer, n, forged=True) for n in range(1, 6)])
        same = 1 - genuine @ genuine.T
        positive = same[np.triu_indices(5, 1)].mean()
        skilled = (1 - genuine @ forged.T).mean()
        wins += positive < skilled
    assert wins == 4, f"genuine pairs closer for only {wins} of 4 writers"


def test_bad_batches_are_clear_errors(extractor: MetricExtractor, small_data: Path) -> None:
    with pytest.raises(SignVerError, match="empty batch"):
        extractor.extract([])
    with pytest.raises(SignVerError, match="empty batch"):
        extractor.extract(np.zeros((0, 224, 224, 3), np.float32))
    with pytest.raises(SignVerError, match=r"shaped \(N, H, W\)"):
        extractor.extract(np.zeros((224, 3), np.float32))
    nan_batch = np.full((2, 64, 64, 3), np.nan, np.float32)
    with pytest.raises(ImageLoadError, match="batch item 0.*NaN"):
        extractor.extract(nan_batch)
    white = np.ones((2, 224, 224, 3), np.float32)
    white[0] = np.asarray(Image.open(cedar_file(small_data, 36, 1)).convert("RGB").resize((224, 224))) / 255
    with pytest.raises(BlankSignatureError, match=r"item\(s\) \[1\]"):
        extractor.extract(white)
    with pytest.raises(SignVerError, match="wrap a single signature"):
        extractor.extract(str(cedar_file(small_data, 36, 1)))  # type: ignore[arg-type]


def test_wrong_and_corrupt_checkpoints_are_refused(tmp_path: Path) -> None:
    detector_card = save_checkpoint(tmp_path / "det", {"w": torch.zeros(1)}, {"module": "detector"})
    with pytest.raises(CheckpointError, match="'detector' checkpoint"):
        MetricExtractor().load(detector_card)
    shipped = MetricExtractor().load("default")
    broken = tmp_path / "broken.safetensors"
    shutil.copy(shipped_path(), broken)
    shutil.copy(shipped_path().with_suffix(".json"), broken.with_suffix(".json"))
    data = bytearray(broken.read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        MetricExtractor().load(broken)
    assert shipped.threshold > 0
    with pytest.raises(CheckpointError, match="no shipped extractor checkpoint named 'nope'"):
        MetricExtractor().load("nope")


def shipped_path() -> Path:
    from signver_torch.checkpoints import resolve_checkpoint

    return resolve_checkpoint("extractor", "default").weights
