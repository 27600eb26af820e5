"""The verification commands (``cli/verify.py``): ``enroll``, ``verify`` with many queries (one model load,
a verdict per line, bad files on their own line, label metrics), ``identify`` and ``verify-document``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from signver_torch.errors import SignVerError
from signver_torch.pipeline import Claim, SignVer, read_claims

from cli_runner import signver_process
from tests.conftest import EXAMPLES, REFERENCES
from tests.test_matcher.test_gallery import WRITERS, by_writer


def cedar(small_data: Path, writer: int, n: int, forged: bool = False) -> str:
    folder, prefix = ("full_forg", "forgeries") if forged else ("full_org", "original")
    return str(small_data / "cedar" / folder / f"{prefix}_{writer}_{n}.png")


@pytest.fixture(scope="module")
def cedar_writers(small_data: Path) -> dict[str, dict[str, list[Path]]]:
    return by_writer(small_data / "cedar", WRITERS)


@pytest.fixture(scope="module")
def model() -> SignVer:
    return SignVer(clean=False, device="cpu")


def test_many_queries_stream_a_line_each_and_a_bad_file_does_not_stop_the_rest(
    small_data: Path, tmp_path: Path, model: SignVer
) -> None:
    references = [cedar(small_data, 35, 1), cedar(small_data, 35, 2)]
    blank = tmp_path / "blank.png"
    Image.new("L", (200, 80), 250).save(blank)
    queries = [cedar(small_data, 35, 3), str(tmp_path / "missing.png"), cedar(small_data, 35, 1, forged=True), str(blank),
               cedar(small_data, 36, 1)]
    result = signver_process("verify", "--reference", *references, "--query", *queries, "--json", "--no-clean")
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["query"] for line in lines] == queries
    assert "missing.png" in lines[1]["error"] and "not found" in lines[1]["error"]
    assert "blank.png" in lines[3]["error"] and "no signature ink" in lines[3]["error"]
    [stderr] = result.stderr.strip().splitlines()
    assert stderr.startswith("signver: error: 2 of 5 queries failed") and "missing.png" in stderr
    for query, line in zip(queries, lines):  # the batched verdicts are those of one query at a time
        if "error" not in line:
            alone = model.verify_references(references, query)
            assert line["distance"] == pytest.approx(alone.distance, abs=1e-5) and line["match"] == alone.match
            assert line["references"] == references and line["threshold"] == alone.threshold
    assert lines[0]["match"] is True and lines[2]["match"] is False  # genuine accepted, skilled forgery refused


def test_pairs_with_labels_report_eer_far_frr(small_data: Path, tmp_path: Path) -> None:
    rows = ["reference,query,label"]
    for writer in (35, 36, 37, 39):
        reference = f"{cedar(small_data, writer, 1)};{cedar(small_data, writer, 2)}"
        rows += [f"{reference},{cedar(small_data, writer, n)},genuine" for n in (3, 4, 5)]
        rows += [f"{reference},{cedar(small_data, writer, n, forged=True)},0" for n in (1, 2, 3)]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n")
    result = signver_process("verify", "--pairs", str(pairs), "--json", "--no-clean")
    assert result.returncode == 0, result.stderr
    *verdicts, last = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(verdicts) == 24 and all(len(v["references"]) == 2 for v in verdicts)
    summary = last["summary"]
    assert summary["n_genuine"] == 12 and summary["n_forged"] == 12
    genuine = [v for i, v in enumerate(verdicts) if i % 6 < 3]
    forged = [v for i, v in enumerate(verdicts) if i % 6 >= 3]
    assert summary["frr"] == pytest.approx(sum(not v["match"] for v in genuine) / 12)
    assert summary["far"] == pytest.approx(sum(v["match"] for v in forged) / 12)
    assert 0 <= summary["eer"] <= 0.5 and summary["auc"] > 0.5
    assert "verifying" in result.stderr  # 24 queries: a progress bar on stderr
    text = signver_process("verify", "--pairs", str(pairs), "--no-clean", "--quiet")
    assert text.returncode == 0 and text.stderr == ""
    assert text.stdout.splitlines()[-1].startswith("summary: rule distance, n_labelled 24")


def test_pairs_against_enrolled_people_with_paths_from_the_csv_folder(signver_cli, small_data: Path, tmp_path: Path) -> None:
    gallery = str(tmp_path / "people.db")
    for writer in (35, 36):
        enrolled = signver_cli("enroll", "--gallery", gallery, "--person", f"w{writer}",
                               *(cedar(small_data, writer, n) for n in (1, 2, 3)), "--no-clean")
        assert enrolled.returncode == 0, enrolled.stderr
    folder = tmp_path / "queries"
    folder.mkdir()
    for name, source in (("a.png", cedar(small_data, 35, 4)), ("b.png", cedar(small_data, 35, 4)), ("c.png", cedar(small_data, 36, 4))):
        (folder / name).write_bytes(Path(source).read_bytes())
    (folder / "pairs.csv").write_text("person,query\nw35,a.png\nw36,b.png\nw36,c.png\nnobody,c.png\n")
    result = signver_process("verify", "--pairs", str(folder / "pairs.csv"), "--gallery", gallery, "--json", "--no-clean",
                             cwd=tmp_path.parent)
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line.get("person") for line in lines] == ["w35", "w36", "w36", "nobody"]
    assert lines[0]["match"] is True and lines[1]["match"] is False and lines[2]["match"] is True
    assert lines[0]["n_references"] == 3 and "nobody" in lines[3]["error"]
    assert lines[0]["query"] == str(folder / "a.png")
    no_gallery = signver_process("verify", "--pairs", str(folder / "pairs.csv"))
    assert no_gallery.returncode == 1 and "needs --gallery" in no_gallery.stderr


def test_malformed_pairs_files_are_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    bad_header = tmp_path / "header.csv"
    bad_header.write_text("ref,img\na.png,b.png\n")
    bad_label = tmp_path / "label.csv"
    bad_label.write_text("reference,query,label\na.png,b.png,1\na.png,c.png,maybe\n")
    with pytest.raises(SignVerError, match="header.csv: needs a header with query"):
        read_claims(bad_header)
    with pytest.raises(SignVerError, match=r"label.csv:3: label 'maybe'"):
        read_claims(bad_label)
    good = tmp_path / "good.csv"
    good.write_text("query,reference\nq.png,r1.png; r2.png\n")
    assert read_claims(good) == [Claim(str(tmp_path / "q.png"), (str(tmp_path / "r1.png"), str(tmp_path / "r2.png")))]
    for args, message in (
        (("--pairs", str(bad_header)), "header.csv"),
        (("--pairs", str(tmp_path / "none.csv")), "none.csv"),
        (("--pairs", str(good), "--query", "q.png"), "without --query"),
        (("--reference", "r.png"), "needs --query"),
    ):
        result = signver_process("verify", *args)
        assert result.returncode == 1 and result.stdout == "", args
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("signver: error:") and message in line, (args, line)


def test_queries_against_an_enrolled_person_in_plain_text(signver_cli, small_data: Path, tmp_path: Path) -> None:
    gallery = str(tmp_path / "people.db")
    assert signver_cli("enroll", "--gallery", gallery, "--person", "ann", *(cedar(small_data, 36, n) for n in (1, 2, 3)),
                       "--no-clean").returncode == 0
    queries = [cedar(small_data, 36, 4), cedar(small_data, 36, 1, forged=True)]
    result = signver_cli("verify", "--gallery", gallery, "--person", "ann", "--query", *queries, "--no-clean")
    assert result.returncode == 0, result.stderr
    genuine, forged = result.stdout.splitlines()
    assert genuine.startswith(f"{queries[0]}: MATCH: distance ") and genuine.endswith("(against ann)")
    assert forged.startswith(f"{queries[1]}: NO MATCH: distance ")
    bad_reference = signver_process("verify", "--reference", str(tmp_path / "gone.png"), "--query", *queries)
    assert bad_reference.returncode == 1 and bad_reference.stdout == "" and "gone.png" in bad_reference.stderr


def test_gallery_commands(signver_cli, cedar_writers: dict, tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    refs = [str(p) for p in cedar_writers["35"]["genuine"][:3]]
    enrol = signver_cli("enroll", "--gallery", db, "--person", "carol", *refs, "--no-clean")
    assert enrol.returncode == 0, enrol.stderr
    verify = signver_cli("verify", "--gallery", db, "--person", "carol", "--query", str(cedar_writers["35"]["genuine"][4]),
                         "--json", "--no-clean")
    assert verify.returncode == 0, verify.stderr
    result = json.loads(verify.stdout)
    assert {"match", "distance", "threshold", "person"} <= set(result) and result["person"] == "carol"
    against = signver_cli("verify", "--reference", *refs, "--query", str(cedar_writers["35"]["forged"][0]), "--json",
                          "--no-clean")
    assert against.returncode == 0 and json.loads(against.stdout)["references"] == refs
    identify = signver_cli("identify", "--gallery", db, "--query", refs[0], "-k", "1", "--json", "--no-clean")
    assert identify.returncode == 0 and json.loads(identify.stdout)["matches"][0]["person"] == "carol"
    unknown = signver_process("verify", "--gallery", db, "--person", "dave", "--query", refs[0], "--no-clean")
    assert unknown.returncode == 1 and len(unknown.stderr.strip().splitlines()) == 1 and "dave" in unknown.stderr
    both = signver_process("verify", "--gallery", db, "--person", "carol", "--reference", refs[0], "--query", refs[0])
    assert both.returncode == 1 and "either" in both.stderr


def test_verify_document_command_prints_a_verdict_and_draws_the_report(signver_cli, tmp_path: Path) -> None:
    report = tmp_path / "report.png"
    result = signver_cli("verify-document", str(EXAMPLES / "contract.png"), "--reference", *map(str, REFERENCES),
                         "--out", str(report), "--json")
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["verdict"] == "signed by the claimed person" and verdict["match"] is True
    [signature] = verdict["signatures"]
    assert {"box_xyxy", "distance", "threshold", "match"} <= set(signature) and signature["match"] is True
    picture = Image.open(report)
    assert picture.width >= 900 + 500  # the page (900 px) and the panel of crops and verdicts beside it


def test_verify_document_against_an_enrolled_person(signver_cli, tmp_path: Path) -> None:
    gallery = str(tmp_path / "people.db")
    enrol = signver_cli("enroll", "--gallery", gallery, "--person", "writer-39", *map(str, REFERENCES))
    assert enrol.returncode == 0, enrol.stderr
    verdicts = {}
    for page in ("contract.png", "contract_forged.png"):
        result = signver_cli("verify-document", str(EXAMPLES / page), "--gallery", gallery, "--person", "writer-39", "--json")
        assert result.returncode == 0, result.stderr
        verdicts[page] = json.loads(result.stdout)
    assert verdicts["contract.png"]["claimed"] == "writer-39" and verdicts["contract.png"]["match"] is True
    assert verdicts["contract_forged.png"]["verdict"] == "not signed by the claimed person"
    unknown = signver_process("verify-document", str(EXAMPLES / "contract.png"), "--gallery", gallery, "--person", "nobody")
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1 and "nobody" in unknown.stderr
