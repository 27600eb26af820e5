"""Claims and verdicts (``claims.py``): the fields of a verify line, in order."""

from __future__ import annotations

from signver_torch.claims import ClaimFailure, Verdict


def test_a_verdict_writes_the_fields_of_a_verify_line_in_order() -> None:
    verdict = Verdict(True, 0.1, "distance", 0.1, 0.36, combine="mean", person="ann", query="q.png", n_references=3)
    assert list(verdict.as_dict()) == ["match", "distance", "rule", "score", "threshold", "combine", "person", "query", "n_references"]
    by_rule = Verdict(False, 0.5, "svm", 0.7, -0.08, references=("r1.png", "r2.png"), query="q.png")
    assert by_rule.as_dict() == {"match": False, "distance": 0.5, "rule": "svm", "score": 0.7, "threshold": -0.08,
                                 "references": ["r1.png", "r2.png"], "query": "q.png"}
    assert ClaimFailure("q.png", "gone", references=("r.png",)).as_dict() == {"query": "q.png", "references": ["r.png"], "error": "gone"}
    assert list(ClaimFailure("q.png", "gone", person="ann").as_dict()) == ["query", "person", "error"]
