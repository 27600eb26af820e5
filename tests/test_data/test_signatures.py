"""Signature folders (``data/signatures.py``) on the real scans: CEDAR, writer folders and several sources
at once (namespaced writers), writer specs and disjoint splits, bad layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from signver_torch.data.signatures import (
    SignatureImages,
    class_labels,
    compact_writers,
    discover_signatures,
    parse_writers,
    writer_split,
)
from signver_torch.errors import DataError
from signver_torch.extractor.transforms import SignaturePreprocessor


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


def test_every_training_scan_has_ink(shared_data: Path) -> None:
    records = discover_signatures(shared_data)
    [subset] = writer_split(records, "1-40")
    images = SignatureImages(subset[::4])
    batch = [images[i][0] for i in range(len(images))]
    SignaturePreprocessor()(batch)  # strict: raises BlankSignatureError naming any blank item


def test_two_sources_keep_their_writers_apart(small_data: Path, tmp_path: Path) -> None:
    roots = [small_data / "cedar", small_data / "dutch"]
    records = discover_signatures(roots)
    assert {r.source for r in records} == {"cedar", "dutch"}
    assert len(records) == 52 + 27 and {r.writer for r in records} >= {"cedar:35", "dutch:037"}
    # the same id in two sources stays two writers: a copy of CEDAR writer 35 as writer folder "35"
    copy = tmp_path / "other"
    (copy / "35" / "genuine").mkdir(parents=True)
    for path in sorted((small_data / "cedar" / "full_org").glob("original_35_*.png")):
        (copy / "35" / "genuine" / path.name).write_bytes(path.read_bytes())
    both = discover_signatures([small_data / "cedar", copy])
    assert {"cedar:35", "other:35"} <= {r.writer for r in both}
    train, val = writer_split(records, "cedar:1-2,dutch:037", "cedar:35,dutch:040,dutch:044")
    assert {r.writer for r in train} == {"cedar:1", "cedar:2", "dutch:037"}
    assert {r.writer for r in val} == {"cedar:35", "dutch:040", "dutch:044"}
    with pytest.raises(DataError, match="named by source: cedar:ID, dutch:ID"):
        discover_signatures(roots, "35-37")


def test_writer_specs_round_trip_with_sources_and_zero_padding() -> None:
    assert parse_writers("dutch:001-003,cedar:7") == ["dutch:001", "dutch:002", "dutch:003", "cedar:7"]
    assert parse_writers("9-11") == ["9", "10", "11"]
    for writers in (["1", "2", "3", "7"], ["cedar:1", "cedar:2", "dutch:009", "dutch:010", "dutch:012"], ["ann", "4", "5"]):
        assert sorted(parse_writers(compact_writers(writers))) == sorted(writers)
    assert compact_writers(["cedar:1", "cedar:2", "cedar:3", "dutch:001", "dutch:002"]) == "cedar:1-3,dutch:001-002"
