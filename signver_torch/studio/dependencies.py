"""What the routes depend on: the studio's state, the write token, and the studio under its lock.

One process shares one set of models between requests. Model work and store writes run one at a
time (on a few CPU cores that is as fast as running them together, and every answer is the one it
would be alone); routes that need this take :data:`LockedStudio` instead of writing the lock out.
"""

from __future__ import annotations

import hmac
import inspect
import threading
from typing import Annotated, Any, AsyncIterator

import anyio
import anyio.to_thread
from fastapi import Depends, Request

from signver_torch.library import DocumentLibrary
from signver_torch.pipeline import SignVer
from signver_torch.studio.jobs import Job
from signver_torch.studio.settings import StudioError, StudioSettings

#: Requests that may wait for the lock at once, each in a thread outside FastAPI's pool (more wait without a thread).
LOCK_WAITERS = 40


class Studio:
    """The models, stores and jobs one app serves (``app.state.studio``)."""

    def __init__(self, settings: StudioSettings) -> None:
        settings.check()
        self.settings = settings
        self.signver = SignVer(settings.detector, settings.cleaner, settings.extractor, device=settings.device,
                               backend=settings.backend)
        # Model work and store writes, one at a time. A plain Lock, not an RLock: a request takes it in one
        # thread, runs its route in another and gives it back in a third (see locked_studio).
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.models: dict[str, Any] = {}
        self.lock_waiters: anyio.CapacityLimiter | None = None  # made by the app's lifespan, in its event loop
        self._library: DocumentLibrary | None = None
        self._opening = threading.Lock()  # the library opens once, whether or not the caller holds the lock

    def load(self) -> None:
        """Load the three models now, so that the first request does not pay for it."""
        self.models = self.signver.load_all()

    def gallery_path(self) -> str:
        """The gallery's file, or a 409 that says how to start a server with one."""
        if self.settings.gallery is None:
            raise StudioError("this server has no gallery: start it with signver serve --gallery DB", 409)
        return self.settings.gallery

    def library(self) -> DocumentLibrary:
        """The document library, opened on first use (bound to the loaded extractor), or a 409."""
        if self.settings.library is None:
            raise StudioError("this server has no document library: start it with signver serve --library LIB", 409)
        with self._opening:
            if self._library is None:
                self._library = DocumentLibrary(self.settings.library, self.signver.extractor.sha256)
            return self._library

    def close(self) -> None:
        """Close the library once no one writes to it (an index job between documents holds no lock)."""
        with self.lock, self._opening:
            if self._library is not None:
                self._library.close()
                self._library = None


def get_studio(request: Request) -> Studio:
    """The studio of the app that received the request."""
    return request.app.state.studio


StudioDep = Annotated[Studio, Depends(get_studio)]


def require_token(request: Request, studio: StudioDep) -> None:
    """Writes carry the token when the server has one (``Authorization: Bearer`` or ``X-SignVer-Token``)."""
    token = studio.settings.token
    if not token:
        return
    given = request.headers.get("x-signver-token") or request.headers.get("authorization", "").removeprefix("Bearer ")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise StudioError("this server needs its token for writes (header Authorization: Bearer TOKEN)", 401)


async def locked_studio(studio: StudioDep) -> AsyncIterator[Studio]:
    """The studio, its lock held while the route runs.

    The wait for the lock runs in a thread outside FastAPI's pool (``studio.lock_waiters``): requests
    queued for the lock never hold the pool threads that the holder's own route needs to finish.
    """
    await anyio.to_thread.run_sync(studio.lock.acquire, limiter=studio.lock_waiters)
    try:
        yield studio
    finally:
        studio.lock.release()


# FastAPI 0.121 and later can end a dependency when the route returns, before the answer is sent: the lock is then
# not held while a slow client reads the answer. Older versions end it after building (or sending) the answer.
_UNTIL_RETURN: dict[str, Any] = {"scope": "function"} if "scope" in inspect.signature(Depends).parameters else {}
LockedStudio = Annotated[Studio, Depends(locked_studio, **_UNTIL_RETURN)]
