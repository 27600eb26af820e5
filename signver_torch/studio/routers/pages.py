"""The Studio's web page at ``/``: plain files shipped in the package, nothing fetched from elsewhere."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import FileResponse

#: The page, its script and its style sheet (the app serves this folder under ``/static``).
STATIC = resources.files("signver_torch.studio") / "static"

router = APIRouter(tags=["page"])


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    """The page itself; it calls the API under ``/api``."""
    return FileResponse(str(STATIC / "index.html"))
