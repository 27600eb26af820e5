"""SignVer Studio's API through FastAPI's test client, on the example contracts and real signatures.

The shipped checkpoints answer every call (one app, models loaded once for the module); the examples
were made from CEDAR writer 39, whom no shipped model trained on.
"""

from __future__ import annotations

import io
import sqlite3
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from signver_torch.library import DocumentLibrary  # noqa: E402
from signver_torch.studio.app import StudioError, StudioSettings, create_app  # noqa: E402

from tests.conftest import EXAMPLES, REFERENCES, REPO_ROOT  # noqa: E402
from tests.test_io import two_page  # noqa: E402


def upload(field: str, path: Path, name: str | None = None) -> tuple[str, tuple[str, bytes, str]]:
    return field, (name or path.name, path.read_bytes(), "image/png")


def references() -> list:
    return [upload("references", path) for path in REFERENCES]


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("studio")
    app = create_app(StudioSettings(gallery=str(folder / "gallery.db"), library=str(folder / "library.db")))
    with TestClient(app, base_url="http://127.0.0.1") as client:  # a loopback server answers loopback hosts only
        yield client, app.state.studio


def wait_for(client: TestClient, job: dict) -> dict:
    deadline = time.monotonic() + 120
    while job["state"] != "done":
        assert time.monotonic() < deadline, f"indexing job did not finish: {job}"
        time.sleep(0.2)
        job = client.get(f"/api/library/jobs/{job['id']}").json()
    return job


def test_health_names_the_loaded_models(studio) -> None:
    client, state = studio
    health = client.get("/api/health").json()
    assert health["status"] == "ok"
    assert {kind: entry["sha256"] for kind, entry in health["models"].items()} == {
        kind: model.sha256 for kind, model in state.models.items()}
    assert len(health["models"]["extractor"]["sha256"]) == 64
    assert health["threshold"] == pytest.approx(state.signver.extractor.threshold)


def test_verify_document_genuine_and_forged_contracts(studio) -> None:
    client, state = studio
    genuine = client.post("/api/verify-document", files=[upload("page", EXAMPLES / "contract.png"), *references()])
    forged = client.post("/api/verify-document", files=[upload("page", EXAMPLES / "contract_forged.png"), *references()])
    assert genuine.status_code == forged.status_code == 200
    genuine, forged = genuine.json(), forged.json()
    assert genuine["match"] is True and genuine["verdict"] == "signed by the claimed person"
    assert forged["match"] is False and forged["verdict"] == "not signed by the claimed person"
    # the same figures as the library's own call (the CLI's --json)
    direct = state.signver.verify_document(EXAMPLES / "contract.png", references=REFERENCES).as_dict()
    assert [s["distance"] for s in genuine["signatures"]] == [s["distance"] for s in direct["signatures"]]
    for signature in genuine["signatures"] + forged["signatures"]:
        assert set(signature) >= {"box_xyxy", "score", "distance", "threshold", "match", "rule", "page"}
        assert signature["match"] == (signature["score"] <= signature["threshold"])


def test_verify_document_with_images_for_the_page(studio) -> None:
    client, _ = studio
    answer = client.post("/api/verify-document?images=true", files=[upload("page", EXAMPLES / "contract.png"), *references()]).json()
    assert answer["previews"][0]["size"] == list(Image.open(EXAMPLES / "contract.png").size)
    assert answer["previews"][0]["png"].startswith("data:image/png;base64,")
    assert all(s["crop_png"].startswith("data:image/png") and s["cleaned_png"].startswith("data:image/png")
               for s in answer["signatures"])


def test_bad_requests_answer_4xx_json(studio) -> None:
    client, state = studio
    cases = [
        (client.post("/api/verify-document", files=[("page", ("scan.png", b"not an image", "image/png")), *references()]),
         400, "scan.png: not an image"),
        (client.post("/api/verify-document", files=[("page", ("empty.png", b"", "image/png")), *references()]), 400, "empty"),
        (client.post("/api/verify-document", files=[upload("page", EXAMPLES / "contract.png")]), 400, "either references"),
        (client.post("/api/verify-document", data={"person": "x"}, files=[upload("page", EXAMPLES / "contract.png"), *references()]),
         400, "not both"),
        (client.post("/api/verify-document", files=references()), 422, "page"),
        (client.post("/api/verify", data={"person": "nobody-ever"}, files=[upload("query", REFERENCES[0])]), 404,
         ("no such gallery", "no enrolled person 'nobody-ever'")),  # before or after someone was enrolled
        (client.get("/api/library/documents/987654"), 404, "no document 987654"),
        (client.get("/api/library/jobs/nope"), 404, "no indexing job"),
        (client.post("/api/library/search"), 400, "search by person"),
        (client.get("/api/library/documents?tag=stamped"), 400, "unknown tag"),
    ]
    for response, status, text in cases:
        assert response.status_code == status, response.text
        assert any(option in response.json()["error"] for option in ((text,) if isinstance(text, str) else text))
        assert "Traceback" not in response.text
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state.settings, "max_upload_mb", 0.001)
        too_big = client.post("/api/verify-document", files=[upload("page", EXAMPLES / "contract.png"), *references()])
    assert too_big.status_code == 413 and "upload limit" in too_big.json()["error"]


def test_enrol_verify_identify_forget(studio) -> None:
    client, _ = studio
    enrolled = client.post("/api/enroll", data={"person": "writer39"},
                           files=[upload("signatures", path, f"../../{path.name}") for path in REFERENCES])
    assert enrolled.status_code == 200 and enrolled.json() == {"person": "writer39", "added": 3, "n_references": 3}
    detail = client.get("/api/people/writer39").json()
    assert [entry["source"] for entry in detail["signatures"]] == [path.name for path in REFERENCES]  # names, never paths
    assert {"person": "writer39", "n_references": 3} in client.get("/api/people").json()["people"]

    document = client.post("/api/verify-document", data={"person": "writer39"}, files=[upload("page", EXAMPLES / "contract.png")])
    assert document.json()["match"] is True and document.json()["claimed"] == "writer39"
    forged = client.post("/api/verify-document", data={"person": "writer39"}, files=[upload("page", EXAMPLES / "contract_forged.png")])
    assert forged.json()["match"] is False
    verdict = client.post("/api/verify", data={"person": "writer39"}, files=[upload("query", REFERENCES[0])]).json()
    assert verdict["match"] is True and verdict["n_references"] == 3
    identified = client.post("/api/identify", files=[upload("signature", REFERENCES[1])]).json()
    assert identified["matches"][0]["person"] == "writer39"

    # all or nothing: one unreadable file and nothing is added
    bad = client.post("/api/enroll", data={"person": "writer39"},
                      files=[upload("signatures", REFERENCES[0]), ("signatures", ("broken.png", b"\x89PNG broken", "image/png"))])
    assert bad.status_code == 400 and "broken.png" in bad.json()["error"]
    assert client.get("/api/people/writer39").json()["signatures"].__len__() == 3

    removed = client.delete("/api/people/writer39")
    assert removed.json() == {"person": "writer39", "removed": 3}
    assert client.get("/api/people/writer39").status_code == 404
    assert client.delete("/api/people/writer39").status_code == 404


def test_writes_need_the_token_when_the_server_has_one(studio) -> None:
    client, state = studio
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state.settings, "token", "s3cret")
        files = [upload("signatures", REFERENCES[0])]
        refused = client.post("/api/enroll", data={"person": "guarded"}, files=files)
        wrong = client.post("/api/enroll", data={"person": "guarded"}, files=files, headers={"Authorization": "Bearer nope"})
        allowed = client.post("/api/enroll", data={"person": "guarded"}, files=files, headers={"Authorization": "Bearer s3cret"})
        reads = client.get("/api/people")
        forgot = client.delete("/api/people/guarded", headers={"X-SignVer-Token": "s3cret"})
    assert refused.status_code == wrong.status_code == 401 and "token" in refused.json()["error"]
    assert allowed.status_code == 200 and reads.status_code == 200 and forgot.status_code == 200


def test_binding_beyond_this_machine_needs_a_token() -> None:
    with pytest.raises(StudioError, match="give --token"):
        StudioSettings(host="0.0.0.0").check()
    StudioSettings(host="0.0.0.0", token="t").check()


def test_detect_tags_every_page_of_a_multipage_tiff(studio) -> None:
    client, _ = studio
    answer = client.post("/api/detect", files=[("page", ("both.tiff", two_page("TIFF"), "image/tiff"))]).json()
    assert [page["page"] for page in answer["pages"]] == [1, 2]
    assert all(page["tags"]["signed"] and page["boxes"]["signature"] for page in answer["pages"])


def test_library_index_filter_search_and_images(studio) -> None:
    client, state = studio
    job = client.post("/api/library/documents", files=[
        upload("documents", EXAMPLES / "contract.png"), upload("documents", EXAMPLES / "contract_forged.png"),
        ("documents", ("both.pdf", two_page("PDF"), "application/pdf")),
        ("documents", ("junk.pdf", b"%PDF-1.4 junk", "application/pdf"))])
    assert job.status_code == 202
    results = wait_for(client, job.json())["results"]
    assert [bool(result.get("error")) for result in results] == [False, False, False, True]
    assert "junk.pdf: not a readable PDF" in results[3]["error"] and results[2]["n_pages"] == 2
    again = wait_for(client, client.post("/api/library/documents", files=[upload("documents", EXAMPLES / "contract.png")]).json())
    assert again["results"][0]["skipped"] is True

    documents = client.get("/api/library/documents").json()["documents"]
    assert {entry["name"] for entry in documents} == {"contract.png", "contract_forged.png", "both.pdf"}
    signed = client.get("/api/library/documents?tag=signed").json()["documents"]
    unsigned = client.get("/api/library/documents?tag=not:signed").json()["documents"]
    assert len(signed) == 3 and unsigned == []
    initialled = {entry["name"] for entry in client.get("/api/library/documents?tag=initialled").json()["documents"]}
    assert initialled == {entry["name"] for entry in documents if "initialled" in entry["tags"]}

    hits = client.post("/api/library/search", files=[upload("signature", REFERENCES[0])]).json()["documents"]
    by_name = {hit["name"]: hit for hit in hits}
    assert by_name["contract.png"]["match"] is True and by_name["contract_forged.png"]["match"] is False
    assert hits[0]["name"] in ("contract.png", "both.pdf")  # the genuine signature (the PDF holds the same page)
    assert [hit["distance"] for hit in hits] == sorted(hit["distance"] for hit in hits)

    detail = client.get(f"/api/library/documents/{by_name['contract.png']['document_id']}").json()
    page = detail["pages"][0]
    thumbnail = client.get(f"/api/library/pages/{page['id']}/thumbnail")
    crop = client.get(f"/api/library/signatures/{page['signatures'][0]['id']}/cleaned")
    assert thumbnail.headers["content-type"] == crop.headers["content-type"] == "image/png"
    assert max(Image.open(io.BytesIO(thumbnail.content)).size) == 320 and Image.open(io.BytesIO(crop.content)).mode == "L"
    assert client.get(f"/api/library/signatures/{page['signatures'][0]['id']}/other").status_code == 400

    references_embedded, _ = state.signver.embed(REFERENCES)
    exact, approximate = (DocumentLibrary(state.settings.library, state.signver.extractor.sha256, create=False, backend=backend)
                          for backend in ("torch", "faiss"))
    with exact, approximate:
        assert [(h.document_id, h.signature_id, round(h.distance, 5)) for h in exact.search(references_embedded)] == \
            [(h.document_id, h.signature_id, round(h.distance, 5)) for h in approximate.search(references_embedded)]

    with sqlite3.connect(state.settings.library) as db:  # what is stored is complete and consistent
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM documents").fetchone() == (3,)
        assert db.execute("SELECT COUNT(*) FROM pages").fetchone() == (4,)


def test_the_page_and_openapi_are_served_offline(studio) -> None:
    client, _ = studio
    page = client.get("/")
    assert page.status_code == 200 and "SignVer Studio" in page.text and "/static/studio.js" in page.text
    paths = client.get("/openapi.json").json()["paths"]  # the schema; FastAPI's /docs page itself needs a CDN
    assert {"/api/verify-document", "/api/enroll", "/api/library/search", "/api/people/{person}"} <= set(paths)
    static = REPO_ROOT / "signver_torch" / "studio" / "static"
    for asset in static.iterdir():  # nothing fetched from a CDN or any other host
        text = asset.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, asset.name
        assert client.get(f"/static/{asset.name}").status_code == 200


def test_requests_from_other_sites_and_oversized_bodies_are_refused(studio) -> None:
    client, state = studio
    rebound = client.get("/api/health", headers={"Host": "evil.example"})
    assert rebound.status_code == 421 and "this machine only" in rebound.json()["error"]
    files = [upload("signatures", REFERENCES[0])]
    forged = client.post("/api/enroll", data={"person": "planted"}, files=files, headers={"Origin": "http://evil.example"})
    assert forged.status_code == 403 and "another site" in forged.json()["error"]
    own_page = client.post("/api/enroll", data={"person": "own-page"}, files=files, headers={"Origin": "http://127.0.0.1"})
    assert own_page.status_code == 200
    assert all(entry["person"] != "planted" for entry in client.get("/api/people").json()["people"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state.settings, "max_request_mb", 0.01)
        large = client.post("/api/verify-document", files=[upload("page", EXAMPLES / "contract.png"), *references()])
    assert large.status_code == 413 and "request body" in large.json()["error"]
    assert client.delete("/api/people/own-page").status_code == 200
    slash = client.post("/api/enroll", data={"person": "team/alice"}, files=files)
    assert slash.status_code == 200 and client.get("/api/people/team/alice").json()["person"] == "team/alice"
    assert client.delete("/api/people/team/alice").json()["removed"] == 1


def test_a_document_added_meanwhile_is_skipped_not_an_error(studio, tmp_path: Path) -> None:
    from signver_torch.indexing import index_document
    from signver_torch.library import AlreadyIndexedError, LibraryError, PageRecord

    _, state = studio
    path = tmp_path / "race.db"
    data = (EXAMPLES / "contract.png").read_bytes()
    with DocumentLibrary(path, state.signver.extractor.sha256) as first, DocumentLibrary(path, state.signver.extractor.sha256) as second:
        reading = PageRecord.of(state.signver.read_page(EXAMPLES / "contract.png"))
        digest = __import__("hashlib").sha256(data).hexdigest()
        stored = first.add("contract.png", digest, [reading])
        with pytest.raises(AlreadyIndexedError) as raised:  # the other connection finds it inside its write transaction
            second.add("contract.png", digest, [reading])
        assert raised.value.document_id == stored
        assert index_document(state.signver, second, "contract.png", data).skipped
    with pytest.raises(LibraryError, match="cannot open the library"):
        DocumentLibrary(tmp_path / "no" / "such" / "folder.db", state.signver.extractor.sha256)
