"""Uploads into images: each file read within its limit, decoded, and named by its label only.

Shared by the routers so that every route refuses a bad file with the same message and status, and
so that a file name is only ever a label (its last component), never a path.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Annotated, Any

from fastapi import File, Form, UploadFile
from PIL import Image

from signver_torch.io import load_image, load_pages
from signver_torch.library import png_bytes
from signver_torch.studio.settings import StudioError, StudioSettings

#: Optional form fields: repeated files, one text value (module level: FastAPI resolves annotations here).
Files = Annotated[list[UploadFile] | None, File()]
Text = Annotated[str | None, Form()]


def label(upload: UploadFile, default: str = "") -> str:
    """An upload's name as shown in answers: its last component only."""
    return Path(upload.filename or default).name


def read_upload(upload: UploadFile, settings: StudioSettings) -> tuple[str, bytes]:
    """An upload's label and bytes, within the size limit (reading one byte more tells it is over)."""
    name = label(upload, "upload") or "upload"
    limit = int(settings.max_upload_mb * 1024 * 1024)
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise StudioError(f"{name}: larger than the upload limit of {settings.max_upload_mb:g} MB", 413)
    if not data:
        raise StudioError(f"{name}: empty upload (0 bytes)")
    return name, data


def named_images(uploads: list[UploadFile] | None, what: str,
                 settings: StudioSettings) -> list[tuple[tuple[str, str], Image.Image]]:
    """Each upload decoded (grayscale), with its ``(sha256, name)``: a bad file fails the request, naming it."""
    if not uploads:
        return []
    if len(uploads) > settings.max_files:
        raise StudioError(f"{len(uploads)} {what} files, above the limit of {settings.max_files}", 413)
    return [((hashlib.sha256(data).hexdigest(), name), load_image(data, "L", name=name))
            for name, data in [read_upload(upload, settings) for upload in uploads]]


def images(uploads: list[UploadFile] | None, what: str, settings: StudioSettings) -> list[Image.Image]:
    """The decoded uploads alone, for calls that keep no record of their sources."""
    return [image for _, image in named_images(uploads, what, settings)]


def read_pages(upload: UploadFile, settings: StudioSettings) -> tuple[str, list[Image.Image]]:
    """A document's label and every page (TIFF frames, PDF pages), within the page limit."""
    name, data = read_upload(upload, settings)
    return name, load_pages(data, dpi=settings.dpi, max_pages=settings.max_pages, name=name)


def data_uri(image: Image.Image | Any, max_side: int | None = None) -> str:
    """A PNG the page can show inline, without a second request."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image, max_side)).decode()
