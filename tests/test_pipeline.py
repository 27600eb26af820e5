"""The main job end to end on the shipped example: page in, verdict and report picture out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

from signver_torch.pipeline import SignVer

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
REFERENCES = sorted((EXAMPLES / "references").glob("*.png"))


def test_example_page_is_signed_by_its_writer_and_the_forgery_is_not() -> None:
    signver = SignVer(device="cpu")
    genuine = signver.verify_document(EXAMPLES / "contract.png", references=REFERENCES)
    forged = signver.verify_document(EXAMPLES / "contract_forged.png", references=REFERENCES)
    assert len(genuine.signatures) == 1 and len(forged.signatures) == 1  # each page has one signature (and a dated line)
    best_genuine = min(s.distance for s in genuine.signatures)
    best_forged = min(s.distance for s in forged.signatures)
    assert best_genuine < best_forged
    assert genuine.verdict == "signed by the claimed person"
    [first] = genuine.signatures[:1]
    assert first.cleaned.shape == first.crop.shape and first.threshold == signver.extractor.threshold


def test_verify_document_command_prints_a_verdict_and_draws_the_report(tmp_path: Path) -> None:
    report = tmp_path / "report.png"
    result = subprocess.run(
        [sys.executable, "-m", "signver_torch", "verify-document", str(EXAMPLES / "contract.png"),
         "--reference", *map(str, REFERENCES), "--out", str(report), "--json"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["verdict"] in ("signed by the claimed person", "not signed by the claimed person")
    assert verdict["signatures"] and {"box_xyxy", "distance", "threshold", "match"} <= set(verdict["signatures"][0])
    picture = Image.open(report)
    assert picture.width >= 900 + 500  # the page (900 px) and the panel of crops and verdicts beside it


def test_a_signature_box_outscored_by_another_class_is_not_verified() -> None:
    """Per-class NMS can box a handwritten date twice (date 0.84, signature 0.33): only marks the
    detector holds to be signatures, and separate signatures, are verified."""
    from signver_torch.pipeline import _signatures_not_outscored

    found = {
        "boxes": torch.tensor([[341.0, 484, 445, 505], [342, 484, 445, 506], [439, 367, 677, 441], [430, 370, 500, 440]]),
        "scores": torch.tensor([0.84, 0.33, 0.93, 0.20]),
        "labels": torch.tensor([4, 1, 1, 2]),
    }
    assert _signatures_not_outscored(found).tolist() == [False, False, True, False]
