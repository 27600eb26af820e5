"""Draw docs/studio.png: the Studio page after verifying the example contract against its references.

    python docs/studio_screenshot.py [--chromium /usr/bin/chromium]

Starts the Studio in this process on a free port (shipped checkpoints, a throw-away gallery and
library), drives the page in headless Chromium with Playwright and saves the screenshot.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from signver_torch.studio.app import StudioSettings
from signver_torch.studio.server import running

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "studio.png"))
    args = parser.parse_args()
    references = [str(path) for path in sorted((ROOT / "examples" / "references").glob("*.png"))]
    with tempfile.TemporaryDirectory() as folder, \
            running(StudioSettings(gallery=f"{folder}/gallery.db", library=f"{folder}/library.db")) as url, \
            sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.goto(url)
        page.wait_for_selector("#health:has-text('models loaded')")
        page.set_input_files("#verify-page", str(ROOT / "examples" / "contract.png"))
        page.set_input_files("#verify-references", references)
        page.click("#verify-submit")
        page.wait_for_selector("#verdict", timeout=120_000)
        page.screenshot(path=args.out)
        browser.close()
    print(args.out)


if __name__ == "__main__":
    main()
