"""Background indexing jobs: documents indexed one by one in a thread while the page polls progress.

A thread, not a request: indexing a folder of PDFs takes minutes, longer than a browser waits. Each
document is its own transaction under the studio's lock, so requests interleave between documents.
A job's progress lives in the process that runs it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from signver_torch.indexing import Indexed, index_document

if TYPE_CHECKING:
    from signver_torch.studio.dependencies import Studio

log = logging.getLogger("signver.studio")

#: Finished indexing jobs whose status stays pollable (per process).
KEPT_JOBS = 100


@dataclass
class Job:
    """A background indexing job the page polls."""

    id: str
    total: int
    done: int = 0
    state: str = "running"  # running, done
    results: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The job as the API answers it, with its progress from 0 to 1."""
        return {**asdict(self), "progress": round(self.done / self.total, 3) if self.total else 1.0}


def start_indexing(studio: Studio, uploads: list[tuple[str, bytes]]) -> Job:
    """Register a job for ``uploads`` and index them in a thread; the last finished jobs stay pollable."""
    job = Job(uuid.uuid4().hex[:12], len(uploads))
    finished = [key for key, old in studio.jobs.items() if old.state == "done"]
    for key in finished[:-KEPT_JOBS]:
        del studio.jobs[key]
    studio.jobs[job.id] = job
    threading.Thread(target=index_uploads, args=(studio, job, uploads), daemon=True, name=f"index-{job.id}").start()
    return job


def index_uploads(studio: Studio, job: Job, uploads: list[tuple[str, bytes]]) -> None:
    """Index uploaded documents one by one (each its own transaction), updating ``job``."""
    settings = studio.settings
    for name, data in uploads:
        try:
            with studio.lock:
                result = index_document(studio.signver, studio.library(), name, data, dpi=settings.dpi,
                                        max_pages=settings.max_pages)
        except Exception as error:  # a job thread must record, not die silently
            log.exception("indexing %s failed", name)
            result = Indexed(name, error=f"internal error ({type(error).__name__})")
        job.results.append(result.as_dict())
        job.done += 1
    job.state = "done"
