"""The Ray engine (``distributed.py``) and the sharded library (``shard_library.py``, ``matcher/ann.py``): the same
documents, tags and embeddings as the single-process index on the fixture's real pages, bad pages reported per page,
``kill -9`` mid-job and a rerun give every document exactly once, and the approximate index keeps recall."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import DOCUMENTS, REPO_ROOT

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'signver-torch[ray]')")
pytest.importorskip("faiss", reason="faiss-cpu is not installed")
pytest.importorskip("pyarrow", reason="pyarrow is not installed")

FIXTURE_PAGES = sorted((REPO_ROOT / "tests" / "data" / "documents" / "images").glob("*.jpg"))


def _documents(folder: Path) -> list[Path]:
    """The fixture's real pages, plus a broken PDF and a truncated JPEG (bad documents the job must report and pass)."""
    folder.mkdir()
    for page in FIXTURE_PAGES:
        (folder / page.name).write_bytes(page.read_bytes())
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
    (folder / "truncated.jpg").write_bytes(FIXTURE_PAGES[0].read_bytes()[:300])
    return sorted(folder.iterdir())


@pytest.mark.slow
def test_ray_index_gives_the_single_process_library(tmp_path: Path) -> None:
    from signver_torch.distributed import done_sources, index
    from signver_torch.indexing import index_files
    from signver_torch.library import DocumentLibrary
    from signver_torch.pipeline import SignVer
    from signver_torch.shard_library import ShardLibrary

    files = _documents(tmp_path / "documents")
    results = index(files, tmp_path / "shards", actors=2, batch_size=3)
    errors = {Path(result.name).name: result.error for result in results if result.error}
    assert set(errors) == {"broken.pdf", "truncated.jpg"}, errors
    assert "not a readable PDF" in errors["broken.pdf"] and "truncated.jpg" in errors["truncated.jpg"]
    assert len(done_sources(tmp_path / "shards")) == len(files)  # the bad ones are done too: reported, not retried

    signver = SignVer()
    with DocumentLibrary(tmp_path / "single.db", signver.extractor.sha256) as single:
        index_files(signver, single, files)
        sharded = ShardLibrary(tmp_path / "shards", signver.extractor.sha256)
        assert {Path(e["source"]).name for e in sharded.errors} == {"broken.pdf", "truncated.jpg"}
        assert {d["name"] for d in sharded.documents()} == {d["name"] for d in single.documents()} == \
            {page.name for page in FIXTURE_PAGES}
        for tags in (["signed"], ["dated"], ["not:signed"], ["signed", "not:dated"]):
            assert {d["name"] for d in sharded.documents(tags)} == {d["name"] for d in single.documents(tags)}, tags
        by_name = {d["name"]: d["id"] for d in single.documents()}
        n_signatures = 0
        for listed in sharded.documents():
            ours, theirs = sharded.document(listed["id"]), single.document(by_name[listed["name"]])
            for page, expected in zip(ours["pages"], theirs["pages"], strict=True):
                assert page["tags"] == expected["tags"] and page["marks"] == expected["marks"]
                assert [s["box_xyxy"] for s in page["signatures"]] == [s["box_xyxy"] for s in expected["signatures"]]
                for signature, other in zip(page["signatures"], expected["signatures"]):
                    np.testing.assert_allclose(sharded.embedding(signature["id"]), single.embedding(other["id"]), atol=1e-5)
                    n_signatures += 1
        assert n_signatures >= len(FIXTURE_PAGES) - 2
        query = sharded.embedding(0)
        hits, expected = sharded.search(query, k=5), single.search(query, k=5)
        assert [hit.name for hit in hits] == [hit.name for hit in expected]
        np.testing.assert_allclose([hit.distance for hit in hits], [hit.distance for hit in expected], atol=1e-5)

    again = index(files, tmp_path / "shards", actors=1)  # a rerun reads nothing: every document is done
    assert all(result.skipped for result in again) and len(again) == len(files)


@pytest.mark.slow
def test_kill_9_mid_job_then_rerun_gives_every_document_exactly_once(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from signver_torch.distributed import shard_files
    from signver_torch.pipeline import SignVer
    from signver_torch.shard_library import ShardLibrary

    folder, library = tmp_path / "documents", tmp_path / "library"
    folder.mkdir()
    page = Image.open(DOCUMENTS[0]).convert("L")
    for number in range(16):  # distinct bytes: 16 documents, 4 shards of 4
        variant = page.copy()
        variant.putpixel((number, 0), 0)
        variant.save(folder / f"page{number:02d}.png")
    command = [sys.executable, "-m", "signver_torch", "index", str(folder), "--library", str(library), "--engine", "ray",
               "--quiet", "--json"]
    indexer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while not shard_files(library):  # kill once the first shard is whole, with the others still to come
        assert indexer.poll() is None, indexer.communicate()
        assert time.monotonic() < deadline, "no shard written in time"
        time.sleep(0.1)
    indexer.send_signal(signal.SIGKILL)
    indexer.wait()
    written = shard_files(library)
    assert 1 <= len(written) < 4
    for shard in written:  # whole shards only: each reads
        pq.read_table(shard)
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    lines = [json.loads(line) for line in rerun.stdout.splitlines()]
    assert len(lines) == 16 and sum(bool(line.get("skipped")) for line in lines) >= 4 * len(written) - 3
    sources = [source for shard in shard_files(library) for source in pq.read_table(shard, columns=["source"]).column(0).to_pylist()]
    assert sorted(sources) == sorted(str(path) for path in folder.iterdir())  # each document exactly once
    assert not list((library / "shards").glob(".tmp-*"))
    opened = ShardLibrary(library, SignVer().extractor.sha256)
    assert len(opened.documents()) == 16 and opened.search(opened.embedding(0), k=3)


def test_ivfpq_with_exact_reranking_keeps_recall_and_exact_similarities(tmp_path: Path) -> None:
    from signver_torch.matcher.ann import ApproximateIndex, default_parameters, synthetic_embeddings

    matrix, queries = synthetic_embeddings(2000, 10, 64)
    parameters = {**default_parameters(100_000), "nlist": 64, "m": 16, "sample": 20_000, "nprobe": 32, "rerank": 128}
    index = ApproximateIndex.train(matrix, parameters)
    reloaded = tmp_path / "index.faiss"
    index.save(str(reloaded))
    index = ApproximateIndex.load(str(reloaded), matrix, parameters)
    recalls = []
    for query in queries[:200]:
        exact = np.argsort(-(matrix @ query), kind="stable")[:10]
        order, similarity = index.search(query[None], 10)
        np.testing.assert_allclose(similarity, matrix[order] @ query, atol=1e-6)  # re-ranked by exact similarity
        assert np.all(np.diff(similarity) <= 0)
        recalls.append(len(set(order.tolist()) & set(exact.tolist())) / 10)
    assert np.mean(recalls) >= 0.95, np.mean(recalls)
    with pytest.raises(Exception, match="sub-vectors"):
        ApproximateIndex.train(matrix[:, :60], parameters)


def test_cli_ray_engine_refuses_an_sqlite_library_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from signver_torch.cli import main

    library = tmp_path / "documents.db"
    library.write_bytes(b"SQLite format 3\x00")
    assert main(["index", str(FIXTURE_PAGES[0]), "--library", str(library), "--engine", "ray", "--quiet"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and str(library) in error[0] and "is a file" in error[0], error


@pytest.fixture(scope="module")
def local_ray() -> object:
    """One local Ray of 2 CPUs for the verification tests (``verify_pairs`` uses a running Ray and leaves it up)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _cedar_pairs(folder: Path, relative_to: Path | None = None) -> Path:
    """Labelled claims on CEDAR writers 35 and 36 of the fixture (two references each; genuine and skilled-forgery
    queries) and one row whose query is missing; image paths relative to ``relative_to`` when given."""
    cedar = REPO_ROOT / "tests" / "data" / "cedar"
    folder.mkdir(exist_ok=True)

    def name(path: Path) -> str:
        if relative_to is None:
            return str(path)
        copy = relative_to / path.name
        copy.write_bytes(path.read_bytes())
        return copy.name

    rows = ["reference,query,label"]
    for writer in (35, 36):
        references = ";".join(name(cedar / "full_org" / f"original_{writer}_{n}.png") for n in (1, 2))
        rows += [f"{references},{name(cedar / 'full_org' / f'original_{writer}_{n}.png')},genuine" for n in (3, 4, 5)]
        rows += [f"{references},{name(cedar / 'full_forg' / f'forgeries_{writer}_{n}.png')},forged" for n in (1, 2)]
    rows.insert(4, f"{references},{folder / 'missing.png'},0")
    pairs = folder / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n")
    return pairs


def test_ray_verify_pairs_gives_the_single_process_verdicts(local_ray: object, tmp_path: Path) -> None:
    from signver_torch.claims import ClaimFailure, labelled_summaries, read_claims
    from signver_torch.errors import CheckpointError
    from signver_torch.distributed import verify_pairs
    from signver_torch.pipeline import SignVer

    pairs = _cedar_pairs(tmp_path)
    claims = read_claims(pairs)
    ours = list(verify_pairs(pairs, actors=2, batch_size=3))  # 4 batches over 2 actors: outcomes come back unordered
    theirs = list(SignVer().verify_many(claims))
    assert len(ours) == len(claims) == 11
    for got, expected in zip(ours, theirs, strict=True):
        got, expected = got.as_dict(), expected.as_dict()
        assert got.keys() == expected.keys() and got["query"] == expected["query"]
        if "error" in expected:
            assert got == expected
        else:
            assert got["match"] == expected["match"] and got["rule"] == expected["rule"]
            assert got["score"] == pytest.approx(expected["score"], abs=1e-5)
            assert got["distance"] == pytest.approx(expected["distance"], abs=1e-5)
    [failure] = [outcome for outcome in ours if isinstance(outcome, ClaimFailure)]
    assert failure.query == str(tmp_path / "missing.png") and "missing.png: file not found" in failure.error
    [summary] = labelled_summaries(zip(claims, ours))
    [expected] = labelled_summaries(zip(claims, theirs))
    assert summary["n_genuine"] == 6 and summary["n_forged"] == 4
    assert summary == pytest.approx(expected, abs=1e-5)
    nothing = verify_pairs([])
    assert list(nothing) == [] and callable(nothing.close)
    with pytest.raises(CheckpointError, match="missing.safetensors"):  # checked before any actor starts
        verify_pairs(pairs, extractor=str(tmp_path / "missing.safetensors"))


def test_cli_verify_pairs_on_the_ray_engine(local_ray: object, signver_cli, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    pairs = _cedar_pairs(images, relative_to=images)
    result = signver_cli("verify", "--pairs", str(pairs.relative_to(tmp_path)), "--engine", "ray", "--actors", "2",
                         "--json", "--quiet", "--no-clean", cwd=tmp_path)
    assert result.returncode == 1  # one row failed; the others were decided
    *lines, last = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 11 and "missing.png: file not found" in lines[3]["error"]
    assert all("error" not in line for line in lines[:3] + lines[4:])
    assert lines[0]["query"] == "images/original_35_3.png"  # in claim order, named as the file names them
    assert lines[0]["references"] == ["images/original_35_1.png", "images/original_35_2.png"]
    assert lines[-1]["query"] == "images/forgeries_36_2.png"
    assert last["summary"]["n_labelled"] == 10 and 0 <= last["summary"]["eer"] <= 0.5
    assert result.stderr.strip().splitlines()[-1].startswith("signver: error: 1 of 11 queries failed")
    refused = signver_cli("verify", "--query", "q.png", "--reference", "r.png", "--engine", "ray")
    assert refused.returncode == 1 and refused.stderr.strip() == "signver: error: --engine ray verifies the claims of a --pairs file"


def test_a_library_without_shards_takes_the_extractor_given_now(tmp_path: Path) -> None:
    """A first job that failed before its first shard (say, a checksum-valid card the actors could not use) must not
    lock the empty library to that card; once a shard holds embeddings, another extractor is refused."""
    import pyarrow.parquet as pq

    from signver_torch.distributed import MANIFEST, SHARDS, open_manifest, schema
    from signver_torch.errors import CheckpointError

    library = tmp_path / "library"
    first, second = "a" * 64, "b" * 64
    open_manifest(library, first)
    assert open_manifest(library, second)["extractor_sha256"] == second
    assert json.loads((library / MANIFEST).read_text())["extractor_sha256"] == second
    pq.write_table(schema().empty_table(), library / SHARDS / "part-0.parquet")
    with pytest.raises(CheckpointError, match="built with extractor sha256 bbbbbbbbbbbb…, but the extractor loaded now is aaaaaaaaaaaa…"):
        open_manifest(library, first)
    assert json.loads((library / MANIFEST).read_text())["extractor_sha256"] == second
