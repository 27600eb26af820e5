"""SignVer Studio on a real socket: concurrent clients, the page in headless Chromium, two worker processes.

The browser test drives Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it)
with Playwright's Python package; ``$SIGNVER_CHROMIUM`` names another executable. Without a Chromium it
is skipped with that reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed")
from signver_torch.studio.app import StudioSettings  # noqa: E402
from signver_torch.studio.server import running, verify_documents_under_load  # noqa: E402

from tests.conftest import DOCUMENTS, REFERENCES  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("served")
    with running(StudioSettings(gallery=str(folder / "gallery.db"), library=str(folder / "library.db"))) as url:
        yield url


def test_concurrent_clients_get_the_verdicts_of_one_at_a_time(server: str) -> None:
    alone = verify_documents_under_load(server, DOCUMENTS, REFERENCES, clients=1, calls=len(DOCUMENTS))
    assert alone.errors == []
    expected = {index: verdict for index, *verdict in alone.verdicts[0]}
    assert expected[0][0] is True and expected[1][0] is False  # genuine contract matches, the forged one does not
    loaded = verify_documents_under_load(server, DOCUMENTS, REFERENCES, clients=4, calls=3)
    assert loaded.errors == [] and len(loaded.latencies) == 12
    for client in loaded.verdicts:
        for index, *verdict in client:
            assert verdict == expected[index]


def chromium() -> str:
    executable = os.environ.get("SIGNVER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("needs a Chromium executable (apt-get install chromium, or set SIGNVER_CHROMIUM)")
    return executable


@pytest.mark.browser
def test_the_page_verifies_the_example_contracts_in_a_real_browser(server: str, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="needs Playwright's Python package")
    executable = chromium()
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(server)
            page.wait_for_selector("#health:has-text('models loaded')")
            for document, verdict, colour in ((DOCUMENTS[0], "signed by the claimed person", "match"),
                                              (DOCUMENTS[1], "not signed by the claimed person", "nomatch")):
                page.set_input_files("#verify-page", str(document))
                page.set_input_files("#verify-references", [str(path) for path in REFERENCES])
                page.click("#verify-submit")
                page.wait_for_selector(f"#verdict.{colour}", timeout=120_000)
                assert page.inner_text("#verdict") == verdict
                assert page.locator(f".pageview .box.{colour}").count() >= 1
                crops = page.locator(".signature img")
                assert crops.count() >= 2 and all(
                    crops.nth(i).evaluate("image => image.complete && image.naturalWidth > 0") for i in range(crops.count()))
            page.screenshot(path=str(tmp_path / "studio.png"))
        finally:
            browser.close()
    assert Image.open(tmp_path / "studio.png").size == (1400, 900)


def test_serve_with_two_workers_answers_from_each_process(tmp_path: Path) -> None:
    import socket

    import httpx

    with socket.socket() as probe:  # a free port for the subprocess
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {**os.environ, "SIGNVER_TOKEN": "t0ken"}
    server = subprocess.Popen([sys.executable, "-m", "signver_torch", "serve", "--workers", "2", "--port", str(port),
                               "--gallery", str(tmp_path / "gallery.db")], env=environment,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.communicate()[0][-2000:]
            assert time.monotonic() < deadline, "the workers did not start in time"
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        assert health.json()["writes_need_token"] is True  # the token reached the workers through the environment
        references = [("signatures", (path.name, path.read_bytes(), "image/png")) for path in REFERENCES]
        refused = httpx.post(f"http://127.0.0.1:{port}/api/enroll", data={"person": "w39"}, files=references, timeout=120)
        enrolled = httpx.post(f"http://127.0.0.1:{port}/api/enroll", data={"person": "w39"}, files=references,
                              headers={"Authorization": "Bearer t0ken"}, timeout=120)
        assert refused.status_code == 401 and enrolled.status_code == 200
        answers = [httpx.post(f"http://127.0.0.1:{port}/api/verify-document", data={"person": "w39"}, timeout=120,
                              files=[("page", (document.name, document.read_bytes(), "image/png"))]).json()
                   for document in DOCUMENTS * 2]
        assert [answer["match"] for answer in answers] == [True, False, True, False]
    finally:
        server.send_signal(signal.SIGINT)
        try:
            output = server.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0]
    assert output.count('"event": "models_loaded"') == 2  # one model load per worker process
