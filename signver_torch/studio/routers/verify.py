"""Verification: is a signature, or each signature on a document, the claimed person's; what is on a page.

Each route's inputs are decoded by a dependency before the route takes the models' lock, so reading
uploads (PDF rasterisation included) runs beside other requests' model work, not after it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from PIL import Image

from signver_torch.report import DocumentReport
from signver_torch.studio.dependencies import LockedStudio, StudioDep
from signver_torch.studio.settings import StudioError, StudioSettings
from signver_torch.studio.uploads import Files, Text, data_uri, images, label, read_pages

router = APIRouter(tags=["verify"])


@dataclass
class Claim:
    """Whose signature is expected: reference images (with their labels) or an enrolled person."""

    references: list[Image.Image]
    names: list[str]
    person: str | None


def read_claim(references: list[UploadFile] | None, person: str | None, settings: StudioSettings) -> Claim:
    """The references decoded; a claim with both or neither of references and person is refused."""
    reference_images = images(references, "reference", settings)
    if bool(reference_images) == bool(person):
        raise StudioError("give either references (files) or person (an enrolled id), not both or neither")
    return Claim(reference_images, [label(upload) for upload in references or []], person)


@dataclass
class DocumentClaim:
    """A verify-document request, decoded: the document's pages and the claim."""

    name: str
    pages: list[Image.Image]
    claim: Claim
    include_images: bool


def document_claim(studio: StudioDep, page: Annotated[UploadFile, File()], references: Files = None,
                   person: Text = None, include_images: Annotated[bool, Query(alias="images")] = False) -> DocumentClaim:
    """Decode the claim, then the document (a bad claim is refused before the document is read)."""
    claim = read_claim(references, person, studio.settings)
    name, document = read_pages(page, studio.settings)
    return DocumentClaim(name, document, claim, include_images)


@router.post("/api/verify-document", summary="find the signatures on a page and check each against the claim")
def verify_document(asked: Annotated[DocumentClaim, Depends(document_claim)], studio: LockedStudio) -> dict[str, Any]:
    """Every signature on every page, each with its verdict; `images=true` adds what the page shows."""
    claim = asked.claim
    reports = [studio.signver.verify_document(image, references=claim.references or None, person=claim.person,
                                              gallery=studio.gallery_path() if claim.person else None)
               for image in asked.pages]
    signatures = []
    for number, report in enumerate(reports, start=1):
        for verdict in report.signatures:
            entry = {**verdict.as_dict(), "page": number}
            if asked.include_images:
                entry.update(crop_png=data_uri(verdict.crop), cleaned_png=data_uri(verdict.cleaned))
            signatures.append(entry)
    claimed = claim.person or ", ".join(claim.names)
    whole = DocumentReport(asked.name, claimed, [verdict for report in reports for verdict in report.signatures])
    answer = {**whole.as_dict(), "signatures": signatures, "n_pages": len(asked.pages)}  # each with its page number
    if asked.include_images:
        answer["previews"] = [{"png": data_uri(image, 900), "size": list(image.size)} for image in asked.pages]
    return answer


@dataclass
class SignatureClaim:
    """A verify request, decoded: the query signature, its label and the claim."""

    query: Image.Image
    name: str
    claim: Claim


def signature_claim(studio: StudioDep, query: Annotated[UploadFile, File()], references: Files = None,
                    person: Text = None) -> SignatureClaim:
    """Decode the claim, then the query signature."""
    claim = read_claim(references, person, studio.settings)
    [signature] = images([query], "query", studio.settings)
    return SignatureClaim(signature, label(query, "query"), claim)


@router.post("/api/verify", summary="is this signature the claimed person's (references or an enrolled id)?")
def verify(asked: Annotated[SignatureClaim, Depends(signature_claim)], studio: LockedStudio) -> dict[str, Any]:
    """The same answer as `signver verify --json`."""
    claim = asked.claim
    if claim.person:
        result = studio.signver.verify_claim(studio.gallery_path(), claim.person, asked.query)
    else:
        result = replace(studio.signver.verify_references(claim.references, asked.query), references=tuple(claim.names))
    return {**result.as_dict(), "query": asked.name}


@dataclass
class Scan:
    """A detect request, decoded: the document's label, its pages and the score threshold."""

    name: str
    pages: list[Image.Image]
    threshold: float | None  # None: the detector checkpoint's


def scan(studio: StudioDep, page: Annotated[UploadFile, File()],
         threshold: Annotated[float | None, Form(ge=0.0, le=1.0)] = None) -> Scan:
    """Read every page of the uploaded document."""
    name, document = read_pages(page, studio.settings)
    return Scan(name, document, threshold)


@router.post("/api/detect", summary="signatures, initials, redactions and dates on each page, and the page's tags")
def detect(asked: Annotated[Scan, Depends(scan)], studio: LockedStudio) -> dict[str, Any]:
    """Each page's marks by class, and the tags the document library would store for it."""
    from signver_torch.detector.marks import TAGS, Mark, detections, summarize

    found = studio.models["detector"].predict(asked.pages, score_threshold=asked.threshold)
    answer_pages = []
    for number, (image, marks) in enumerate(zip(asked.pages, found), start=1):
        boxes: dict[str, list[dict[str, Any]]] = {mark.class_name: [] for mark in Mark}
        for detection in detections(marks):
            boxes[detection.mark.class_name].append(detection.as_dict(("box_xyxy", "score")))
        summary = summarize(marks)
        answer_pages.append({"page": number, "size": list(image.size), "boxes": boxes,
                             "tags": {tag: summary[tag] for tag in TAGS}})
    return {"document": asked.name, "pages": answer_pages}
