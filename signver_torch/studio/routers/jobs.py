"""Indexing documents into the library: the upload starts a background job, the page polls it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, UploadFile

from signver_torch.studio.dependencies import StudioDep, require_token
from signver_torch.studio.jobs import start_indexing
from signver_torch.studio.settings import StudioError
from signver_torch.studio.uploads import read_upload

router = APIRouter(tags=["library"])


@router.post("/api/library/documents", status_code=202, dependencies=[Depends(require_token)],
             summary="index documents (pages, multi-page TIFFs, PDFs) in the background; poll the job")
def add_documents(documents: Annotated[list[UploadFile], File()], studio: StudioDep) -> dict[str, Any]:
    """Answers at once with the job; a document that cannot be read is reported in the job's results."""
    if len(documents) > studio.settings.max_files:
        raise StudioError(f"{len(documents)} documents, above the limit of {studio.settings.max_files}", 413)
    studio.library()  # a library that cannot open refuses now, not in the job
    uploads = [read_upload(upload, studio.settings) for upload in documents]
    return start_indexing(studio, uploads).as_dict()


@router.get("/api/library/jobs/{job_id}", summary="progress of an indexing job")
def job_status(job_id: str, studio: StudioDep) -> dict[str, Any]:
    """The job's progress and the results so far (the last finished jobs stay pollable)."""
    if job_id not in studio.jobs:
        raise StudioError(f"no indexing job {job_id!r}", 404)
    return studio.jobs[job_id].as_dict()
