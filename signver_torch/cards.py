"""The checkpoint card: one versioned schema for every module, read and written only through here.

A card is the JSON beside a ``.safetensors`` file. :class:`ModelCard` holds the fields every module
shares (what the weights are, how they were made, what ``signver evaluate`` measured) typed, and the
module's own fields (the extractor's ``threshold`` and ``preprocessing``, the cleaner's
``tone_curve``, the detector's ``classes`` and ``score_threshold``, ...) in ``fields``. Cards of older schemas are converted
when read (:func:`convert`); writing always writes :data:`CARD_SCHEMA`.

Schema history:

* 1 (cards of 2026-11, no ``schema`` key): the detector's figures on synthetic pages were the
  top-level ``metrics_synthetic`` and ``metrics_synthetic_commands``.
* 2: ``schema``; further measured figures live in ``extra_metrics[<name>] = {"metrics", "command",
  "data_command"}``, written by ``signver evaluate ... --record-as <name>``; ``recipe_chain`` (the runs
  that led to a fine-tuned checkpoint, each with its command and result) is extended by the training
  export.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from signver_torch.errors import CheckpointError

CARD_SCHEMA = 2
#: The modules with checkpoints, each with its user facade (module, class): the one list of modules.
#: Checkpoints and cards exist for these, ``SignVer`` loads these facades, ``signver_torch`` exports
#: their classes, and each training task (``tasks.py``) is one of them.
FACADES = {
    "detector": ("signver_torch.detector.api", "Detector"),
    "cleaner": ("signver_torch.cleaner.api", "Cleaner"),
    "extractor": ("signver_torch.extractor.api", "MetricExtractor"),
}
#: Modules whose checkpoints have cards.
MODULES = tuple(FACADES)
#: The facades that run a module's export without torch (:class:`~signver_torch.runtime.ExportedFacade`): ``SignVer``
#: loads these in place of :data:`FACADES` under an exported backend when an export is at hand.
TORCH_FREE_FACADES = {
    "detector": ("signver_torch.detector.exported", "ExportedDetector"),
    "cleaner": ("signver_torch.cleaner.exported", "ExportedCleaner"),
    "extractor": ("signver_torch.extractor.exported", "ExportedExtractor"),
}


@dataclass
class ModelCard:
    """A checkpoint's card. ``fields`` holds the module's own entries, flat beside the shared ones in JSON."""

    module: str
    architecture: dict[str, Any] = field(default_factory=dict)  # what the module's ``*_from_card`` builds
    sha256: str = ""
    weights_dtype: str = ""
    input: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    recipe_command: str | None = None
    recipe_chain: list[dict[str, Any]] = field(default_factory=list)
    hardware: str | None = None
    date: str | None = None
    wall_time_seconds: float | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    metrics_command: str | None = None
    extra_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    schema: int = CARD_SCHEMA
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "card") -> "ModelCard":
        """The card in ``raw`` (any readable schema, converted), checked field by field."""
        if not isinstance(raw, Mapping):
            raise CheckpointError(f"{where}: model card must be a JSON object")
        data = convert(raw, where)
        shared = {f.name: f for f in fields(cls) if f.name != "fields"}
        if data.get("module") not in MODULES:
            raise CheckpointError(f"{where}: card must name its module (one of {', '.join(MODULES)}), not {data.get('module')!r}")
        for name, expected in (("architecture", dict), ("training", dict), ("versions", dict), ("metrics", dict), ("extra_metrics", dict),
                               ("recipe_chain", list)):
            if name in data and not isinstance(data[name], expected):
                raise CheckpointError(f"{where}: card field {name!r} must be a JSON {'object' if expected is dict else 'list'}")
        return cls(**{key: value for key, value in data.items() if key in shared},
                   fields={key: value for key, value in data.items() if key not in shared})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: the shared fields (empty ones left out), then the module's own."""
        shared = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "fields"}
        return {**{key: value for key, value in shared.items() if value not in (None, [], {}, "") or key == "sha256"},
                **self.fields}


def convert(raw: Mapping[str, Any], where: str = "card") -> dict[str, Any]:
    """A card of any readable schema as :data:`CARD_SCHEMA`."""
    card = dict(raw)
    schema = card.get("schema", 1)
    if not isinstance(schema, int) or schema < 1:
        raise CheckpointError(f"{where}: card schema {schema!r} is not a positive integer")
    if schema > CARD_SCHEMA:
        raise CheckpointError(f"{where}: card schema {schema} was written by a newer signver-torch (this one reads up to "
                              f"{CARD_SCHEMA}); upgrade to read it")
    if schema == 1:
        if "metrics_synthetic" in card:
            commands = list(card.pop("metrics_synthetic_commands", []))
            card.setdefault("extra_metrics", {})["synthetic"] = {  # the last command measured, those before made the data
                "metrics": card.pop("metrics_synthetic"),
                "command": commands[-1] if commands else None,
                "data_command": " && ".join(commands[:-1]) or None,
            }
        card["schema"] = 2
    return card


def verification_threshold(card: Mapping[str, Any], where: str = "card") -> float:
    """An extractor card's distance threshold; ``null`` until calibrated, which a model trained on every
    writer (none held out) is only by ``signver calibrate extractor --out-of-fold``."""
    value = card.get("threshold")
    if value is None:
        raise CheckpointError(f"{where}: no distance threshold yet (trained on every writer, none held out): set it with "
                              "`signver calibrate extractor --out-of-fold FILES`, a cross-validation of its recipe")
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: the card's threshold {value!r} is not a number") from error


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 a card records of a file (weights, background bank, exported graph)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
