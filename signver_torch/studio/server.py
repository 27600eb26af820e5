"""Run the Studio in a background thread of this process, and drive it with concurrent clients.

Used by the browser and load tests, the load benchmark (``benchmarks/studio_load.py``) and the
screenshot script: a real uvicorn server on a real socket, with the models loaded once.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from signver_torch.errors import SignVerError
from signver_torch.studio.app import StudioSettings, create_app


@contextlib.contextmanager
def running(settings: StudioSettings, port: int = 0, start_timeout: float = 180.0) -> Iterator[str]:
    """Serve ``settings`` until the block ends; yields the base URL (``port=0``: any free port)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=settings.host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True, name="signver-studio")
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise SignVerError(f"the Studio did not start within {start_timeout:.0f} s")
        time.sleep(0.1)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{settings.host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(30)


@dataclass
class LoadResult:
    """Latencies (seconds) of every call, their verdicts in call order per client, and the wall time."""

    clients: int
    latencies: list[float]
    verdicts: list[list[Any]]
    errors: list[str]
    wall_s: float

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {"clients": self.clients, "calls": len(self.latencies), "errors": len(self.errors),
                "p50_s": round(statistics.median(ordered), 3),
                "p95_s": round(ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))], 3),
                "pages_per_s": round(len(self.latencies) / self.wall_s, 2), "wall_s": round(self.wall_s, 1)}


def verify_documents_under_load(url: str, documents: Sequence[Path], references: Sequence[Path], clients: int,
                                calls: int) -> LoadResult:
    """``clients`` threads, each making ``calls`` ``POST /api/verify-document`` calls (cycling through
    ``documents``, each against ``references``); records every latency and verdict."""
    import httpx

    payloads = [path.read_bytes() for path in documents]
    reference_files = [("references", (path.name, path.read_bytes(), "image/png")) for path in references]

    def client(number: int) -> tuple[list[float], list[Any], list[str]]:
        latencies, verdicts, errors = [], [], []
        with httpx.Client(base_url=url, timeout=300) as http:
            for call in range(calls):
                index = (number + call) % len(payloads)
                started = time.perf_counter()
                response = http.post("/api/verify-document",
                                     files=[("page", (documents[index].name, payloads[index], "image/png")), *reference_files])
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
                    verdicts.append((index, None))
                    continue
                answer = response.json()
                verdicts.append((index, answer["match"], [s["distance"] for s in answer["signatures"]]))
        return latencies, verdicts, errors

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    return LoadResult(clients, [value for outcome in outcomes for value in outcome[0]], [outcome[1] for outcome in outcomes],
                      [error for outcome in outcomes for error in outcome[2]], wall)
