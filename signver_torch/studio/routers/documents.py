"""The document library: browse indexed documents by tag, their pages and signatures, and search them.

Reads need no token, removing a document does. Every route holds the studio's lock: the library is
one SQLite connection, shared with the indexing job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import Response
from PIL import Image

from signver_torch.studio.dependencies import LockedStudio, StudioDep, require_token
from signver_torch.studio.settings import StudioError
from signver_torch.studio.uploads import Text, images, label

router = APIRouter(tags=["library"])


@router.get("/api/library/documents", summary="indexed documents, filtered by tags (signed, not:dated, ...)")
def list_documents(studio: LockedStudio, tag: Annotated[list[str] | None, Query()] = None) -> dict[str, Any]:
    """Documents carrying every tag asked for; `not:` inverts one."""
    return {"documents": studio.library().documents(tag or [])}


@router.get("/api/library/documents/{document_id}", summary="one document's pages, marks and signatures")
def document_detail(document_id: int, studio: LockedStudio) -> dict[str, Any]:
    """Pages with their tags, every mark, and each signature's id for its images."""
    return studio.library().document(document_id)


@router.delete("/api/library/documents/{document_id}", summary="remove a document", dependencies=[Depends(require_token)])
def remove_document(document_id: int, studio: LockedStudio) -> dict[str, Any]:
    """Remove the document with its pages, marks and signatures."""
    studio.library().remove(document_id)
    return {"removed": document_id}


@router.get("/api/library/pages/{page_id}/thumbnail", response_class=Response, summary="a page's thumbnail (PNG)")
def thumbnail(page_id: int, studio: LockedStudio) -> Response:
    """The thumbnail stored when the page was indexed."""
    return Response(studio.library().thumbnail(page_id), media_type="image/png")


@router.get("/api/library/signatures/{signature_id}/{kind}", response_class=Response,
            summary="a stored signature's crop or cleaned version (PNG)")
def signature_image(signature_id: int, kind: str, studio: LockedStudio) -> Response:
    """`kind` is `crop` or `cleaned`."""
    return Response(studio.library().signature_image(signature_id, kind), media_type="image/png")


@dataclass
class SearchQuery:
    """A search request, decoded: an enrolled person or one example signature, and how many documents."""

    person: str | None
    example: list[Image.Image]
    name: str
    k: int


def search_query(studio: StudioDep, person: Text = None, signature: Annotated[UploadFile | None, File()] = None,
                 k: Annotated[int, Form(ge=1, le=100)] = 10) -> SearchQuery:
    """Decode the example (before the models' lock); exactly one of person and signature."""
    example = images([signature] if signature is not None else None, "signature", studio.settings)
    if bool(example) == bool(person):
        raise StudioError("search by person (an enrolled id) or by signature (an example file), one of them")
    return SearchQuery(person, example, person or label(signature), k)  # type: ignore[arg-type]


@router.post("/api/library/search", summary="documents signed by an enrolled person or like an example signature")
def search(asked: Annotated[SearchQuery, Depends(search_query)], studio: LockedStudio) -> dict[str, Any]:
    """Documents ranked by their closest signature, each decided as `verify` decides it."""
    person = asked.person
    if person:
        with studio.signver.gallery(studio.gallery_path()) as store:
            references = store.references(person)
            model = store.writer_model(person)
    else:
        references, model = studio.signver.embed(asked.example)[0], None
    library = studio.library()
    hits = []
    for hit in library.search(references, asked.k):
        verdict = studio.signver.decide(library.embedding(hit.signature_id), references,
                                        (lambda: model) if person else None)
        hits.append({**hit.as_dict(), "match": verdict.match, "rule": verdict.rule,
                     "score": round(verdict.score, 4), "threshold": round(verdict.threshold, 4)})
    return {"query": asked.name, "documents": hits}
