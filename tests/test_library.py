"""The document library (``library.py``, ``indexing.py``) survives ``kill -9`` of the indexer: nothing committed is lost,
and a rerun skips what is stored."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from tests.conftest import DOCUMENTS


def test_kill_9_while_indexing_loses_nothing_committed(tmp_path: Path) -> None:
    folder, library = tmp_path / "documents", tmp_path / "library.db"
    folder.mkdir()
    page = Image.open(DOCUMENTS[0]).convert("L")
    for number in range(8):  # distinct bytes, so none is skipped as already indexed
        variant = page.copy()
        variant.putpixel((number, 0), 0)
        variant.save(folder / f"page{number}.png")
    command = [sys.executable, "-m", "signver_torch", "index", str(folder), "--library", str(library), "--quiet"]
    indexer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    committed = 0
    while committed < 2:  # wait for two committed documents, then kill it mid-way through the next
        assert indexer.poll() is None, indexer.communicate()
        assert time.monotonic() < deadline, "indexing did not commit two documents in time"
        time.sleep(0.2)
        if library.exists():
            with contextlib.closing(sqlite3.connect(library, timeout=30)) as db:
                if db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'documents'").fetchone()[0]:
                    committed = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    indexer.send_signal(signal.SIGKILL)
    indexer.wait()
    with contextlib.closing(sqlite3.connect(library)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = db.execute("SELECT id, n_pages FROM documents").fetchall()
        assert 2 <= len(stored) < 8
        for document, pages in stored:  # every stored document is whole: its pages, marks and signatures
            assert db.execute("SELECT COUNT(*) FROM pages WHERE document_id = ?", (document,)).fetchone() == (pages,)
            assert db.execute("SELECT COUNT(*) FROM signatures s JOIN pages p ON s.page_id = p.id "
                              "WHERE p.document_id = ?", (document,)).fetchone()[0] >= 1
    rerun = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.count('"skipped": true') == len(stored)
    with contextlib.closing(sqlite3.connect(library)) as db:
        assert db.execute("SELECT COUNT(*) FROM documents").fetchone() == (8,)
