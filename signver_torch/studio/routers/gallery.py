"""The gallery of enrolled people: enrol, identify, list, show and forget.

Writes need the token when the server has one; uploads are decoded by a dependency before the
models' lock is taken (see ``verify.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from PIL import Image

from signver_torch.studio.dependencies import LockedStudio, StudioDep, require_token
from signver_torch.studio.uploads import images, label, named_images

router = APIRouter(tags=["gallery"])


@dataclass
class Enrolment:
    """An enrol request, decoded: the person and each signature with its ``(sha256, name)``."""

    person: str
    signatures: list[tuple[tuple[str, str], Image.Image]]


def enrolment(studio: StudioDep, person: Annotated[str, Form()],
              signatures: Annotated[list[UploadFile], File()]) -> Enrolment:
    """Decode every signature first: one bad file refuses them all, so nothing is half-enrolled."""
    return Enrolment(person, named_images(signatures, "signature", studio.settings))


@router.post("/api/enroll", summary="enrol a person's reference signatures (all or nothing)",
             dependencies=[Depends(require_token)])
def enroll(asked: Annotated[Enrolment, Depends(enrolment)], studio: LockedStudio) -> dict[str, Any]:
    """Add the signatures to the person's references, creating the person if new."""
    gallery = studio.gallery_path()
    added = studio.signver.enroll(gallery, asked.person, [image for _, image in asked.signatures],
                                  sources=[source for source, _ in asked.signatures])
    with studio.signver.gallery(gallery) as store:
        total = len(store.references(asked.person))
    return {"person": asked.person, "added": added, "n_references": total}


@dataclass
class Probe:
    """An identify request, decoded: the signature, its label and how many people to return."""

    image: Image.Image
    name: str
    k: int


def probe(studio: StudioDep, signature: Annotated[UploadFile, File()],
          k: Annotated[int, Form(ge=1, le=100)] = 5) -> Probe:
    """Decode the signature to identify."""
    [image] = images([signature], "signature", studio.settings)
    return Probe(image, label(signature), k)


@router.post("/api/identify", summary="the closest enrolled people to a signature")
def identify(asked: Annotated[Probe, Depends(probe)], studio: LockedStudio) -> dict[str, Any]:
    """The `k` closest people, each with its distance and whether it is under the threshold."""
    matches = studio.signver.identify(studio.gallery_path(), asked.image, asked.k)
    threshold = studio.signver.extractor.threshold
    return {"query": asked.name, "threshold": threshold,
            "matches": [{"person": m.person, "distance": m.distance, "match": m.distance <= threshold} for m in matches]}


@router.get("/api/people", summary="everyone enrolled, with their number of references")
def people(studio: LockedStudio) -> dict[str, Any]:
    """An empty list, not an error, before anyone is enrolled."""
    path = studio.gallery_path()
    if not Path(path).is_file():
        return {"people": []}
    with studio.signver.gallery(path) as store:
        return {"people": [{"person": person, "n_references": count} for person, count in store.people()]}


@router.get("/api/people/{person:path}", summary="one enrolled person's references")
def person_detail(person: str, studio: LockedStudio) -> dict[str, Any]:
    """Each reference's source name, sha256 and enrolment time; a person's id may hold '/'."""
    with studio.signver.gallery(studio.gallery_path()) as store:
        return {"person": person, "signatures": store.signatures(person)}


@router.delete("/api/people/{person:path}", summary="forget an enrolled person", dependencies=[Depends(require_token)])
def forget(person: str, studio: LockedStudio) -> dict[str, Any]:
    """Remove the person and every reference."""
    with studio.signver.gallery(studio.gallery_path()) as store:
        return {"person": person, "removed": store.remove(person)}
