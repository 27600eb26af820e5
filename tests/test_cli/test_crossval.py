"""``signver crossval``'s one-line error contract (``cli/crossval.py``)."""

from __future__ import annotations

from pathlib import Path

from cli_runner import signver_process


def test_report_command_prints_json_and_names_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "not.safetensors"
    bad.write_bytes(b"nonsense")
    done = signver_process("crossval", "report", str(bad))
    assert done.returncode == 1 and done.stderr.startswith("signver: error:")
    assert str(bad) in done.stderr and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
