"""What one Studio serves and its limits, and the error it answers with.

A module of its own because the app, its dependencies and every router need them: defined in
``app.py`` they would import in a circle. ``app.py`` re-exports them for its callers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from signver_torch.errors import SignVerError
from signver_torch.io import DEFAULT_MAX_PAGES, PDF_DPI
from signver_torch.runtime import check_backend

#: Hosts that only this machine can reach: writes need no token there, and requests must name one of
#: them as their ``Host`` (a web page elsewhere cannot reach the server through a rebound DNS name).
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Methods that write; from a browser they must come from the Studio's own page (``Origin``).
WRITES = ("POST", "PUT", "PATCH", "DELETE")
#: Environment variable holding the write token (``--token`` sets it for worker processes too).
TOKEN_VARIABLE = "SIGNVER_TOKEN"
#: Environment variable through which ``signver serve --workers N`` hands its settings to each worker.
SETTINGS_VARIABLE = "SIGNVER_STUDIO_SETTINGS"


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
    backend: str = "torch"  # the facades' backend= (signver serve: --backend, auto by default)
    max_upload_mb: float = 20.0  # per file
    max_pages: int = DEFAULT_MAX_PAGES  # per document
    dpi: int = PDF_DPI  # PDF rasterisation
    max_files: int = 50  # per request
    max_request_mb: float = 200.0  # whole request body, refused before it is read

    def check(self) -> None:
        """Refuse an unsafe or impossible configuration before anything loads."""
        check_backend(self.backend)
        if self.host not in LOOPBACK and not self.token:
            raise StudioError(f"binding to {self.host} lets other machines write: give --token or set {TOKEN_VARIABLE}")
        for kind, path in (("gallery", self.gallery), ("library", self.library)):
            if path is not None and Path(path).is_dir():
                raise StudioError(f"--{kind} {path}: is a directory, not a file")
