"""``signver index`` (``cli/library.py``): a line per document, a failure for a bad one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from tests.conftest import EXAMPLES  # noqa: E402


def test_cli_index_reports_each_document_and_fails_on_a_bad_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from signver_torch.cli import main

    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "contract.png").write_bytes((EXAMPLES / "contract.png").read_bytes())
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
    (folder / "notes.txt").write_text("not a document: not picked up")
    assert main(["index", str(folder), "--library", str(tmp_path / "lib.db"), "--quiet", "--json"]) == 1
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [Path(line["name"]).name for line in lines] == ["broken.pdf", "contract.png"]
    assert "not a readable PDF" in lines[0]["error"] and lines[1]["n_signatures"] >= 1
    assert "1 of 2 documents could not be indexed" in captured.err
    with pytest.raises(SystemExit):  # --library is required
        main(["index", str(folder)])
