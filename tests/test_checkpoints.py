"""Checkpoint save/load: atomic writes, checksums, module checks, name resolution."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from signver_torch import checkpoints
from signver_torch.checkpoints import load_checkpoint, resolve_checkpoint, save_checkpoint, sha256_file
from signver_torch.errors import CheckpointError


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(8))


def trained_state() -> dict[str, torch.Tensor]:
    model = small_model()
    model(torch.rand(2, 1, 8, 8))
    return model.state_dict()


def test_round_trip_keeps_weights_and_card(tmp_path: Path) -> None:
    state = trained_state()
    weights = save_checkpoint(tmp_path / "extractor" / "mine", state, {"module": "extractor", "embedding_dim": 8})
    assert weights == tmp_path / "extractor" / "mine.safetensors"
    loaded, card = load_checkpoint("extractor", weights)
    assert card["embedding_dim"] == 8 and len(card["sha256"]) == 64
    assert loaded.keys() == state.keys()
    for key in state:
        assert torch.equal(loaded[key], state[key]), key
    assert not list(weights.parent.glob(".*")), "no temporary files left behind"


def test_fp16_storage_halves_float_tensors_only(tmp_path: Path) -> None:
    state = trained_state()
    weights = save_checkpoint(tmp_path / "c.safetensors", state, {"module": "cleaner"}, dtype=torch.float16)
    loaded, card = load_checkpoint("cleaner", weights)
    assert card["weights_dtype"] == "float16"
    assert loaded["1.num_batches_tracked"].dtype == torch.int64
    assert loaded["0.weight"].dtype == torch.float16
    assert torch.allclose(loaded["0.weight"].float(), state["0.weight"], atol=1e-3)


def test_corrupted_weights_fail_the_checksum(tmp_path: Path) -> None:
    weights = save_checkpoint(tmp_path / "d", trained_state(), {"module": "detector"})
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_checkpoint("detector", weights)


def test_wrong_module_missing_card_and_garbage_are_refused(tmp_path: Path) -> None:
    weights = save_checkpoint(tmp_path / "d", trained_state(), {"module": "detector"})
    with pytest.raises(CheckpointError, match="'detector' checkpoint, not a 'extractor'"):
        load_checkpoint("extractor", weights)
    weights.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="model card missing"):
        load_checkpoint("detector", weights)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    garbage.with_suffix(".json").write_text(json.dumps({"module": "detector", "sha256": "0" * 64}))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint("detector", garbage)
    garbage.with_suffix(".json").write_text(json.dumps({"module": "detector", "sha256": sha256_file(garbage)}))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint("detector", garbage)
    garbage.with_suffix(".json").write_text("{broken")
    with pytest.raises(CheckpointError, match="unreadable model card"):
        load_checkpoint("detector", garbage)


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The card's rename fails after the new weights were renamed into place: the old pair comes back."""
    first = save_checkpoint(tmp_path / "x", trained_state(), {"module": "extractor", "version": 1})
    before = first.read_bytes()
    real_replace = os.replace
    renamed = []

    def replace_then_fail_on_the_card(source: str | os.PathLike, target: str | os.PathLike) -> None:
        if str(target).endswith("x.json") and not str(source).endswith(".previous"):
            raise OSError(28, "No space left on device")
        real_replace(source, target)
        renamed.append(Path(target).name)

    monkeypatch.setattr(checkpoints.os, "replace", replace_then_fail_on_the_card)
    changed = {key: value + 1 for key, value in trained_state().items()}
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(tmp_path / "x", changed, {"module": "extractor", "version": 2})
    assert renamed[0] == "x.safetensors"  # the weights really were replaced before the failure
    monkeypatch.undo()
    assert first.read_bytes() == before
    _, card = load_checkpoint("extractor", first)
    assert card["version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.safetensors"]


def test_a_refused_state_writes_nothing(tmp_path: Path) -> None:
    first = save_checkpoint(tmp_path / "x", trained_state(), {"module": "extractor", "version": 1})
    before = first.read_bytes()
    shared = torch.ones(4)
    with pytest.raises(RuntimeError, match="share memory"):  # safetensors refuses aliased tensors
        save_checkpoint(tmp_path / "x", {"a": shared, "b": shared}, {"module": "extractor", "version": 2})
    assert first.read_bytes() == before and load_checkpoint("extractor", first)[1]["version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.safetensors"]


def test_paths_with_dots_and_without_suffix(tmp_path: Path) -> None:
    weights = save_checkpoint(tmp_path / "ext-v1.2", trained_state(), {"module": "extractor"})
    assert weights.name == "ext-v1.2.safetensors" and (tmp_path / "ext-v1.2.json").exists()
    for spelling in (tmp_path / "ext-v1.2", tmp_path / "ext-v1.2.json", weights):
        assert resolve_checkpoint("extractor", spelling).weights == weights
    assert oct(weights.stat().st_mode & 0o777) != oct(0o600), "readable like any new file, not private"


def test_unknown_names_and_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no shipped cleaner checkpoint named 'nope'"):
        resolve_checkpoint("cleaner", "nope")
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint("cleaner", tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="unknown module"):
        resolve_checkpoint("matcher", "default")
