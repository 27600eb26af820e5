"""The four marks (``detector/marks.py``): names, tags, and the one JSON shape of a detection."""

from __future__ import annotations

import json

import torch

from signver_torch.data.detection import CLASS_NAMES
from signver_torch.detector.api import summarize
from signver_torch.detector.marks import TAGS, Mark, detections


def test_marks_name_tag_and_serialise_detections() -> None:
    assert [(int(mark), mark.class_name, mark.tag) for mark in Mark] == [
        (1, "signature", "signed"), (2, "initials", "initialled"), (3, "redaction", "redacted"), (4, "date", "dated")]
    assert TAGS == ("signed", "initialled", "redacted", "dated") and {mark: mark.class_name for mark in Mark} == CLASS_NAMES
    found = {"boxes": torch.tensor([[10.04, 20.0, 30.06, 40.0]]), "scores": torch.tensor([0.912345]), "labels": torch.tensor([4])}
    [date] = detections(found)
    assert date.mark is Mark.DATE and json.dumps(date.as_dict()) == (
        '{"box_xyxy": [10.0, 20.0, 30.1, 40.0], "score": 0.9123, "label": 4, "class": "date"}')
    assert date.as_dict(("class", "box"), score_digits=3) == {"class": "date", "box": [10.0, 20.0, 30.1, 40.0]}
    assert summarize(found)["dated"] is True and summarize(found)["n_date"] == 1 and not summarize(found)["signed"]
