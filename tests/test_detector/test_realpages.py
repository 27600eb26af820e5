"""Real pages used more (``detector/realpages.py``): signatures pasted on the fixture's real training pages are
boxed exactly by their ink, the pages' own labels stay right, held-out pages are never pasted on nor cut from,
and mined negatives (``signver mine negatives``) are pasted on synthetic pages without a label."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from signver_torch.data.detection import DetectionPages, read_detection_dataset, split_pages
from signver_torch.detector.data import PageDataModule, SyntheticPages
from signver_torch.detector.handwriting import INK_LEVEL
from signver_torch.detector.marks import Mark
from signver_torch.detector.realpages import NegativePastes, RealPastes, read_negatives
from signver_torch.errors import DataError


def pasted_darkness(before: torch.Tensor, after: torch.Tensor) -> np.ndarray:
    """The darkness a paste multiplied into the page (``after = before * (1 - darkness)``), where paper lets it show."""
    before, after = before[0].numpy().astype(np.float64), after[0].numpy().astype(np.float64)
    return np.where(before > 0.05, 1 - after / np.maximum(before, 1e-6), 0.0)


def assert_boxes_hold_exactly_the_pasted_ink(darkness: np.ndarray, boxes: np.ndarray) -> None:
    ink = darkness > INK_LEVEL - 1e-3
    covered = np.zeros_like(ink)
    for x0, y0, x1, y1 in boxes.astype(int):
        inside = ink[y0:y1, x0:x1]
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()  # tight
        covered[y0:y1, x0:x1] = True
    assert not (darkness > INK_LEVEL + 1e-3)[~covered].any()  # no pasted ink outside its box


@pytest.fixture(scope="module")
def split(documents: Path) -> tuple[list, list]:
    return split_pages(read_detection_dataset(documents), 3)


def test_pasted_signatures_are_boxed_exactly_by_their_ink(split: tuple[list, list], ink_maps: list[np.ndarray]) -> None:
    train, _ = split
    pastes = RealPastes(train, ink_maps, rate=1.0, most=4, seed=1)
    raw = DetectionPages(train)
    pasted = 0
    for index in range(len(train)):
        (before, original), (after, target) = raw[index], pastes[index]
        count = len(original["boxes"])
        assert torch.equal(target["boxes"][:count], original["boxes"]) and torch.equal(target["labels"][:count], original["labels"])
        assert (target["labels"][count:] == Mark.SIGNATURE).all()
        new = target["boxes"][count:].numpy()
        assert_boxes_hold_exactly_the_pasted_ink(pasted_darkness(before, after), new)
        pasted += len(new)
    assert pasted >= len(train)  # most pages got one or more


def test_moved_signatures_come_from_other_pages_and_leave_the_labels_right(split: tuple[list, list]) -> None:
    train, _ = split
    pastes = RealPastes(train, [], rate=1.0, most=3, seed=2)  # no writers' ink: every paste is a moved real signature
    assert pastes.moved and {page for page, _ in pastes.moved} <= set(range(len(train)))
    raw = DetectionPages(train)
    moved = 0
    for epoch in range(2):
        pastes.epoch = epoch
        for index in range(len(train)):
            (before, original), (after, target) = raw[index], pastes[index]
            count = len(original["boxes"])
            for x0, y0, x1, y1 in original["boxes"].round().int().tolist():  # the page's own signatures untouched
                assert torch.equal(before[:, y0:y1, x0:x1], after[:, y0:y1, x0:x1])
            darkness = pasted_darkness(before, after)
            assert_boxes_hold_exactly_the_pasted_ink(darkness, target["boxes"][count:].numpy())
            widths = (target["boxes"][count:, 2] - target["boxes"][count:, 0]).numpy()
            sources = [cut.shape[1] for page, (cut, _) in pastes.moved if page != index]  # only other pages' signatures
            assert all(min(sources) * 0.8 <= width <= max(sources) * 1.2 for width in widths)
            moved += len(widths)
    assert moved >= len(train)


def test_held_out_pages_are_never_pasted_on_nor_cut_from(small_data: Path, documents: Path) -> None:
    module = PageDataModule(small_data / "cedar", "1-2", "35-36", real_dir=documents, held_out_every=3, real_repeat=2,
                            synthetic_pages=2, val_synthetic_pages=1, real_paste_rate=1.0)
    module.setup()
    train, held_out = split_pages(read_detection_dataset(documents), 3)
    pastes = module.real_pastes
    assert pastes is not None and len(pastes) == 2 * len(train)
    assert {record.path.name for record in pastes.pages.records} == {record.path.name for record in train}
    assert not {record.path.name for record in pastes.pages.records} & {record.path.name for record in held_out}
    validation, raw = module.val_sets[0], DetectionPages(held_out)
    for index in range(len(held_out)):  # the validation pages are the held-out pages as they are
        (image, target), (page, original) = validation[index], raw[index]
        assert torch.equal(image, page) and torch.equal(target["boxes"], original["boxes"])
    default = PageDataModule(small_data / "cedar", "1-2", "35-36", real_dir=documents, synthetic_pages=2, val_synthetic_pages=1)
    default.setup()
    assert default.real_pastes is None  # off unless asked for
    with pytest.raises(DataError, match="real_paste_rate needs real_dir"):  # never silently ignored
        PageDataModule(small_data / "cedar", "1-2", "35-36", synthetic_pages=2, val_synthetic_pages=1, real_paste_rate=0.5).setup()


def test_mined_negatives_are_pasted_without_labels(signver_cli, small_data: Path, documents: Path, split: tuple[list, list],
                                                   ink_maps: list[np.ndarray], tmp_path: Path) -> None:
    out = tmp_path / "negatives.json"
    signver_cli("mine", "negatives", "--data", str(documents), "--pages", "2", "--threshold", "0.05", "--out", str(out), "--quiet")
    mined = json.loads(out.read_text())
    train, held_out = split
    assert mined["n_pages"] == 2 and mined["negatives"] and mined["command"].startswith("signver mine negatives")
    labelled = {record.path.name: record for record in train}
    for negative in mined["negatives"]:
        record = labelled[negative["page"]]  # a training page
        assert negative["score"] >= 0.05
        signatures = torch.tensor(record.boxes).reshape(-1, 4)
        if len(signatures):
            assert box_iou(torch.tensor([negative["box"]]), signatures).max() < 0.1
    cuts = read_negatives(out, train)
    pages = SyntheticPages(ink_maps, 4, seed=5)
    with_negatives = NegativePastes(pages, cuts, rate=1.0, most=3, seed=5)
    for index in range(len(pages)):
        (before, original), (after, target) = pages[index], with_negatives[index]
        assert torch.equal(target["boxes"], original["boxes"]) and torch.equal(target["labels"], original["labels"])
        assert not torch.equal(before, after)  # something was pasted ...
        for x0, y0, x1, y1 in original["boxes"].round().int().tolist():  # ... but over no mark
            assert torch.equal(before[:, y0:y1, x0:x1], after[:, y0:y1, x0:x1])
    held = dict(mined, negatives=[{"page": held_out[0].path.name, "box": [10, 10, 60, 30], "score": 0.9}])
    (tmp_path / "held.json").write_text(json.dumps(held))
    with pytest.raises(DataError, match="not a real training page"):
        read_negatives(tmp_path / "held.json", train)
    for every in ("0", "1"):  # no held-out pages, or only held-out ones: refused in one line, the old file kept whole
        result = signver_cli("mine", "negatives", "--data", str(documents), "--held-out-every", every, "--out", str(out))
        assert result.returncode != 0 and f"held_out_every must be at least 2, not {every}" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert json.loads(out.read_text()) == mined
