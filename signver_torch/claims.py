"""Claims and their verdicts: whose a signature is said to be, what the matcher made of it, and the
claims of a pairs file.

A :class:`Verdict` is what :meth:`SignVer.decide <signver_torch.pipeline.SignVer.decide>` and the
``verify_*`` methods return; its :meth:`Verdict.as_dict` is the JSON line of ``signver verify --json``
and the Studio's ``/api/verify`` answer. :class:`ClaimVerdicts` decides the claims of
``SignVer.verify_many`` from their embeddings, reading each person's references once.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from signver_torch.errors import SignVerError
from signver_torch.matcher.decisions import WriterModel
from signver_torch.matcher.gallery import Gallery

#: Spellings of a pair's ``label`` column: genuine (same writer) or not.
LABELS = {"1": True, "true": True, "genuine": True, "same": True, "yes": True,
          "0": False, "false": False, "forged": False, "forgery": False, "different": False, "no": False}


@dataclass(frozen=True)
class Claim:
    """A query signature said to be someone's: compared with reference images or an enrolled person."""

    query: str
    references: tuple[str, ...] = ()
    person: str | None = None
    label: bool | None = None  # the truth, where it is known: genuine (True) or not

    def __post_init__(self) -> None:
        if (self.person is None) == (not self.references):
            raise SignVerError("a claim names either reference images or an enrolled person")


@dataclass(frozen=True)
class Verdict:
    """What a claim came to. ``rule`` says what decided: ``"distance"`` (the combined distance against
    the checkpoint's pair threshold) or the checkpoint's per-person rule (``"spread"``, ``"svm"``), which
    applies from its ``min_references`` on. ``score`` is what was compared with ``threshold``."""

    match: bool
    distance: float  # the query's cosine distance to the references, combined
    rule: str
    score: float  # ``distance`` itself for the "distance" rule, else the rule's score
    threshold: float
    combine: str | None = None  # how the references' distances combined ("mean", "min"), for the "distance" rule
    person: str | None = None  # the claim: an enrolled person ...
    references: tuple[str, ...] | None = None  # ... or reference images
    query: str | None = None
    n_references: int | None = None  # how many references an enrolled person has

    def as_dict(self) -> dict[str, Any]:
        """The verdict as JSON: the fields that are set, in this order."""
        answer: dict[str, Any] = {}
        for name in (f.name for f in fields(self)):
            value = getattr(self, name)
            if value is not None:
                answer[name] = list(value) if name == "references" else value
        return answer


@dataclass(frozen=True)
class ClaimFailure:
    """A claim that could not be decided: its query or a reference could not be read or embedded, or
    its person is not enrolled."""

    query: str
    error: str  # one line
    person: str | None = None
    references: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        against = {"person": self.person} if self.person is not None else {"references": list(self.references)}
        return {"query": self.query, **against, "error": self.error}


#: ``decide(query, references, writer_model)``: :meth:`SignVer.decide <signver_torch.pipeline.SignVer.decide>`.
Decide = Callable[..., Verdict]


class ClaimVerdicts:
    """Decides claims from embedded images (an embedding or the error, by image), reading each
    enrolled person's references (and writer model) from ``store`` once."""

    def __init__(self, decide: Decide, store: Gallery | None) -> None:
        self.decide, self.store = decide, store
        self._people: dict[str, np.ndarray | SignVerError] = {}
        self._models: dict[str, WriterModel | None] = {}

    def __call__(self, claim: Claim, embedded: dict[str, np.ndarray | SignVerError]) -> Verdict | ClaimFailure:
        query = embedded[claim.query]
        if claim.person is not None and self.store is not None:
            references = self._references(claim.person)
        else:
            failed = [embedded[source] for source in claim.references if isinstance(embedded[source], SignVerError)]
            references = failed[0] if failed else np.stack([embedded[source] for source in claim.references])
        for outcome in (query, references):
            if isinstance(outcome, SignVerError):
                return ClaimFailure(claim.query, one_line(outcome), claim.person, claim.references)
        person = claim.person
        writer_model = partial(self._model, person) if self.store is not None and person is not None else None
        verdict = self.decide(query, references, writer_model)
        if person is not None:
            return replace(verdict, person=person, query=claim.query, n_references=len(references))
        return replace(verdict, references=claim.references, query=claim.query)

    def _references(self, person: str) -> np.ndarray | SignVerError:
        if person not in self._people:
            try:
                self._people[person] = self.store.references(person)  # type: ignore[union-attr]
            except SignVerError as error:
                self._people[person] = error
        return self._people[person]

    def _model(self, person: str) -> WriterModel | None:
        if person not in self._models:
            self._models[person] = self.store.writer_model(person)  # type: ignore[union-attr]
        return self._models[person]


def outcome_from_dict(answer: dict[str, Any]) -> Verdict | ClaimFailure:
    """A verdict or failure back from its ``as_dict`` JSON: how the Ray engine's actors send them to the driver."""
    references = {"references": tuple(answer["references"])} if "references" in answer else {}
    return (ClaimFailure if "error" in answer else Verdict)(**{**answer, **references})


def labelled_summaries(outcomes: Iterable[tuple[Claim, Verdict | ClaimFailure]]) -> list[dict[str, Any]]:
    """EER/AUC, FAR and FRR of the labelled claims' verdicts, one summary per ``(rule, threshold)`` (scores of
    two rules are not comparable); failures and unlabelled claims are left out. What ``verify --pairs`` ends with."""
    labelled: dict[tuple[str, float], list[tuple[bool, float]]] = {}
    for claim, outcome in outcomes:
        if isinstance(outcome, Verdict) and claim.label is not None:
            labelled.setdefault((outcome.rule, outcome.threshold), []).append((claim.label, outcome.score))
    if not labelled:
        return []
    from signver_torch.metrics import labelled_summary  # torch: only when there is something to sum up

    return [{"rule": rule, **labelled_summary(scores, threshold)} for (rule, threshold), scores in labelled.items()]


def one_line(error: BaseException) -> str:
    """An error's message on one line."""
    return " ".join(str(error).split())


def read_claims(path: str | os.PathLike) -> list[Claim]:
    """Claims from a CSV file with a ``query`` column, a ``reference`` column (image paths, several
    separated by ``;``) or a ``person`` column (enrolled ids), and optionally ``label`` (1/0,
    genuine/forged, ...). Relative image paths are taken from the CSV file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise SignVerError(f"{path}: cannot read the pairs file ({error})") from error
    reader = csv.DictReader(io.StringIO(text))
    columns = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = columns
    if "query" not in columns or ("reference" in columns) == ("person" in columns):
        raise SignVerError(f"{path}: needs a header with query and either reference or person (found: {', '.join(columns) or 'nothing'})")

    def image(name: str) -> str:
        return str(Path(name) if Path(name).is_absolute() else path.parent / name)

    claims = []
    for line, row in enumerate(reader, start=2):
        query, label = (row.get("query") or "").strip(), (row.get("label") or "").strip().lower()
        if not query:
            raise SignVerError(f"{path}:{line}: empty query")
        if label and label not in LABELS:
            raise SignVerError(f"{path}:{line}: label {label!r} is not one of {', '.join(LABELS)}")
        if "person" in columns:
            person = (row.get("person") or "").strip()
            if not person:
                raise SignVerError(f"{path}:{line}: empty person")
            claims.append(Claim(image(query), person=person, label=LABELS.get(label)))
        else:
            references = tuple(image(name.strip()) for name in (row.get("reference") or "").split(";") if name.strip())
            if not references:
                raise SignVerError(f"{path}:{line}: empty reference")
            claims.append(Claim(image(query), references, label=LABELS.get(label)))
    if not claims:
        raise SignVerError(f"{path}: no pairs in the file")
    return claims


__all__ = ["LABELS", "Claim", "ClaimFailure", "ClaimVerdicts", "Decide", "Verdict", "labelled_summaries", "one_line",
           "outcome_from_dict", "read_claims"]
