"""Write ``tests/data/galleries/v1.sqlite``: a gallery in the schema-1 layout (before per-person
models), embedded by the shipped extractor, for the migration tests.

    python tests/data/make_v1_gallery.py   # rerun whenever the shipped extractor changes

The schema-1 tables are written here with plain SQL, as the schema-1 code wrote them, so the file stays
a schema-1 gallery whatever the current ``Gallery`` writes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from signver_torch.extractor.api import MetricExtractor
from signver_torch.matcher.gallery import source_digest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ENROLLED_AT = "2026-12-02T09:17:22+0000"
#: person -> the fixture files enrolled as their references
PEOPLE = {
    "cedar-35": [f"tests/data/cedar/full_org/original_35_{n}.png" for n in (1, 2, 3)],
    "cedar-36": [f"tests/data/cedar/full_org/original_36_{n}.png" for n in (1, 2, 3)],
    "dutch-037": [f"tests/data/dutch/037/genuine/0{n}_037.png" for n in (1, 2, 3)],
}
SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE signatures (id INTEGER PRIMARY KEY, person TEXT NOT NULL, embedding BLOB NOT NULL, source_sha256 TEXT NOT NULL, source TEXT NOT NULL, enrolled_at TEXT NOT NULL);
CREATE INDEX signatures_person ON signatures (person);
"""


def main() -> None:
    extractor = MetricExtractor(device="cpu").load("default")
    target = HERE / "galleries" / "v1.sqlite"
    partial = target.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    with sqlite3.connect(partial) as db:
        db.executescript(SCHEMA_1)
        db.executemany("INSERT INTO meta VALUES (?, ?)",
                       [("schema", "1"), ("extractor_sha256", extractor.sha256), ("created_at", ENROLLED_AT)])
        for person, sources in PEOPLE.items():
            embeddings = extractor.extract([ROOT / source for source in sources])
            db.executemany(
                "INSERT INTO signatures (person, embedding, source_sha256, source, enrolled_at) VALUES (?, ?, ?, ?, ?)",
                [(person, embedding.tobytes(), source_digest(ROOT / source)[0], source, ENROLLED_AT)
                 for source, embedding in zip(sources, embeddings)])
    db.close()
    partial.replace(target)
    print(f"{target}: {sum(map(len, PEOPLE.values()))} references of {len(PEOPLE)} people, extractor {extractor.sha256[:12]}")


if __name__ == "__main__":
    main()
