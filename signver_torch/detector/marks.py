"""The four marks the detector finds (:class:`Mark`: its class name, the tag a page carrying it gets,
its colour in pictures) and the one JSON shape of a detection (:class:`Detection`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Mapping, Sequence


class Mark(IntEnum):
    """A detection class, SignVer's labels: compare labels with these, never with bare numbers."""

    SIGNATURE = 1
    INITIALS = 2
    REDACTION = 3
    DATE = 4

    @property
    def class_name(self) -> str:
        """``"signature"``, ``"initials"``, ``"redaction"``, ``"date"``: the name in data sets and reports."""
        return self.name.lower()  # the data sets' names (data.detection.CLASS_NAMES, a test holds the two together)

    @property
    def tag(self) -> str:
        """What a page carrying this mark is: ``"signed"``, ``"initialled"``, ``"redacted"``, ``"dated"``."""
        return _TAGS[self]

    @property
    def colour(self) -> tuple[int, int, int]:
        """Its boxes' colour in pictures (RGB)."""
        return _COLOURS[self]


_TAGS = {Mark.SIGNATURE: "signed", Mark.INITIALS: "initialled", Mark.REDACTION: "redacted", Mark.DATE: "dated"}
_COLOURS = {Mark.SIGNATURE: (220, 30, 30), Mark.INITIALS: (30, 90, 220), Mark.REDACTION: (20, 150, 40), Mark.DATE: (230, 140, 0)}
#: The tags a page (and a document, when any of its pages has it) can carry, in label order.
TAGS = tuple(mark.tag for mark in Mark)

#: The JSON fields a detection can be written with, in this order by default.
DETECTION_FIELDS = ("box_xyxy", "score", "label", "class")


@dataclass(frozen=True)
class Detection:
    """One box on a page: where (xyxy pixels), which mark, and how sure the detector is (None for a
    labelled mark, which is the truth)."""

    box: tuple[float, ...]
    mark: Mark
    score: float | None = None

    def as_dict(self, fields: Sequence[str] = DETECTION_FIELDS, score_digits: int = 4) -> dict[str, Any]:
        """The detection as JSON, with ``fields`` in their order: ``box_xyxy`` (or ``box``) to 0.1 px,
        ``score`` to ``score_digits`` digits, ``label`` (1..4) and ``class`` (its name)."""
        box = [round(v, 1) for v in self.box]
        values = {"box_xyxy": box, "box": box, "label": int(self.mark), "class": self.mark.class_name}
        if self.score is not None:
            values["score"] = round(self.score, score_digits)
        return {name: values[name] for name in fields}


def detections(found: Mapping[str, Any]) -> list[Detection]:
    """The detections of one page in a torchvision-style dict (``boxes``, ``labels`` and, for
    predictions, ``scores``), in its order."""
    boxes, labels = found["boxes"].reshape(-1, 4).tolist(), found["labels"].tolist()
    scores = found["scores"].tolist() if "scores" in found else [None] * len(boxes)
    return [Detection(tuple(box), Mark(label), score) for box, label, score in zip(boxes, labels, scores)]




def summarize(found: Mapping[str, Any]) -> dict[str, bool | int]:
    """Whether a page is signed, initialled, redacted, dated (and how many of each were found), from its detections
    (tensors or arrays)."""
    labels = [int(label) for label in found["labels"]]
    summary: dict[str, bool | int] = {f"n_{mark.class_name}": labels.count(mark) for mark in Mark}
    summary.update({mark.tag: labels.count(mark) > 0 for mark in Mark})
    return summary


__all__ = ["DETECTION_FIELDS", "Detection", "Mark", "TAGS", "detections", "summarize"]
