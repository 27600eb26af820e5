"""SignVer Studio: the HTTP service and the page it serves, assembled from its parts.

One process loads the detector, cleaner and extractor once and shares them between requests (model
work is serialised by a lock: on a few CPU cores one request at a time is as fast as several, and
answers do not depend on what else runs). Answers carry the same fields as the CLI's ``--json``.
Errors are JSON ``{"error": ...}`` with a 4xx status; an unexpected failure is logged and answered
with a 500 that holds no traceback. Uploads live in memory for the request only, unless enrolled or
indexed; their file names are labels, never paths.

This module only assembles: the lifespan (models loaded once), the guard that runs before any body
is read, the JSON error handlers and the routers (``routers/``). The state and the lock are in
``dependencies.py``, the indexing thread in ``jobs.py``, uploads in ``uploads.py``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from signver_torch.accelerators import installed_version
from signver_torch.errors import CheckpointError, NotFoundError, SignVerError
from signver_torch.studio.dependencies import LOCK_WAITERS, Studio
from signver_torch.studio.jobs import KEPT_JOBS, Job
from signver_torch.studio.routers import documents, gallery, health, jobs, pages, verify
from signver_torch.studio.settings import (LOOPBACK, SETTINGS_VARIABLE, TOKEN_VARIABLE, WRITES, StudioError,
                                           StudioSettings)

__all__ = ["KEPT_JOBS", "LOOPBACK", "SETTINGS_VARIABLE", "TOKEN_VARIABLE", "WRITES", "Job", "Studio", "StudioError",
           "StudioSettings", "create_app", "create_app_from_environment"]

log = logging.getLogger("signver.studio")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the models before the first request; close the library after the last."""
    studio: Studio = app.state.studio
    started = time.perf_counter()
    studio.load()
    studio.lock_waiters = anyio.CapacityLimiter(LOCK_WAITERS)
    log.info(json.dumps({"event": "models_loaded", "seconds": round(time.perf_counter() - started, 2),
                         **{kind: model.sha256[:12] for kind, model in studio.models.items()}}))
    yield
    # In a thread: an index job may be writing a document, and the event loop must stay free meanwhile
    # (requests give the lock back from it).
    await anyio.to_thread.run_sync(studio.close)


async def log_requests(request: Request, call_next: Any) -> Response:
    """One JSON line per request on the server's log."""
    started = time.perf_counter()
    response = await call_next(request)
    log.info(json.dumps({"event": "request", "method": request.method, "path": request.url.path,
                         "status": response.status_code, "ms": round(1000 * (time.perf_counter() - started), 1)}))
    return response


async def guard(request: Request, call_next: Any) -> Response:
    """Before any body is read: the Host (loopback servers), the Origin of writes, the body's size."""
    settings = request.app.state.studio.settings
    host_header = request.headers.get("host", "")
    host = host_header.rsplit(":", 1)[0] if not host_header.startswith("[") else host_header[1:].split("]", 1)[0]
    if settings.host in LOOPBACK and host not in LOOPBACK:
        return JSONResponse({"error": f"this server answers this machine only, not requests for host {host!r}"}, 421)
    if request.method in WRITES:
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != host_header:
            return JSONResponse({"error": f"writes from another site ({origin}) are refused"}, 403)
        length = request.headers.get("content-length")
        if length is None and request.method != "DELETE":
            return JSONResponse({"error": "a write needs a Content-Length"}, 411)
        if length is not None and (not length.isdigit() or int(length) > settings.max_request_mb * 1024 * 1024):
            return JSONResponse({"error": f"request body above the limit of {settings.max_request_mb:g} MB"}, 413)
    return await call_next(request)


async def refused(request: Request, error: SignVerError) -> JSONResponse:
    """A refusal the library or a route raised: its own status, or the one its class implies."""
    status = getattr(error, "status", 404 if isinstance(error, NotFoundError) else 409 if isinstance(error, CheckpointError) else 400)
    return JSONResponse({"error": " ".join(str(error).split())}, status_code=status)


async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    """A missing or malformed field, said in one line (field: problem) instead of FastAPI's list."""
    problems = "; ".join(f"{'.'.join(str(part) for part in item['loc'][1:]) or 'request'}: {item['msg']}"
                         for item in error.errors())
    return JSONResponse({"error": problems}, status_code=422)


async def failed(request: Request, error: Exception) -> JSONResponse:
    """An unexpected failure: the traceback goes to the server's log, never to the client."""
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": f"internal error ({type(error).__name__}); the server log has the details"},
                        status_code=500)


def create_app(settings: StudioSettings | None = None) -> FastAPI:
    """The Studio app: ``/api/...`` (OpenAPI at ``/docs``) and the page at ``/``."""
    studio = Studio(settings or StudioSettings())  # an unsafe configuration is refused before anything else
    app = FastAPI(title="SignVer Studio", version=installed_version("signver-torch") or "0",
                  description="Signature detection, verification, enrolment and document search.", lifespan=lifespan)
    app.state.studio = studio
    app.middleware("http")(log_requests)
    app.middleware("http")(guard)  # added last, so it runs first: a refused request is not logged or read
    app.add_exception_handler(SignVerError, refused)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, invalid)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, failed)
    for area in (health, verify, gallery, jobs, documents):
        app.include_router(area.router)
    app.mount("/static", StaticFiles(directory=str(pages.STATIC)), name="static")
    app.include_router(pages.router)
    return app


def create_app_from_environment() -> FastAPI:
    """The app a ``signver serve --workers N`` worker builds from :data:`SETTINGS_VARIABLE`."""
    settings = StudioSettings(**json.loads(os.environ.get(SETTINGS_VARIABLE, "{}")))
    settings.token = settings.token or os.environ.get(TOKEN_VARIABLE) or None
    return create_app(settings)
