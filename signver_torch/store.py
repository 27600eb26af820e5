"""The SQLite file underneath a gallery and a document library.

Both hold embeddings of one extractor checkpoint, whose sha256 the file's ``meta`` table records; a
store refuses another extractor (embeddings of two models live in different spaces). Writes are
explicit transactions in WAL mode with ``synchronous=FULL``: a write lands whole or not at all, also
when the process is killed half-way.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, TypeVar

from signver_torch.errors import CheckpointError, SignVerError


T = TypeVar("T")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class EmbeddingStore:
    """An SQLite file of one extractor's embeddings, with a schema number and migrations.

    Subclasses declare ``kind`` (for messages), ``error`` (their :class:`SignVerError`), ``missing_error``
    (raised for a file that does not exist), ``missing_hint``,
    ``schema_version`` and ``readable_schemas``, and create their tables in :meth:`_create_tables`.
    """

    kind: ClassVar[str] = "store"
    error: ClassVar[type[SignVerError]] = SignVerError
    missing_error: ClassVar[type[SignVerError]] = SignVerError  # a file that is not there: nothing stored yet
    missing_hint: ClassVar[str] = ""
    schema_version: ClassVar[str] = "1"
    readable_schemas: ClassVar[tuple[str, ...]] = ("1",)

    def __init__(self, path: str | os.PathLike, extractor_sha256: str, *, create: bool = True) -> None:
        self.path = Path(path)
        self.extractor_sha256 = extractor_sha256
        if not create and not self.path.is_file():
            raise self.missing_error(f"{self.path}: no such {self.kind}{self.missing_hint}")
        if self.path.is_dir():
            raise self.error(f"{self.path}: is a directory, not a {self.kind} file")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)  # explicit transactions
        except sqlite3.Error as error:  # e.g. its folder does not exist
            raise self.error(f"{self.path}: cannot open the {self.kind} ({error})") from error
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=30000")  # other connections' writes are waited for, not errors
            with self._transaction():
                self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
                if meta and meta.get("extractor_sha256") != extractor_sha256:
                    raise CheckpointError(
                        f"{self.path}: {self.kind} was built with extractor sha256 {str(meta.get('extractor_sha256'))[:12]}…, "
                        f"but the extractor loaded now is {extractor_sha256[:12]}… (embeddings of different models cannot "
                        "be compared; rebuild it with this extractor or load the one it was built with)")
                if meta.get("schema", self.schema_version) not in self.readable_schemas:
                    raise self.error(f"{self.path}: {self.kind} schema {meta['schema']} was written by a newer signver-torch "
                                     f"(this one reads schemas {', '.join(self.readable_schemas)}); upgrade to read it")
                self._create_tables()
                if not meta:
                    self._db.executemany("INSERT INTO meta VALUES (?, ?)", [
                        ("schema", self.schema_version), ("extractor_sha256", extractor_sha256), ("created_at", now())])
                elif meta.get("schema") != self.schema_version:
                    self._migrate(meta["schema"])
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise self.error(f"{self.path}: not a readable {self.kind} ({error})") from error
        except SignVerError:
            self._db.close()
            raise

    def _create_tables(self) -> None:
        raise NotImplementedError

    def _migrate(self, schema: str) -> None:
        """Bring a file of an older readable ``schema`` up to date, inside the opening transaction."""
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (self.schema_version,))

    @property
    def schema(self) -> str:
        return str(self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "EmbeddingStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """All or nothing: commit when the block ends, roll back when it raises."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _cached(self, build: Callable[[], T]) -> T:
        """``build()``'s result (a search index), built again only after the file changed through any connection."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0], self._db.total_changes
        if getattr(self, "_cache_version", None) != version:
            self._cache = build()
            self._cache_version = version
        return self._cache
