"""``/api/health``: what this server runs, for the page's header and for monitoring."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from signver_torch.accelerators import installed_version
from signver_torch.studio.dependencies import StudioDep

router = APIRouter(tags=["health"])


@router.get("/api/health", summary="models loaded, their digests, versions and limits")
def health(studio: StudioDep) -> dict[str, Any]:
    """What this server runs, for the page and for monitoring; it answers without waiting for model work."""
    settings = studio.settings
    return {
        "status": "ok",
        "models": {kind: {"checkpoint": str(getattr(settings, kind)), "sha256": model.sha256}
                   for kind, model in studio.models.items()},
        "threshold": studio.signver.extractor.threshold,
        "rule": studio.signver.decision.rule if studio.signver.decision is not None else "distance",
        "versions": {name: installed_version(name) for name in ("signver-torch", "torch", "torchvision", "fastapi")},
        "gallery": settings.gallery, "library": settings.library,
        "limits": {"max_upload_mb": settings.max_upload_mb, "max_pages": settings.max_pages,
                   "max_files": settings.max_files, "pdf_dpi": settings.dpi},
        "writes_need_token": bool(settings.token),
    }
