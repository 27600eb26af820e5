"""``signver serve`` (``cli/serve.py``) refuses to bind beyond this machine without a token."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")


def test_cli_serve_refuses_an_open_bind_without_a_token(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from signver_torch.cli import main

    monkeypatch.delenv("SIGNVER_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("signver: error: binding to 0.0.0.0") and "--token" in error[0]
