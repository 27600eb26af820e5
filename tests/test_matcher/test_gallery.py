"""The enrolled gallery (``matcher/gallery.py``) on real CEDAR signatures: claims and identification, search
backends, crash safety, errors."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from signver_torch.data.signatures import discover_signatures, writer_split
from signver_torch.errors import CheckpointError, SignVerError
from signver_torch.matcher.gallery import Gallery, GalleryError, SearchIndex
from signver_torch.pipeline import SignVer


#: The fixture's held-out CEDAR writers (5 genuine, 5 forged each); the full data has 33-40 (24 + 24).
WRITERS = ["35", "36", "37", "39"]
FULL_WRITERS = [str(w) for w in range(33, 41)]


def by_writer(cedar: Path, writers: list[str]) -> dict[str, dict[str, list[Path]]]:
    [records] = writer_split(discover_signatures(cedar), ",".join(writers))
    found: dict[str, dict[str, list[Path]]] = {w: {"genuine": [], "forged": []} for w in writers}
    for record in records:
        found[record.writer]["forged" if record.forged else "genuine"].append(record.path)
    return found


def enrol_all(signver: SignVer, path: Path, cedar: dict, references: int) -> Path:
    for writer, files in cedar.items():
        assert signver.enroll(path, f"writer-{writer}", files["genuine"][:references]) == references
    return path


@pytest.fixture(scope="module")
def signver() -> SignVer:
    return SignVer(clean=False, device="cpu")  # the extractor alone: gallery logic is the subject here


@pytest.fixture(scope="module")
def cedar(small_data: Path) -> dict[str, dict[str, list[Path]]]:
    return by_writer(small_data / "cedar", WRITERS)


@pytest.fixture(scope="module")
def enrolled(signver: SignVer, cedar: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return enrol_all(signver, tmp_path_factory.mktemp("gallery") / "people.db", cedar, 3)


def claim_rates(signver: SignVer, gallery: Path, cedar: dict, genuine: slice, forged: slice) -> tuple[float, float]:
    """Share of genuine claims accepted and of skilled-forgery claims rejected."""
    accepted = [signver.verify_claim(gallery, f"writer-{w}", q).match for w in cedar for q in cedar[w]["genuine"][genuine]]
    rejected = [not signver.verify_claim(gallery, f"writer-{w}", q).match for w in cedar for q in cedar[w]["forged"][forged]]
    return sum(accepted) / len(accepted), sum(rejected) / len(rejected)


def test_claims_accept_genuine_and_reject_skilled_forgeries(signver: SignVer, enrolled: Path, cedar: dict) -> None:
    accepted, rejected = claim_rates(signver, enrolled, cedar, slice(3, 5), slice(0, 5))
    assert accepted >= 0.75 and rejected >= 0.75, (accepted, rejected)


def test_identify_finds_the_writer(signver: SignVer, enrolled: Path, cedar: dict) -> None:
    hits = 0
    for writer in WRITERS:
        for query in cedar[writer]["genuine"][3:5]:
            matches = signver.identify(enrolled, query, k=3)
            assert len(matches) == 3 and matches[0].distance <= matches[1].distance <= matches[2].distance
            hits += matches[0].person == f"writer-{writer}"
    assert hits >= 7  # of 8


def test_claims_and_identification_over_the_full_held_out_writers(
    signver: SignVer, shared_data: Path, tmp_path: Path
) -> None:
    cedar = by_writer(shared_data / "cedar", FULL_WRITERS)
    gallery = enrol_all(signver, tmp_path / "people.db", cedar, 5)
    accepted, rejected = claim_rates(signver, gallery, cedar, slice(10, 14), slice(0, 4))
    assert accepted >= 0.75 and rejected >= 0.7, (accepted, rejected)
    hits = sum(signver.identify(gallery, q, k=1)[0].person == f"writer-{w}" for w in cedar for q in cedar[w]["genuine"][20:22])
    assert hits >= 14  # of 16


def test_faiss_and_exact_search_agree() -> None:
    pytest.importorskip("faiss")
    generator = torch.Generator().manual_seed(0)
    matrix = torch.nn.functional.normalize(torch.randn(5000, 256, generator=generator), dim=1).numpy()
    query = torch.nn.functional.normalize(torch.randn(1, 256, generator=generator), dim=1).numpy()
    exact_order, exact_score = SearchIndex(matrix, "torch").search(query, 10)
    faiss_order, faiss_score = SearchIndex(matrix, "faiss").search(query, 10)
    assert exact_order.tolist() == faiss_order.tolist()
    np.testing.assert_allclose(exact_score, faiss_score, atol=1e-5)


def test_gallery_survives_a_process_killed_mid_enrolment(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    with Gallery(path, "sha-test") as gallery:
        gallery.add("alice", np.eye(3, 256, dtype=np.float32), [(f"{i:064x}", f"a{i}.png") for i in range(3)])
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from signver_torch.matcher.gallery import Gallery

        class DiesHalfWay:  # sources whose iteration kills the process inside the insert transaction
            def __len__(self): return 100
            def __iter__(self):
                for i in range(100):
                    if i == 40:
                        os.kill(os.getpid(), signal.SIGKILL)
                    yield (f"{{i:064x}}", f"b{{i}}.png")

        Gallery({str(path)!r}, "sha-test").add("bob", np.ones((100, 256), np.float32), DiesHalfWay())
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -9  # really killed, not finished
    with Gallery(path, "sha-test", create=False) as gallery:
        assert gallery.people() == [("alice", 3)]
        assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_gallery_errors_are_clear(signver: SignVer, enrolled: Path, tmp_path: Path, cedar: dict) -> None:
    query = cedar["35"]["genuine"][0]
    with pytest.raises(CheckpointError, match="different models"):
        Gallery(enrolled, "0" * 64)
    with pytest.raises(GalleryError, match="no enrolled person 'nobody'"):
        signver.verify_claim(enrolled, "nobody", query)
    with pytest.raises(GalleryError, match="no such gallery"):
        signver.identify(tmp_path / "missing.db", query)
    empty = tmp_path / "empty.db"
    Gallery(empty, signver.extractor.sha256).close()
    with pytest.raises(GalleryError, match="empty"):
        signver.identify(empty, query)
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GalleryError, match="corrupt.db"):
        signver.identify(corrupt, query)
    with pytest.raises(GalleryError, match="no enrolled person"):
        Gallery(empty, signver.extractor.sha256).remove("nobody")


def test_enrolment_of_a_bad_image_writes_nothing(signver: SignVer, tmp_path: Path, cedar: dict) -> None:
    path = tmp_path / "g.db"
    signver.enroll(path, "alice", cedar["36"]["genuine"][:2])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(SignVerError, match="broken.png"):
        signver.enroll(path, "alice", [cedar["36"]["genuine"][3], broken])
    with signver.gallery(path) as gallery:
        assert gallery.people() == [("alice", 2)]
