"""Page-label readers (``data/detection.py``) on the real documents: the YOLO, SignVerOD and COCO layouts,
malformed rows, the held-out split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from signver_torch.data.detection import DetectionPages, read_detection_dataset, read_yolo, split_pages
from signver_torch.errors import DataError


def test_yolo_pages_of_the_real_documents(documents: Path) -> None:
    records = read_detection_dataset(documents)
    assert len(records) == 12 and sum(len(r.boxes) for r in records) == 9
    assert sum(1 for r in records if not r.boxes) == 3  # pages without signatures are valid
    image, target = DetectionPages(records)[next(i for i, r in enumerate(records) if r.boxes)]
    assert image.shape == (3, 640, 640)
    boxes = target["boxes"]
    assert (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0 and boxes.max() <= 640
    assert set(target["labels"].tolist()) == {1}
    kept, held_out = split_pages(records, 3)
    assert len(held_out) == 4 and not {r.path for r in kept} & {r.path for r in held_out}


def test_the_full_page_set_and_its_held_out_split(shared_data: Path) -> None:
    records = read_detection_dataset(shared_data / "documents")
    assert len(records) == 216 and sum(len(r.boxes) for r in records) == 223
    kept, held_out = split_pages(records, 3)
    assert len(held_out) == 72 and len(kept) == 144


def _yolo_copy(documents: Path, root: Path, lines: dict[str, str]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    source = sorted((documents / "images").iterdir())[0]
    for stem, text in lines.items():
        shutil.copy(source, root / "images" / f"{stem}.jpg")
        (root / "labels" / f"{stem}.txt").write_text(text)
    return root


def test_malformed_yolo_rows_name_the_file_and_line(documents: Path, tmp_path: Path) -> None:
    root = _yolo_copy(documents, tmp_path / "bad", {"a": "0 0.5 0.5 0.2 0.1\n0 0.5 oops 0.2 0.1\n"})
    with pytest.raises(DataError, match=r"a\.txt:2"):
        read_yolo(root)
    outside = _yolo_copy(documents, tmp_path / "outside", {"b": "0 0.95 0.5 0.3 0.1\n"})
    with pytest.raises(DataError, match=r"b\.txt:1.*outside"):
        read_yolo(outside)
    unknown = _yolo_copy(documents, tmp_path / "classes", {"c": "1 0.5 0.5 0.2 0.1\n"})
    with pytest.raises(DataError, match="class 1"):
        read_yolo(unknown)
    [record] = read_yolo(unknown, {0: 1, 1: 4})
    assert record.labels == (4,)


def test_signver_od_and_coco_layouts_give_the_same_boxes(documents: Path, tmp_path: Path) -> None:
    source = sorted((documents / "images").iterdir())[0]
    width, height = Image.open(source).size
    od = tmp_path / "od"
    (od / "images").mkdir(parents=True)
    shutil.copy(source, od / "images" / "p1.jpg")
    (od / "image_ids.csv").write_text(f"id,file_name,height,width\n7,p1.jpg,{height},{width}\n")
    (od / "train.csv").write_text('id,image_id,category_id,bbox,area\n1,7,1,"[0.1, 0.2, 0.3, 0.1]",0.03\n2,7,4,"[0.5, 0.5, 0.2, 0.05]",0.01\n')
    [page] = read_detection_dataset(od)
    assert page.labels == (1, 4)
    assert page.boxes[0] == pytest.approx((0.1 * width, 0.2 * height, 0.4 * width, 0.3 * height))
    coco = tmp_path / "coco"
    (coco / "images").mkdir(parents=True)
    shutil.copy(source, coco / "images" / "p1.jpg")
    annotations = [{"image_id": 3, "category_id": label, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
                   for b, label in zip(page.boxes, page.labels)]
    (coco / "set.json").write_text(json.dumps({"images": [{"id": 3, "file_name": "p1.jpg", "width": width, "height": height}],
                                               "annotations": annotations}))
    [same] = read_detection_dataset(coco)
    assert same.labels == page.labels and np.allclose(same.boxes, page.boxes)
    (od / "images" / "p1.jpg").unlink()
    with pytest.raises(DataError, match="p1.jpg"):
        read_detection_dataset(od)
    with pytest.raises(DataError, match="no detection layout"):
        read_detection_dataset(tmp_path)
