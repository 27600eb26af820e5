"""SignVer Studio: the HTTP service and the page it serves.

One process loads the detector, cleaner and extractor once and shares them between requests (model
work is serialised by a lock: on a few CPU cores one request at a time is as fast as several, and
answers do not depend on what else runs). Answers carry the same fields as the CLI's ``--json``.
Errors are JSON ``{"error": ...}`` with a 4xx status; an unexpected failure is logged and answered
with a 500 that holds no traceback. Uploads live in memory for the request only, unless enrolled or
indexed; their file names are labels, never paths.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import uuid
from urllib.parse import urlsplit
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, AsyncIterator

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from signver_torch.accelerators import installed_version
from signver_torch.errors import CheckpointError, NotFoundError, SignVerError
from signver_torch.io import DEFAULT_MAX_PAGES, PDF_DPI, load_image, load_pages
from signver_torch.library import TAGS, DocumentLibrary, Indexed, index_document, png_bytes
from signver_torch.pipeline import DocumentReport, SignVer

log = logging.getLogger("signver.studio")

#: Hosts that only this machine can reach: writes need no token there, and requests must name one of
#: them as their ``Host`` (a web page elsewhere cannot reach the server through a rebound DNS name).
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Methods that write; from a browser they must come from the Studio's own page (``Origin``).
WRITES = ("POST", "PUT", "PATCH", "DELETE")
#: Finished indexing jobs whose status stays pollable (per process).
KEPT_JOBS = 100
#: Environment variable holding the write token (``--token`` sets it for worker processes too).
TOKEN_VARIABLE = "SIGNVER_TOKEN"
#: Environment variable through which ``signver serve --workers N`` hands its settings to each worker.
SETTINGS_VARIABLE = "SIGNVER_STUDIO_SETTINGS"


#: Optional form fields: repeated files, one text value (module level: FastAPI resolves annotations here).
Files = Annotated[list[UploadFile] | None, File()]
Text = Annotated[str | None, Form()]


class StudioError(SignVerError):
    """A request the service refuses: ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class StudioSettings:
    """What the service serves and its limits."""

    gallery: str | None = None  # SQLite gallery of enrolled people
    library: str | None = None  # SQLite document library
    token: str | None = None  # required on writes when set (and to bind beyond this machine)
    host: str = "127.0.0.1"
    detector: str = "default"
    cleaner: str = "default"
    extractor: str = "default"
    device: str | None = None
    max_upload_mb: float = 20.0  # per file
    max_pages: int = DEFAULT_MAX_PAGES  # per document
    dpi: int = PDF_DPI  # PDF rasterisation
    max_files: int = 50  # per request
    max_request_mb: float = 200.0  # whole request body, refused before it is read

    def check(self) -> None:
        """Refuse an unsafe or impossible configuration before anything loads."""
        if self.host not in LOOPBACK and not self.token:
            raise StudioError(f"binding to {self.host} lets other machines write: give --token or set {TOKEN_VARIABLE}")
        for kind, path in (("gallery", self.gallery), ("library", self.library)):
            if path is not None and Path(path).is_dir():
                raise StudioError(f"--{kind} {path}: is a directory, not a file")


@dataclass
class Job:
    """A background indexing job the page polls."""

    id: str
    total: int
    done: int = 0
    state: str = "running"  # running, done
    results: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "progress": round(self.done / self.total, 3) if self.total else 1.0}


class Studio:
    """The models, stores and jobs one app serves."""

    def __init__(self, settings: StudioSettings) -> None:
        settings.check()
        self.settings = settings
        self.signver = SignVer(settings.detector, settings.cleaner, settings.extractor, device=settings.device)
        self.lock = threading.RLock()  # model work and store writes, one at a time
        self.jobs: dict[str, Job] = {}
        self._library: DocumentLibrary | None = None

    def load(self) -> None:
        self.models = self.signver.load_all()

    def gallery_path(self) -> str:
        if self.settings.gallery is None:
            raise StudioError("this server has no gallery: start it with signver serve --gallery DB", 409)
        return self.settings.gallery

    def library(self) -> DocumentLibrary:
        if self.settings.library is None:
            raise StudioError("this server has no document library: start it with signver serve --library LIB", 409)
        with self.lock:
            if self._library is None:
                self._library = DocumentLibrary(self.settings.library, self.signver.extractor.sha256)
            return self._library

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "models": {kind: {"checkpoint": str(getattr(self.settings, kind)), "sha256": model.sha256}
                       for kind, model in self.models.items()},
            "threshold": self.signver.extractor.threshold,
            "rule": self.signver.decision.rule if self.signver.decision is not None else "distance",
            "versions": {name: installed_version(name) for name in ("signver-torch", "torch", "torchvision", "fastapi")},
            "gallery": self.settings.gallery, "library": self.settings.library,
            "limits": {"max_upload_mb": self.settings.max_upload_mb, "max_pages": self.settings.max_pages,
                       "max_files": self.settings.max_files, "pdf_dpi": self.settings.dpi},
            "writes_need_token": bool(self.settings.token),
        }

    def index_job(self, job: Job, uploads: list[tuple[str, bytes]]) -> None:
        """Index uploaded documents one by one (each its own transaction), updating ``job``."""
        for name, data in uploads:
            try:
                with self.lock:
                    result = index_document(self.signver, self.library(), name, data, dpi=self.settings.dpi,
                                            max_pages=self.settings.max_pages)
            except Exception as error:  # a job thread must record, not die silently
                log.exception("indexing %s failed", name)
                result = Indexed(name, error=f"internal error ({type(error).__name__})")
            job.results.append(result.as_dict())
            job.done += 1
        job.state = "done"


def _data_uri(image: Image.Image | Any, max_side: int | None = None) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image, max_side)).decode()


def create_app(settings: StudioSettings | None = None) -> FastAPI:
    """The Studio app: ``/api/...`` (OpenAPI at ``/docs``) and the page at ``/``."""
    studio = Studio(settings or StudioSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        studio.load()
        log.info(json.dumps({"event": "models_loaded", "seconds": round(time.perf_counter() - started, 2),
                             **{kind: model.sha256[:12] for kind, model in studio.models.items()}}))
        yield
        with studio.lock:  # an index job between documents holds no lock; one writing a document finishes it first
            if studio._library is not None:
                studio._library.close()
                studio._library = None

    app = FastAPI(title="SignVer Studio", version=installed_version("signver-torch") or "0",
                  description="Signature detection, verification, enrolment and document search.", lifespan=lifespan)
    app.state.studio = studio

    @app.middleware("http")
    async def log_requests(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        log.info(json.dumps({"event": "request", "method": request.method, "path": request.url.path,
                             "status": response.status_code, "ms": round(1000 * (time.perf_counter() - started), 1)}))
        return response

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        """Before any body is read: the Host (loopback servers), the Origin of writes, the body's size."""
        settings = studio.settings
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

    @app.exception_handler(SignVerError)
    async def refused(request: Request, error: SignVerError) -> JSONResponse:
        status = getattr(error, "status", 404 if isinstance(error, NotFoundError) else 409 if isinstance(error, CheckpointError) else 400)
        return JSONResponse({"error": " ".join(str(error).split())}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(part) for part in item['loc'][1:]) or 'request'}: {item['msg']}"
                             for item in error.errors())
        return JSONResponse({"error": problems}, status_code=422)

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(error).__name__}); the server log has the details"},
                            status_code=500)

    def authorised(request: Request) -> None:
        """Writes carry the token when the server has one (``Authorization: Bearer`` or ``X-SignVer-Token``)."""
        token = studio.settings.token
        if not token:
            return
        given = request.headers.get("x-signver-token") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise StudioError("this server needs its token for writes (header Authorization: Bearer TOKEN)", 401)

    def read(upload: UploadFile) -> tuple[str, bytes]:
        """An upload's label and bytes, within the size limit."""
        name = Path(upload.filename or "upload").name or "upload"
        limit = int(studio.settings.max_upload_mb * 1024 * 1024)
        data = upload.file.read(limit + 1)
        if len(data) > limit:
            raise StudioError(f"{name}: larger than the upload limit of {studio.settings.max_upload_mb:g} MB", 413)
        if not data:
            raise StudioError(f"{name}: empty upload (0 bytes)")
        return name, data

    def images(uploads: list[UploadFile] | None, what: str) -> list[Image.Image]:
        return [image for _, image in named_images(uploads, what)]

    def named_images(uploads: list[UploadFile] | None, what: str) -> list[tuple[tuple[str, str], Image.Image]]:
        """Each upload decoded (grayscale), with its ``(sha256, name)``: a bad file fails the request, naming it."""
        if not uploads:
            return []
        if len(uploads) > studio.settings.max_files:
            raise StudioError(f"{len(uploads)} {what} files, above the limit of {studio.settings.max_files}", 413)
        return [((hashlib.sha256(data).hexdigest(), name), load_image(data, "L", name=name))
                for name, data in [read(upload) for upload in uploads]]

    def pages(upload: UploadFile) -> tuple[str, list[Image.Image]]:
        name, data = read(upload)
        return name, load_pages(data, dpi=studio.settings.dpi, max_pages=studio.settings.max_pages, name=name)

    def claim(references: list[Image.Image], person: str | None) -> None:
        if bool(references) == bool(person):
            raise StudioError("give either references (files) or person (an enrolled id), not both or neither")

    @app.get("/api/health", summary="models loaded, their digests, versions and limits")
    def health() -> dict[str, Any]:
        return studio.health()

    @app.post("/api/verify-document", summary="find the signatures on a page and check each against the claim")
    def verify_document(page: Annotated[UploadFile, File()], references: Files = None, person: Text = None,
                        include_images: Annotated[bool, Query(alias="images")] = False) -> dict[str, Any]:
        reference_images = images(references, "reference")
        claim(reference_images, person)
        name, document = pages(page)
        with studio.lock:
            reports = [studio.signver.verify_document(
                image, references=reference_images or None, person=person,
                gallery=studio.gallery_path() if person else None) for image in document]
        signatures = []
        for number, (image, report) in enumerate(zip(document, reports), start=1):
            for verdict in report.signatures:
                entry = {**verdict.as_dict(), "page": number}
                if include_images:
                    entry.update(crop_png=_data_uri(verdict.crop), cleaned_png=_data_uri(verdict.cleaned))
                signatures.append(entry)
        claimed = person or ", ".join(Path(r.filename or "").name for r in references or [])
        whole = DocumentReport(name, claimed, [verdict for report in reports for verdict in report.signatures])
        answer = {**whole.as_dict(), "signatures": signatures, "n_pages": len(document)}  # each with its page number
        if include_images:
            answer["previews"] = [{"png": _data_uri(image, 900), "size": list(image.size)} for image in document]
        return answer

    @app.post("/api/verify", summary="is this signature the claimed person's (references or an enrolled id)?")
    def verify(query: Annotated[UploadFile, File()], references: Files = None, person: Text = None) -> dict[str, Any]:
        reference_images = images(references, "reference")
        claim(reference_images, person)
        [signature] = images([query], "query")
        with studio.lock:
            if person:
                result = studio.signver.verify_claim(studio.gallery_path(), person, signature)
            else:
                result = studio.signver.verify_references(reference_images, signature)
        if not person:
            result["references"] = [Path(r.filename or "").name for r in references or []]
        return {**result, "query": Path(query.filename or "query").name}

    @app.post("/api/enroll", summary="enrol a person's reference signatures (all or nothing)",
              dependencies=[Depends(authorised)])
    def enroll(person: Annotated[str, Form()], signatures: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
        loaded = named_images(signatures, "signature")
        with studio.lock:
            added = studio.signver.enroll(studio.gallery_path(), person, [image for _, image in loaded],
                                          sources=[source for source, _ in loaded])
            with studio.signver.gallery(studio.gallery_path()) as store:
                total = len(store.references(person))
        return {"person": person, "added": added, "n_references": total}

    @app.post("/api/identify", summary="the closest enrolled people to a signature")
    def identify(signature: Annotated[UploadFile, File()], k: Annotated[int, Form(ge=1, le=100)] = 5) -> dict[str, Any]:
        [image] = images([signature], "signature")
        with studio.lock:
            matches = studio.signver.identify(studio.gallery_path(), image, k)
        threshold = studio.signver.extractor.threshold
        return {"query": Path(signature.filename or "").name, "threshold": threshold,
                "matches": [{"person": m.person, "distance": m.distance, "match": m.distance <= threshold} for m in matches]}

    @app.post("/api/detect", summary="signatures, initials, redactions and dates on each page, and the page's tags")
    def detect(page: Annotated[UploadFile, File()],
                     threshold: Annotated[float, Form(ge=0.0, le=1.0)] = 0.3) -> dict[str, Any]:
        from signver_torch.data.detection import CLASS_NAMES
        from signver_torch.detector.api import summarize

        name, document = pages(page)
        with studio.lock:
            found = studio.models["detector"].predict(document, score_threshold=threshold)
        answer_pages = []
        for number, (image, detections) in enumerate(zip(document, found), start=1):
            boxes: dict[str, list[dict[str, Any]]] = {label: [] for label in CLASS_NAMES.values()}
            for box, score, label in zip(detections["boxes"].tolist(), detections["scores"].tolist(), detections["labels"].tolist()):
                boxes[CLASS_NAMES[label]].append({"box_xyxy": [round(v, 1) for v in box], "score": round(score, 4)})
            summary = summarize(detections)
            answer_pages.append({"page": number, "size": list(image.size), "boxes": boxes,
                                 "tags": {tag: summary[tag] for tag in TAGS}})
        return {"document": name, "pages": answer_pages}

    @app.get("/api/people", summary="everyone enrolled, with their number of references")
    def people() -> dict[str, Any]:
        path = studio.gallery_path()
        if not Path(path).is_file():
            return {"people": []}
        with studio.lock, studio.signver.gallery(path) as store:
            return {"people": [{"person": person, "n_references": count} for person, count in store.people()]}

    @app.get("/api/people/{person:path}", summary="one enrolled person's references")
    def person_detail(person: str) -> dict[str, Any]:
        with studio.lock, studio.signver.gallery(studio.gallery_path()) as store:
            return {"person": person, "signatures": store.signatures(person)}

    @app.delete("/api/people/{person:path}", summary="forget an enrolled person", dependencies=[Depends(authorised)])
    def forget(person: str) -> dict[str, Any]:
        with studio.lock, studio.signver.gallery(studio.gallery_path()) as store:
            return {"person": person, "removed": store.remove(person)}

    @app.post("/api/library/documents", status_code=202, dependencies=[Depends(authorised)],
              summary="index documents (pages, multi-page TIFFs, PDFs) in the background; poll the job")
    def add_documents(documents: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
        if len(documents) > studio.settings.max_files:
            raise StudioError(f"{len(documents)} documents, above the limit of {studio.settings.max_files}", 413)
        studio.library()  # a library that cannot open refuses now, not in the job
        uploads = [read(upload) for upload in documents]
        job = Job(uuid.uuid4().hex[:12], len(uploads))
        finished = [key for key, old in studio.jobs.items() if old.state == "done"]
        for key in finished[:-KEPT_JOBS]:  # the last ones stay pollable
            del studio.jobs[key]
        studio.jobs[job.id] = job
        threading.Thread(target=studio.index_job, args=(job, uploads), daemon=True, name=f"index-{job.id}").start()
        return job.as_dict()

    @app.get("/api/library/jobs/{job_id}", summary="progress of an indexing job")
    def job_status(job_id: str) -> dict[str, Any]:
        if job_id not in studio.jobs:
            raise StudioError(f"no indexing job {job_id!r}", 404)
        return studio.jobs[job_id].as_dict()

    @app.get("/api/library/documents", summary="indexed documents, filtered by tags (signed, not:dated, ...)")
    def list_documents(tag: Annotated[list[str] | None, Query()] = None) -> dict[str, Any]:
        with studio.lock:
            return {"documents": studio.library().documents(tag or [])}

    @app.get("/api/library/documents/{document_id}", summary="one document's pages, marks and signatures")
    def document_detail(document_id: int) -> dict[str, Any]:
        with studio.lock:
            return studio.library().document(document_id)

    @app.delete("/api/library/documents/{document_id}", summary="remove a document", dependencies=[Depends(authorised)])
    def remove_document(document_id: int) -> dict[str, Any]:
        with studio.lock:
            studio.library().remove(document_id)
        return {"removed": document_id}

    @app.get("/api/library/pages/{page_id}/thumbnail", response_class=Response, summary="a page's thumbnail (PNG)")
    def thumbnail(page_id: int) -> Response:
        with studio.lock:
            return Response(studio.library().thumbnail(page_id), media_type="image/png")

    @app.get("/api/library/signatures/{signature_id}/{kind}", response_class=Response,
             summary="a stored signature's crop or cleaned version (PNG)")
    def signature_image(signature_id: int, kind: str) -> Response:
        with studio.lock:
            return Response(studio.library().signature_image(signature_id, kind), media_type="image/png")

    @app.post("/api/library/search", summary="documents signed by an enrolled person or like an example signature")
    def search(person: Text = None, signature: Annotated[UploadFile | None, File()] = None,
                     k: Annotated[int, Form(ge=1, le=100)] = 10) -> dict[str, Any]:
        example = images([signature] if signature is not None else None, "signature")
        if bool(example) == bool(person):
            raise StudioError("search by person (an enrolled id) or by signature (an example file), one of them")
        with studio.lock:
            if person:
                with studio.signver.gallery(studio.gallery_path()) as store:
                    references = store.references(person)
                    model = store.writer_model(person)
            else:
                references, model = studio.signver.embed(example)[0], None
            library = studio.library()
            hits = []
            for hit in library.search(references, k):
                verdict = studio.signver.decide(library.embedding(hit.signature_id), references,
                                                (lambda: model) if person else None)
                hits.append({**hit.as_dict(), "match": verdict["match"], "rule": verdict["rule"],
                             "score": round(verdict["score"], 4), "threshold": round(verdict["threshold"], 4)})
        return {"query": person or Path(signature.filename or "").name, "documents": hits}  # type: ignore[union-attr]

    static = resources.files("signver_torch.studio") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(static / "index.html"))

    return app


def create_app_from_environment() -> FastAPI:
    """The app a ``signver serve --workers N`` worker builds from :data:`SETTINGS_VARIABLE`."""
    settings = StudioSettings(**json.loads(os.environ.get(SETTINGS_VARIABLE, "{}")))
    settings.token = settings.token or os.environ.get(TOKEN_VARIABLE) or None
    return create_app(settings)
