"""The gallery and verification commands: ``signver enroll``, ``verify``, ``identify`` and ``verify-document``.

Each builds the pipeline once (``SignVer``) from the shared model options (``options.models``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import TYPE_CHECKING, Iterator

from signver_torch.cli.options import EXIT_ERROR, PROGRESS_FROM, engine_options, json_flag, models, quiet_flag
from signver_torch.errors import SignVerError

if TYPE_CHECKING:
    from signver_torch.claims import Claim, ClaimFailure, Verdict
    from signver_torch.pipeline import SignVer


def signver_from_args(args: argparse.Namespace) -> SignVer:
    """The pipeline that ``options.models`` describes (with ``--detector`` where the command has it)."""
    from signver_torch.pipeline import SignVer

    return SignVer(extractor=args.extractor, cleaner=args.cleaner, clean=not args.no_clean, combine=args.combine,
                   per_person=not args.distance_only, backend=args.backend, **({"detector": args.detector} if hasattr(args, "detector") else {}))


def cmd_enroll(args: argparse.Namespace) -> int:
    added = signver_from_args(args).enroll(args.gallery, args.person, args.images)
    print(f"enrolled {added} signature(s) of {args.person!r} in {args.gallery}")
    return 0


def _check_claim(args: argparse.Namespace, command: str) -> None:
    """A claim is either an enrolled person (--gallery and --person) or reference images, never both."""
    if bool(args.reference) == bool(args.gallery or args.person):
        raise SignVerError(f"{command} needs either --gallery DB --person ID, or --reference IMG...")
    if not args.reference and not (args.gallery and args.person):
        raise SignVerError(f"{command} against a gallery needs both --gallery and --person")


def _claims(args: argparse.Namespace) -> list[Claim]:
    from signver_torch.claims import Claim, read_claims

    if args.pairs:
        if args.query or args.reference or args.person:
            raise SignVerError("--pairs holds the queries and their claims: give it without --query, --reference or --person")
        claims = read_claims(args.pairs)
        people = any(claim.person is not None for claim in claims)
        if people != bool(args.gallery):
            raise SignVerError(f"{args.pairs}: a person column needs --gallery DB" if people else
                               f"{args.pairs}: --gallery is for a person column; this file names reference images")
        return claims
    if not args.query:
        raise SignVerError("verify needs --query IMG... (with --reference or --gallery/--person) or --pairs CSV")
    _check_claim(args, "verify")
    if args.reference:
        return [Claim(query, tuple(args.reference)) for query in args.query]
    return [Claim(query, person=args.person) for query in args.query]


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify one or many queries with one model load: a verdict per line (JSON lines with --json)."""
    from tqdm.auto import tqdm

    from signver_torch.claims import ClaimFailure

    claims = _claims(args)
    failures: list[str] = []
    labelled: list[tuple[Claim, Verdict]] = []
    verdicts = _outcomes(args, claims)
    with contextlib.closing(verdicts), tqdm(total=len(claims), desc="verifying", unit="query", file=sys.stderr,
                                             disable=args.quiet or len(claims) < PROGRESS_FROM) as bar:
        for claim, result in zip(claims, verdicts):
            if isinstance(result, ClaimFailure):
                failures.append(result.error)
            elif claim.label is not None:
                labelled.append((claim, result))
            bar.write(json.dumps(result.as_dict()) if args.json else _verdict_line(result), file=sys.stdout)
            sys.stdout.flush()  # a verdict per line as it comes, also through a pipe
            bar.update()
    _print_summaries(labelled, args.json)
    if failures:
        detail = failures[0] if len(claims) == 1 else f"{len(failures)} of {len(claims)} queries failed (each on its line); first: {failures[0]}"
        print(f"signver: error: {detail}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _outcomes(args: argparse.Namespace, claims: list[Claim]) -> Iterator[Verdict | ClaimFailure]:
    """The claims' verdicts in order: on Ray Data's actors (``--engine ray``, a ``--pairs`` file), or here with one
    model load, once the claim every query shares holds."""
    if args.engine == "ray":
        if not args.pairs:
            raise SignVerError("--engine ray verifies the claims of a --pairs file")
        from signver_torch.distributed import verify_pairs

        return verify_pairs(claims, args.gallery, extractor=args.extractor, cleaner=args.cleaner, clean=not args.no_clean,
                            combine=args.combine, per_person=not args.distance_only, backend=args.backend,
                            address=args.address, actors=args.actors, gpus_per_actor=args.gpus_per_actor)
    signver = signver_from_args(args)
    if args.person:
        with signver.gallery(args.gallery) as store:
            store.references(args.person)
    elif args.reference:
        signver.embed(args.reference)
    return signver.verify_many(claims, args.gallery)


def _print_summaries(labelled: list[tuple[Claim, Verdict]], as_json: bool) -> None:
    """A summary line per (rule, threshold) of the labelled verdicts: EER/AUC, FAR and FRR."""
    from signver_torch.claims import labelled_summaries

    for summary in labelled_summaries(labelled):
        print(json.dumps({"summary": summary}) if as_json else
              "summary: " + ", ".join(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
                                      for key, value in summary.items()))


def _verdict_line(result: Verdict | ClaimFailure) -> str:
    from signver_torch.claims import ClaimFailure

    if isinstance(result, ClaimFailure):
        return f"{result.query}: ERROR: {result.error}"
    against = result.person or ", ".join(result.references or ())
    score = (f"distance {result.distance:.4f}" if result.rule == "distance" else
             f"{result.rule} score {result.score:.4f} (distance {result.distance:.4f})")
    return (f"{result.query}: {'MATCH' if result.match else 'NO MATCH'}: {score} "
            f"{'<=' if result.match else '>'} threshold {result.threshold:.4f} (against {against})")


def cmd_identify(args: argparse.Namespace) -> int:
    signver = signver_from_args(args)
    matches = signver.identify(args.gallery, args.query, args.k)
    threshold = signver.extractor.threshold
    rows = [{"person": m.person, "distance": m.distance, "match": m.distance <= threshold} for m in matches]
    if args.json:
        print(json.dumps({"query": args.query, "threshold": threshold, "matches": rows}))
    else:
        for rank, row in enumerate(rows, start=1):
            print(f"{rank}. {row['person']:<24} distance {row['distance']:.4f}{'  (match)' if row['match'] else ''}")
    return 0


def cmd_verify_document(args: argparse.Namespace) -> int:
    _check_claim(args, "verify-document")
    signver = signver_from_args(args)
    report = signver.verify_document(args.page, person=args.person, gallery=args.gallery,
                                     references=args.reference, score_threshold=args.threshold)
    if args.out:
        signver.report_picture(report, args.page).save(args.out)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(f"{args.page}: {report.verdict}")
        for number, signature in enumerate(report.signatures, start=1):
            box, verdict = ", ".join(f"{v:.0f}" for v in signature.box), signature.verdict
            print(f"  #{number} [{box}] {verdict.rule} score {verdict.score:.4f} (threshold {verdict.threshold:.4f}): "
                  f"{'match' if verdict.match else 'no match'}")
        if args.out:
            print(f"report picture: {args.out}")
    return 0


def _claim_options(sub: argparse.ArgumentParser) -> None:
    """A claim: an enrolled person (``--gallery`` with ``--person``) or ``--reference`` images."""
    sub.add_argument("--gallery", help="gallery file")
    sub.add_argument("--person", help="claimed person id (with --gallery)")
    sub.add_argument("--reference", nargs="+", metavar="IMG", help="reference signatures of the claimed writer")


def add_enroll(commands: argparse._SubParsersAction) -> None:
    enroll = commands.add_parser("enroll", help="enrol a person's reference signatures in a gallery")
    enroll.add_argument("--gallery", required=True, help="gallery file (SQLite; created if missing)")
    enroll.add_argument("--person", required=True, help="person id")
    enroll.add_argument("images", nargs="+", metavar="IMG", help="reference signature crops")
    models(enroll)
    enroll.set_defaults(handler=cmd_enroll)


def add_verify(commands: argparse._SubParsersAction) -> None:
    verify = commands.add_parser(
        "verify", help="verify signatures against an enrolled person or reference images",
        description="Verify one or many query signatures with one model load; one verdict per line (JSON lines with "
        "--json). A query that cannot be read is reported on its line and the others go on; the exit code is 1 if "
        "any failed. With labels (--pairs), EER/FAR/FRR are printed at the end.",
    )
    verify.add_argument("--query", nargs="+", metavar="IMG", help="the signature(s) to check")
    verify.add_argument("--pairs", metavar="CSV", help="claims to check, one a row: columns query, reference (image "
                        "paths, ';' between several) or person (with --gallery), optional label (1/0, genuine/forged); "
                        "relative paths are from the CSV's folder")
    _claim_options(verify)
    engine_options(verify, "a --pairs file's claims in batches, verdicts in claim order",
                   local="one process", ray="Ray Data actors (docs/scale.md)")
    json_flag(verify, "print one JSON object per query (JSON lines)")
    quiet_flag(verify)
    models(verify)
    verify.set_defaults(handler=cmd_verify)


def add_identify(commands: argparse._SubParsersAction) -> None:
    identify = commands.add_parser("identify", help="find the closest enrolled people for a signature")
    identify.add_argument("--gallery", required=True, help="gallery file")
    identify.add_argument("--query", required=True, help="the signature to identify")
    identify.add_argument("-k", type=int, default=5, help="how many people to list (default 5)")
    json_flag(identify)
    models(identify)
    identify.set_defaults(handler=cmd_identify)


def add_verify_document(commands: argparse._SubParsersAction) -> None:
    document = commands.add_parser(
        "verify-document", help="find the signatures on a page and check them against a claimed person",
        description="Detect signatures on PAGE, clean and embed each, and compare with the claimed person "
        "(--gallery/--person) or with reference images (--reference).",
    )
    document.add_argument("page", help="the page image")
    _claim_options(document)
    document.add_argument("--threshold", type=float, help="detector score threshold (default: the detector checkpoint's; "
                          "0.3 when its card has none)")
    document.add_argument("--out", help="write a report picture (PNG): the page, boxes, crops, verdicts")
    json_flag(document)
    models(document, detector=True)
    document.set_defaults(handler=cmd_verify_document)
