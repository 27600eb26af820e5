"""Signature loaders, writer splits, batch sampling and preprocessing on the real CEDAR scans."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from signver_torch.data.signatures import (
    SignatureImages,
    class_labels,
    discover_signatures,
    parse_writers,
    writer_split,
)
from signver_torch.errors import BlankSignatureError, DataError, SignVerError
from signver_torch.extractor.data import WriterBatchSampler, holdout_writers
from signver_torch.extractor.transforms import SignaturePreprocessor
from signver_torch.io import load_image_tensor


def make_writer_folders(cedar: Path, root: Path, writers: dict[str, int], forged: int = 0) -> Path:
    """A private-signature layout (WRITER/genuine, WRITER/forged) made of real CEDAR scans."""
    for name, count in writers.items():
        cedar_id = name.split("_")[-1]
        (root / name / "genuine").mkdir(parents=True)
        for n in range(1, count + 1):
            shutil.copy(cedar / "full_org" / f"original_{cedar_id}_{n}.png", root / name / "genuine" / f"{n}.png")
        if forged:
            (root / name / "forged").mkdir()
            for n in range(1, forged + 1):
                shutil.copy(cedar / "full_forg" / f"forgeries_{cedar_id}_{n}.png", root / name / "forged" / f"{n}.png")
    return root


def test_cedar_layout_is_found_from_either_folder(small_data: Path) -> None:
    records = discover_signatures(small_data)
    assert records == discover_signatures(small_data / "cedar")
    assert len(records) == 52
    assert {r.writer for r in records} == {"1", "2", "35", "36", "37", "39"}
    assert sum(r.forged for r in records) == 26
    assert all(("forgeries" in r.path.name) == r.forged for r in records)


def test_the_whole_cedar_set_is_found(shared_data: Path) -> None:
    records = discover_signatures(shared_data)
    assert records == discover_signatures(shared_data / "cedar")
    assert len(records) == 1920 and len({r.writer for r in records}) == 40 and sum(r.forged for r in records) == 960


def test_writer_folders_with_and_without_forgeries(small_data: Path, tmp_path: Path) -> None:
    root = make_writer_folders(small_data / "cedar", tmp_path, {"ann_35": 4, "bob_37": 3}, forged=2)
    shutil.rmtree(root / "bob_37" / "forged")
    records = discover_signatures(root)
    assert [(r.writer, r.forged) for r in records].count(("ann_35", True)) == 2
    assert {r.writer for r in records if not r.forged} == {"ann_35", "bob_37"}
    labels, writers = class_labels(records)
    assert writers == ["ann_35", "bob_37"]
    assert sorted(set(labels.tolist())) == [0, 1, 2]  # bob has no forged class


def test_the_dutch_writer_folders_are_read_as_they_are(small_data: Path) -> None:
    records = discover_signatures(small_data / "dutch")
    assert {r.writer for r in records} == {"037", "040", "044"}
    assert sum(not r.forged for r in records) == 15 and sum(r.forged for r in records) == 12
    assert all((r.path.parent.name == "forged") == r.forged for r in records)


def test_bad_layouts_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        discover_signatures(tmp_path / "nothing")
    (tmp_path / "loose.png").write_bytes(b"")
    with pytest.raises(DataError, match="expected CEDAR"):
        discover_signatures(tmp_path)
    (tmp_path / "carol" / "genuine").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        discover_signatures(tmp_path)


def test_writer_specs_and_disjoint_splits(small_data: Path) -> None:
    assert parse_writers("1-3, 7") == ["1", "2", "3", "7"]
    assert parse_writers(["alice", "bob"]) == ["alice", "bob"]
    assert parse_writers("2019-2020,7", available=["2019-2020", "7"]) == ["2019-2020", "7"]
    assert parse_writers("6-7", available=["6", "7"]) == ["6", "7"]
    with pytest.raises(DataError, match="empty"):
        parse_writers("5-3")
    records = discover_signatures(small_data)
    train, val = writer_split(records, "1-2", "35-37,39")
    assert len(train) == 2 * 6 and len(val) == 4 * 10
    assert not {r.writer for r in train} & {r.writer for r in val}
    with pytest.raises(DataError, match="overlap.*35"):
        writer_split(records, "1-2,35", "35-37")
    with pytest.raises(DataError, match="not in the data: 41, 42"):
        writer_split(records, "41-42")
    assert discover_signatures(small_data, "35-37,39") == val
    with pytest.raises(DataError, match="not in the data: 38"):
        discover_signatures(small_data, "35-39")


def test_holdout_takes_the_complement_or_the_last_fifth(small_data: Path) -> None:
    records = discover_signatures(small_data)
    train, val = holdout_writers(records, None, None, 0.2)
    assert val == ["37", "39"] and train == ["1", "2", "35", "36"]  # at least two held out
    train, val = holdout_writers(records, "1-2,35", None, 0.2)
    assert val == ["36", "37", "39"]
    train, val = holdout_writers(records, None, "39", 0.2)
    assert train == ["1", "2", "35", "36", "37"]


def test_writer_batches_put_forgeries_beside_their_genuine(small_data: Path) -> None:
    records = discover_signatures(small_data)
    [train] = writer_split(records, "35-37,39")
    labels, _ = class_labels(train)
    sampler = WriterBatchSampler(labels, writers_per_batch=2, per_class=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4  # ceil(40 signatures / 12 a batch)
    for batch in batches:
        batch_labels = labels[batch]
        assert len(batch) == 12
        writers = (batch_labels // 2).unique()
        assert len(writers) == 2
        for writer in writers:
            assert (batch_labels == 2 * writer).sum() == 3 and (batch_labels == 2 * writer + 1).sum() == 3
    assert list(sampler) == batches, "an epoch is fixed by the seed and the epoch number"
    sampler.set_epoch(1)
    assert list(sampler) != batches, "a new epoch draws new batches"


@pytest.fixture(scope="module")
def cedar_pair(small_data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Writer 39: a genuine scan and a skilled forgery, both RGBA files."""
    cedar = small_data / "cedar"
    return (
        load_image_tensor(cedar / "full_org" / "original_39_1.png"),
        load_image_tensor(cedar / "full_forg" / "forgeries_39_1.png"),
    )


def test_preprocessing_gives_ink_on_black_canvas(cedar_pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    canvas = SignaturePreprocessor(height=96, width=160)(list(cedar_pair))
    assert canvas.shape == (2, 1, 96, 160)
    assert canvas.min() == 0 and canvas.max() == 1
    for item in canvas:
        assert (item > 0.1).float().mean() < 0.15, "mostly background"
        assert (item > 0.5).float().mean() > 0.005, "ink kept"
        border = torch.cat([item[0, :3].flatten(), item[0, -3:].flatten()])
        assert border.max() < 0.5, "background removed, ink centred away from the edges"


def test_paper_tone_does_not_change_the_canvas(cedar_pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    genuine, _ = cedar_pair
    darker_paper = genuine * 0.85  # same scan, greyer paper and ink
    canvases = SignaturePreprocessor()([genuine, darker_paper])
    assert (canvases[0] - canvases[1]).abs().mean() < 0.01


def test_batch_padding_does_not_change_an_item(cedar_pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    genuine, _ = cedar_pair
    small = genuine[:, :200, :300]
    big_white = torch.ones(1, 900, 1400)
    big_white[:, 100:300, 100:400] = genuine[:, :200, :300]
    preprocess = SignaturePreprocessor()
    alone = preprocess([small])
    together = preprocess([small, big_white], strict=False)
    assert torch.allclose(alone[0], together[0], atol=1e-4)


def test_blank_and_malformed_batches_are_refused(cedar_pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    preprocess = SignaturePreprocessor()
    white = torch.ones(1, 120, 300)
    with pytest.raises(BlankSignatureError, match=r"item\(s\) \[1\]") as caught:
        preprocess([cedar_pair[0], white])
    assert caught.value.indices == [1]
    assert preprocess([white], strict=False).abs().max() == 0
    with pytest.raises(BlankSignatureError):
        preprocess([torch.full((1, 50, 50), 0.4)])
    with pytest.raises(SignVerError, match="empty batch"):
        preprocess([])
    with pytest.raises(SignVerError, match="NaN"):
        preprocess([torch.full((1, 10, 10), float("nan"))])
    with pytest.raises(SignVerError, match="at least 2x2"):
        preprocess([torch.zeros(1, 1, 1)])


def test_every_training_scan_has_ink(shared_data: Path) -> None:
    records = discover_signatures(shared_data)
    [subset] = writer_split(records, "1-40")
    images = SignatureImages(subset[::4])
    batch = [images[i][0] for i in range(len(images))]
    SignaturePreprocessor()(batch)  # strict: raises BlankSignatureError naming any blank item
