"""The ``signver`` command.

Every subcommand reports a user error as one line on stderr and a non-zero exit; ``--debug`` shows
the traceback instead. Results go to stdout (``--json`` where a tool will read them), progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

from signver_torch.errors import SignVerError
from signver_torch.io import DEFAULT_MAX_PAGES, PDF_DPI
from signver_torch.matcher.decisions import RULES
from signver_torch.tasks import get_task, training_tasks

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

#: Distributions whose versions `signver info` reports, in this order.
REPORTED_PACKAGES = (
    "signver-torch",
    "torch",
    "torchvision",
    "lightning",
    "lightning-habana",
    "timm",
    "kornia",
    "pytorch-metric-learning",
    "torchmetrics",
    "numpy",
    "pillow",
    "safetensors",
    "faiss-cpu",
)

def collect_info() -> dict:
    """Versions, accelerators present and shipped checkpoints, as a JSON-ready dict."""
    from signver_torch.accelerators import describe_present, installed_version
    from signver_torch.checkpoints import iter_cards

    checkpoints = []
    for checkpoint, card in iter_cards():
        entry = {"module": checkpoint.module, "name": checkpoint.name, "path": str(checkpoint.weights)}
        if isinstance(card, dict):
            entry["metrics"] = card.get("metrics", {})
        else:
            entry["error"] = card
        checkpoints.append(entry)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: installed_version(name) for name in REPORTED_PACKAGES},
        "accelerators": describe_present(),
        "checkpoints": checkpoints,
    }


def cmd_doctor(args: argparse.Namespace) -> int:
    from signver_torch.doctor import as_dicts, run_checks

    checks = run_checks(args.mode)
    if args.json:
        print(json.dumps(as_dicts(checks), indent=2))
    else:
        for check in checks:
            print(f"{check.status:<4}  {check.name:<9} {check.detail}")
    return 1 if any(check.status == "fail" for check in checks) else 0


def cmd_info(args: argparse.Namespace) -> int:
    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"signver-torch {info['packages']['signver-torch']} (python {info['python']}, {info['platform']})")
    print("\npackages:")
    for name, version in info["packages"].items():
        if name != "signver-torch":
            print(f"  {name:<24} {version or 'not installed'}")
    print("\naccelerators:")
    for kind, text in info["accelerators"].items():
        print(f"  {kind:<4} {text}")
    print("\nshipped checkpoints:")
    if not info["checkpoints"]:
        print("  none yet")
    for entry in info["checkpoints"]:
        shown = {k: v for k, v in entry.get("metrics", {}).items() if k in ("eer", "auc", "eer_random", "threshold")}
        detail = entry.get("error") or ", ".join(f"{k}={v:.4g}" for k, v in shown.items()) or "no metrics"
        print(f"  {entry['module']}/{entry['name']}: {detail}")
    return 0


def _require_trainable(module: str, command: str) -> None:
    if module not in training_tasks():
        raise SignVerError(f"`signver {command} {module}` is not available in this version yet (available: {', '.join(training_tasks())})")


def cmd_train(args: argparse.Namespace) -> int:
    from signver_torch.training import resolve_recipe, train

    _require_trainable(args.module, "train")
    task = get_task(args.module)
    if args.resume and not args.run_dir:
        raise SignVerError("--resume needs --run-dir: the folder of the run to continue")
    if args.init and not task.fine_tunable:
        tunable = " and the ".join(name for name, other in training_tasks().items() if other.fine_tunable)
        raise SignVerError(f"--init (fine-tuning) is available for the {tunable}, not the {args.module}")
    if args.data and len(args.data) > 1 and not task.several_data:
        raise SignVerError(f"train {args.module} takes one --data folder")
    config = resolve_recipe(args.module, args.config, fine_tune=args.init is not None)
    run_dir = Path(args.run_dir or _shared_run_dir(args.module))
    out = Path(args.out or run_dir / args.module)
    overrides = [f"--hardware.{key}={value}" for key, value in
                 (("accelerator", args.accelerator), ("devices", args.devices), ("precision", args.precision)) if value]
    data = None if not args.data else args.data[0] if len(args.data) == 1 else json.dumps(args.data)  # several: a list
    overrides += [f"--data.{key}={value}" for key, value in
                  ((task.data_argument, data), ("train_writers", args.train_writers), ("val_writers", args.val_writers)) if value]
    if args.init:
        overrides.append(f"--model.init={args.init}")
    if args.max_epochs:
        overrides.append(f"--trainer.max_epochs={args.max_epochs}")
    overrides += args.overrides
    weights, card = train(args.module, config, overrides, run_dir, out, resume=args.resume, argv=args.argv)
    if card is not None:  # rank 0 of a multi-device run, or a single-device run
        print(f"wrote {weights} (+ .json card); {task.summary(card)}")
    return 0


def _shared_run_dir(module: str) -> str:
    """A new ``runs/<module>-<time>`` folder, the same for every rank of a multi-device run: Lightning
    relaunches this command once per extra rank (``LOCAL_RANK`` set), and those processes inherit
    rank 0's choice through ``SIGNVER_RUN_DIR`` instead of stamping their own."""
    if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get("SIGNVER_RUN_DIR"):
        return os.environ["SIGNVER_RUN_DIR"]
    os.environ["SIGNVER_RUN_DIR"] = f"runs/{module}-{time.strftime('%Y%m%d-%H%M%S')}"
    return os.environ["SIGNVER_RUN_DIR"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from signver_torch.tasks import module_command

    command = module_command(args.module, "evaluate", args)
    args.data = _data_argument(args.data, several=get_task(args.module).several_data)
    report = command.run(args)
    if args.record or args.record_as:
        _record_metrics(args, report)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:<22} {value:.4f}" if isinstance(value, float) else f"{key:<22} {value}")
    return 0


def _record_metrics(args: argparse.Namespace, report: dict) -> None:
    """``evaluate --record``: the report becomes the card's ``metrics``, with the command that measured it;
    ``--record-as NAME`` files it under ``extra_metrics[NAME]`` instead, with the command that made the
    data when the data folder says (``signver synthesize`` leaves its command there)."""
    from signver_torch.checkpoints import resolve_checkpoint, update_card
    from signver_torch.data.detection import SYNTHESIS_RECORD

    checkpoint = resolve_checkpoint(args.module, args.checkpoint)
    card = checkpoint.card()
    if report.get("checkpoint_sha256", card.get("sha256")) != card.get("sha256"):
        raise SignVerError(f"{checkpoint.weights}: changed while it was evaluated; not recorded")
    provenance = ("checkpoint", "checkpoint_sha256")
    command = "signver " + shlex.join(arg for arg in _without_record_flags(args.argv))
    metrics = {k: v for k, v in report.items() if k not in provenance}
    if not args.record_as:
        update_card(checkpoint.weights, metrics=metrics, metrics_command=command)
        return
    made_by = None
    for folder in [args.data] if isinstance(args.data, str) else args.data:
        record = Path(folder) / SYNTHESIS_RECORD
        if record.is_file():
            made_by = json.loads(record.read_text()).get("command")
    update_card(checkpoint.weights, extra_metrics={**card.get("extra_metrics", {}), args.record_as: {
        "metrics": metrics, "command": command, "data_command": made_by}})


def _without_record_flags(argv: Sequence[str]) -> list[str]:
    """The evaluate command as it measures, without the flags that only record it."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--record":
            continue
        elif arg == "--record-as":
            skip = True
        elif not arg.startswith("--record-as="):
            kept.append(arg)
    return kept


def _data_argument(folders: list[str], several: bool = True) -> str | list[str]:
    """``--data``: one folder as a path, several as a list (sources whose writers are named ``source:id``)."""
    if len(folders) > 1 and not several:
        raise SignVerError(f"this command reads one --data folder, not {len(folders)}")
    return folders[0] if len(folders) == 1 else folders


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit what a checkpoint calibrates on its training writers (the module's own calibration)."""
    from signver_torch.tasks import module_command

    command = module_command(args.module, "calibrate", args)
    args.data = _data_argument(args.data, several=get_task(args.module).several_data)
    print(command.run(args))
    return 0


def cmd_synthesize(args: argparse.Namespace) -> int:
    """Draw seeded synthetic pages (all four classes) into a YOLO folder the evaluate command reads."""
    from signver_torch.data.dirt import load_ink_maps
    from signver_torch.data.detection import SYNTHESIS_RECORD
    from signver_torch.data.pages import YOLO_CLASS_MAP, PageConfig, SyntheticPages, write_yolo_pages
    from signver_torch.data.signatures import discover_signatures

    if args.pages < 1:
        raise SignVerError(f"--pages must be at least 1, not {args.pages}")
    records = discover_signatures(args.data, args.writers or None)
    pages = SyntheticPages(load_ink_maps(records, progress=not args.quiet), args.pages, args.seed, PageConfig(size=args.size))
    root = write_yolo_pages(pages, args.out, progress=not args.quiet)
    (root / SYNTHESIS_RECORD).write_text(json.dumps({"command": "signver " + shlex.join(args.argv)}) + "\n")
    print(f"wrote {args.pages} pages to {root}; score them with: signver evaluate detector --data {root} --class-map {YOLO_CLASS_MAP}")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    """Clean crops and write ``<stem>.png`` per input into ``--out``."""
    from PIL import Image

    from signver_torch.cleaner.api import Cleaner
    from signver_torch.io import load_image_tensor

    out = Path(args.out)
    names = [Path(path).stem for path in args.images]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SignVerError(f"inputs share output names ({', '.join(duplicates)}.png): clean them into separate --out folders")
    pages = [load_image_tensor(path, "L") for path in args.images]
    cleaner = Cleaner(device=args.device).load(args.checkpoint)
    cleaned = cleaner.clean_pages(pages, progress=not args.quiet)
    out.mkdir(parents=True, exist_ok=True)
    for name, page in zip(names, cleaned):
        target = out / f"{name}.png"
        Image.fromarray((page[0].numpy() * 255).round().astype("uint8")).save(target)
        print(target)
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    """Annotated PNG and JSON per page into ``--out``; ``--summary`` prints what each page holds."""
    from signver_torch.data.detection import CLASS_NAMES
    from signver_torch.detector.api import Detector, draw_detections, summarize
    from signver_torch.io import load_image

    out = Path(args.out)
    detector = Detector(device=args.device).load(args.checkpoint)
    for path in args.pages:
        page = load_image(path)
        [found] = detector.predict([page], score_threshold=args.threshold)
        out.mkdir(parents=True, exist_ok=True)  # only once a page has been read: a bad first page leaves nothing behind
        summary = summarize(found)
        record = {
            "page": str(path),
            "size": list(page.size),
            "detections": [
                {"box_xyxy": [round(v, 1) for v in box], "score": round(score, 4), "label": label,
                 "class": CLASS_NAMES[label]}
                for box, score, label in zip(found["boxes"].tolist(), found["scores"].tolist(), found["labels"].tolist())
            ],
            "summary": summary,
        }
        stem = Path(path).stem
        draw_detections(page, found).save(out / f"{stem}.png")
        (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
        if args.summary:
            flags = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in summary.items() if isinstance(v, bool))
            print(f"{path}: {flags}")
        else:
            print(out / f"{stem}.png")
    return 0


def _signver(args: argparse.Namespace) -> "SignVer":  # noqa: F821 (imported lazily)
    from signver_torch.pipeline import SignVer

    return SignVer(extractor=args.extractor, cleaner=args.cleaner, clean=not args.no_clean, combine=args.combine,
                   per_person=not args.distance_only, **({"detector": args.detector} if hasattr(args, "detector") else {}))


def cmd_enroll(args: argparse.Namespace) -> int:
    added = _signver(args).enroll(args.gallery, args.person, args.images)
    print(f"enrolled {added} signature(s) of {args.person!r} in {args.gallery}")
    return 0


def _check_claim(args: argparse.Namespace, command: str) -> None:
    """A claim is either an enrolled person (--gallery and --person) or reference images, never both."""
    if bool(args.reference) == bool(args.gallery or args.person):
        raise SignVerError(f"{command} needs either --gallery DB --person ID, or --reference IMG...")
    if not args.reference and not (args.gallery and args.person):
        raise SignVerError(f"{command} against a gallery needs both --gallery and --person")


#: Lists of at least this many queries show a progress bar on stderr.
PROGRESS_FROM = 10


def _claims(args: argparse.Namespace) -> list["Claim"]:  # noqa: F821 (imported lazily)
    from signver_torch.pipeline import Claim, read_claims

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


def _label_summary(labelled: list[tuple[bool, float]], threshold: float) -> dict:
    """EER/AUC over the labelled verdicts' scores (both kinds needed), FAR and FRR at the threshold used."""
    import torch

    from signver_torch.metrics import verification_metrics

    positive = torch.tensor([distance for label, distance in labelled if label], dtype=torch.double)
    negative = torch.tensor([distance for label, distance in labelled if not label], dtype=torch.double)
    summary: dict = {"n_labelled": len(labelled), "n_genuine": len(positive), "n_forged": len(negative), "threshold": threshold}
    if len(positive) and len(negative):
        metrics = verification_metrics(positive, negative, threshold)
        summary.update({key: metrics[key] for key in ("eer", "auc", "threshold_at_eer", "far", "frr")})
    elif len(negative):
        summary["far"] = float((negative <= threshold).double().mean())
    elif len(positive):
        summary["frr"] = float((positive > threshold).double().mean())
    return summary


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify one or many queries with one model load: a verdict per line (JSON lines with --json)."""
    from tqdm.auto import tqdm

    claims = _claims(args)
    signver = _signver(args)
    if args.person:  # the one claim shared by every query must hold before any query is checked
        with signver.gallery(args.gallery) as store:
            store.references(args.person)
    elif args.reference:
        signver.embed(args.reference)
    failures: list[str] = []
    labelled: dict[tuple[str, float], list[tuple[bool, float]]] = {}
    verdicts = signver.verify_many(claims, args.gallery)
    with contextlib.closing(verdicts), tqdm(total=len(claims), desc="verifying", unit="query", file=sys.stderr,
                                             disable=args.quiet or len(claims) < PROGRESS_FROM) as bar:
        for claim, result in zip(claims, verdicts):
            if "error" in result:
                failures.append(result["error"])
            elif claim.label is not None:  # summed up per rule: scores of two rules are not comparable
                labelled.setdefault((result["rule"], result["threshold"]), []).append((claim.label, result["score"]))
            bar.write(json.dumps(result) if args.json else _verdict_line(result), file=sys.stdout)
            sys.stdout.flush()  # a verdict per line as it comes, also through a pipe
            bar.update()
    for (rule, threshold), scores in labelled.items():
        summary = {"rule": rule, **_label_summary(scores, threshold)}
        print(json.dumps({"summary": summary}) if args.json else
              "summary: " + ", ".join(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
                                      for key, value in summary.items()))
    if failures:
        detail = failures[0] if len(claims) == 1 else f"{len(failures)} of {len(claims)} queries failed (each on its line); first: {failures[0]}"
        print(f"signver: error: {detail}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _verdict_line(result: dict) -> str:
    if "error" in result:
        return f"{result['query']}: ERROR: {result['error']}"
    against = result.get("person") or ", ".join(result.get("references", []))
    score = (f"distance {result['distance']:.4f}" if result["rule"] == "distance" else
             f"{result['rule']} score {result['score']:.4f} (distance {result['distance']:.4f})")
    return (f"{result['query']}: {'MATCH' if result['match'] else 'NO MATCH'}: {score} "
            f"{'<=' if result['match'] else '>'} threshold {result['threshold']:.4f} (against {against})")


def cmd_identify(args: argparse.Namespace) -> int:
    signver = _signver(args)
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
    signver = _signver(args)
    report = signver.verify_document(args.page, person=args.person, gallery=args.gallery,
                                     references=args.reference, score_threshold=args.threshold)
    if args.out:
        signver.report_picture(report, args.page).save(args.out)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(f"{args.page}: {report.verdict}")
        for number, verdict in enumerate(report.signatures, start=1):
            box = ", ".join(f"{v:.0f}" for v in verdict.box)
            print(f"  #{number} [{box}] {verdict.rule} score {verdict.decision_score:.4f} (threshold {verdict.threshold:.4f}): "
                  f"{'match' if verdict.match else 'no match'}")
        if args.out:
            print(f"report picture: {args.out}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    """Index every document in the folders (or files) given into a library, one transaction each."""
    from tqdm.auto import tqdm

    from signver_torch.library import DocumentLibrary, document_files, index_files

    files = [path for item in args.paths for path in (document_files(item) if Path(item).is_dir() else [Path(item)])]
    if not files:
        raise SignVerError(f"no documents ({', '.join(args.paths)}): expected images, TIFFs or PDFs")
    signver = _signver(args)
    failures = 0
    with DocumentLibrary(args.library, signver.extractor.sha256) as library, \
            tqdm(total=len(files), desc="indexing", unit="doc", file=sys.stderr, disable=args.quiet) as bar:
        def report(result: "Indexed") -> None:  # noqa: F821 (imported lazily)
            nonlocal failures
            failures += result.error is not None
            line = (json.dumps(result.as_dict()) if args.json else
                    f"{result.name}: ERROR: {result.error}" if result.error else
                    f"{result.name}: already indexed (document {result.document_id})" if result.skipped else
                    f"{result.name}: document {result.document_id}, {result.n_pages} page(s), {result.n_signatures} signature(s)")
            bar.write(line, file=sys.stdout)
            bar.update()

        index_files(signver, library, files, report, dpi=args.dpi, max_pages=args.max_pages)
    if failures:
        print(f"signver: error: {failures} of {len(files)} documents could not be indexed (each on its line)", file=sys.stderr)
        return EXIT_ERROR
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """SignVer Studio over HTTP: the models loaded once, the page at /, the API under /api, OpenAPI at /docs."""
    try:
        import uvicorn

        from signver_torch.studio.app import SETTINGS_VARIABLE, TOKEN_VARIABLE, StudioSettings, create_app
    except ImportError as error:
        raise SignVerError(f"signver serve needs the serve extra (pip install -e \".[serve]\"): {error}") from None
    settings = StudioSettings(gallery=args.gallery, library=args.library, token=args.token or os.environ.get(TOKEN_VARIABLE),
                              host=args.host, detector=args.detector, cleaner=args.cleaner, extractor=args.extractor,
                              max_upload_mb=args.max_upload_mb, max_pages=args.max_pages, dpi=args.dpi)
    settings.check()
    log_config = {"version": 1, "disable_existing_loggers": False,
                  "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
                  "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"}},
                  "loggers": {"signver": {"handlers": ["stderr"], "level": "INFO"},
                              "uvicorn": {"handlers": ["stderr"], "level": "INFO"}}}
    if args.workers > 1:  # each worker process builds its own app (and loads the models) from the environment
        os.environ[SETTINGS_VARIABLE] = json.dumps({key: value for key, value in vars(settings).items() if key != "token"})
        if settings.token:
            os.environ[TOKEN_VARIABLE] = settings.token
        uvicorn.run("signver_torch.studio.app:create_app_from_environment", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_config=log_config, access_log=False)
    else:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=log_config, access_log=False)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from signver_torch.benchmark import run_benchmarks, write_records

    records = []
    for record in run_benchmarks(
        args.accelerator, tuple(args.models) if args.models else None, tuple(args.modes), tuple(args.paths), args.precision,
        args.batch_size, args.steps, args.warmup, args.compile, Path(args.data) if args.data else None, args.recipe,
        progress=(lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr)),
    ):
        records.append(record)
        print(f"{record.model:<9} {record.mode:<9} {record.path:<9} {record.images_per_second:8.1f} img/s  "
              f"p50 {record.step_ms_median:7.1f} ms  p90 {record.step_ms_p90:7.1f} ms  "
              f"peak {record.peak_memory_mb or 0:7.0f} MB" + (f"  data {record.data_images_per_second:.0f} img/s"
                                                            if record.data_images_per_second else ""))
    print(f"wrote {write_records(records, Path(args.out))}")
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), like every other error of the command."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="signver",
        description="Offline handwritten signature detection, cleaning, embedding and verification.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    commands.required = True

    info = commands.add_parser("info", help="versions, accelerators present and shipped checkpoints")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=cmd_info)
    doctor = commands.add_parser("doctor", help="inside a Gaudi container: is torch Habana's, are lightning/lightning-habana "
                                                 "a supported pair, are HPUs present, does PT_HPU_LAZY_MODE match the mode")
    doctor.add_argument("--mode", choices=("eager", "lazy"), default="eager",
                        help="execution mode the run will use: eager (default; needed by compile: true) or legacy lazy")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(handler=cmd_doctor)

    train = commands.add_parser(
        "train",
        help="train or fine-tune a model from a recipe",
        description="Train a module from a LightningCLI recipe (recipes/<module>/*.yaml) and export a "
        "checkpoint with its card. Extra arguments after the options go to LightningCLI "
        "(e.g. --trainer.max_epochs=5 --model.lr=0.001).",
    )
    train.add_argument("module", choices=tuple(training_tasks()))
    train.add_argument("--config", help="recipe YAML, or a recipe name: cpu, gpu, hpu, hpu8, finetune (default: cpu, or finetune with --init)")
    train.add_argument("--data", nargs="+", metavar="DIR", help="training data: one or several folders (CEDAR or writer "
                       "folders; with several, writers are named by source, e.g. cedar:1-32,dutch:001-036)")
    train.add_argument("--train-writers", help="training writers, e.g. 1-32 (default: the recipe's)")
    train.add_argument("--val-writers", help="held-out writers for validation and threshold calibration; extractor: \"none\" "
                       "holds none out, training on --train-writers (name every writer there; then `signver calibrate "
                       "extractor --out-of-fold` sets its thresholds)")
    train.add_argument("--init", help="start from this checkpoint (name or path): fine-tuning")
    train.add_argument("--out", help="where to write the exported checkpoint (.safetensors + .json)")
    train.add_argument("--run-dir", help="folder for Lightning checkpoints and logs (default: runs/<module>-<time>)")
    train.add_argument("--resume", action="store_true", help="resume from RUN_DIR/last.ckpt")
    train.add_argument("--max-epochs", type=int)
    train.add_argument("--accelerator", choices=("auto", "cpu", "gpu", "hpu"))
    train.add_argument("--devices")
    train.add_argument("--precision")
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="measure a checkpoint with the evaluation contract (one JSON object with --json)",
    )
    evaluate.add_argument("module", choices=[name for name, task in training_tasks().items() if task.evaluate])
    evaluate.add_argument("--data", required=True, nargs="+", metavar="DIR",
                          help="extractor, cleaner: one or several folders (CEDAR or writer folders; with several, writers are "
                          "named by source: cedar:33-40); detector: one folder of labelled pages")
    evaluate.add_argument("--writers", help="writers to evaluate, e.g. 33-40 (default: all)")
    evaluate.add_argument("--checkpoint", default="default", help="shipped name or .safetensors path")
    evaluate.add_argument("--threshold", type=float, help="extractor: report FAR and FRR at this distance (default: the "
                          "checkpoint's calibrated threshold)")
    evaluate.add_argument("--references", type=int, metavar="K", help="extractor: also the gallery protocol: enrol the first "
                          "K genuine signatures of each writer, claim the rest and the forgeries, per decision rule")
    evaluate.add_argument("--background-writers", metavar="SPEC", help="extractor, with --references: whose genuine "
                          "signatures are the writer-dependent SVMs' background (training writers, e.g. 1-32)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    evaluate.add_argument("--record", action="store_true", help="write the report into the checkpoint's card as its "
                          "metrics, with this command (what shipped cards hold)")
    evaluate.add_argument("--record-as", metavar="NAME", help="write the report into the card's extra_metrics[NAME] "
                          "(e.g. synthetic: the detector on pages from signver synthesize), with this command and the data's")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    evaluate.add_argument("--pairs", type=int, help="cleaner: number of synthetic pairs (default 256)")
    evaluate.add_argument("--class-map", help="detector: dataset class to SignVer label, e.g. 0:1 (YOLO default)")
    evaluate.add_argument("--held-out-every", type=int, help="detector: score only every Nth page by name (the recipes' held-out pages)")
    evaluate.add_argument("--errors", metavar="DIR", help="detector: write a picture of every page with a missed mark or a "
                          "confident false positive, and errors.json listing them, into DIR")
    evaluate.set_defaults(handler=cmd_evaluate)

    calibrate = commands.add_parser(
        "calibrate",
        help="fit on the training writers what a checkpoint calibrates: the cleaner's tone curve (output to clean grey "
        "levels), the extractor's projection (principal axes of its backbone features; then the threshold)",
    )
    calibrate.add_argument("module", choices=[name for name, task in training_tasks().items() if task.calibrate])
    calibrate.add_argument("--data", required=True, nargs="+", metavar="DIR",
                           help="one or several folders (CEDAR or writer folders; several: writers named by source)")
    calibrate.add_argument("--writers", help="the checkpoint's training writers, e.g. 1-32 (never the evaluation ones); "
                           "extractor: without it the projection is kept and only the threshold is set")
    calibrate.add_argument("--checkpoint", default="default", help="shipped name or .safetensors path (its card is rewritten)")
    calibrate.add_argument("--val-writers", help="extractor: held-out writers whose EER sets the threshold, e.g. 33-40 "
                           "(default without --writers: every writer of --data)")
    calibrate.add_argument("--target-far", type=float, metavar="F", help="extractor: set the threshold where the skilled-"
                           "forgery FAR of those writers is F (e.g. 0.05) instead of at their EER")
    calibrate.add_argument("--references", type=int, metavar="K", help="extractor: also calibrate the per-person decision "
                           "for K references (the gallery protocol on --val-writers: the rule of lowest EER and its threshold)")
    calibrate.add_argument("--background-writers", metavar="SPEC", help="extractor, with --references: whose genuine "
                           "signatures are the writer-dependent SVMs' background, shipped beside the weights (never --val-writers)")
    calibrate.add_argument("--rule", choices=RULES, help="extractor, with --references: this rule "
                           "instead of the one of lowest EER")
    calibrate.add_argument("--out-of-fold", nargs="+", metavar="FILE", help="extractor, for a model trained on every "
                           "writer: take the thresholds from a cross-validation of its recipe (the `crossval embed` files), "
                           "instead of from --val-writers")
    calibrate.add_argument("--pairs", type=int, help="cleaner: number of synthetic pairs (default 256)")
    calibrate.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    calibrate.set_defaults(handler=cmd_calibrate)

    synthesize = commands.add_parser(
        "synthesize",
        help="draw seeded synthetic pages (signatures, initials, redactions, dates) into a YOLO folder",
    )
    synthesize.add_argument("kind", choices=("pages",))
    synthesize.add_argument("--data", required=True, help="signatures to paste: CEDAR or writer-folder layout")
    synthesize.add_argument("--writers", help="whose signatures, e.g. 33-40 (default: all)")
    synthesize.add_argument("--pages", type=int, default=64, help="number of pages (default 64)")
    synthesize.add_argument("--seed", type=int, default=20261126, help="page i is fixed by (seed, i) (default 20261126)")
    synthesize.add_argument("--size", type=int, default=640, help="page side in pixels (default 640, as the real pages)")
    synthesize.add_argument("--out", required=True, help="new or empty folder for images/ and labels/")
    synthesize.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    synthesize.set_defaults(handler=cmd_synthesize)

    detect = commands.add_parser(
        "detect", help="find signatures, initials, redactions and dates on pages",
        description="Detect on pages; writes OUT/<name>.png (boxes drawn) and OUT/<name>.json per page.",
    )
    detect.add_argument("pages", nargs="+", metavar="PAGE", help="page images (any format)")
    detect.add_argument("--out", required=True, help="folder for annotated PNGs and JSON")
    detect.add_argument("--summary", action="store_true", help="print per page whether it is signed, initialled, redacted, dated")
    detect.add_argument("--threshold", type=float, default=0.3, help="minimum score (default 0.3)")
    detect.add_argument("--checkpoint", default="default", help="shipped name or .safetensors path")
    detect.add_argument("--device", help="cpu, cuda, ... (default: the best present)")
    detect.set_defaults(handler=cmd_detect)

    def checkpoints(sub: argparse.ArgumentParser, detector: bool = False) -> None:
        sub.add_argument("--extractor", default="default", help="extractor checkpoint (name or path)")
        sub.add_argument("--cleaner", default="default", help="cleaner checkpoint (name or path)")
        if detector:
            sub.add_argument("--detector", default="default", help="detector checkpoint (name or path)")

    def models(sub: argparse.ArgumentParser, detector: bool = False) -> None:
        checkpoints(sub, detector)
        sub.add_argument("--no-clean", action="store_true", help="embed crops as they are, without the cleaner")
        sub.add_argument("--combine", choices=("mean", "min"), default="mean",
                         help="how distances to several references combine (default mean)")
        sub.add_argument("--distance-only", action="store_true", help="decide on the combined distance and the pair "
                         "threshold, never the checkpoint's per-person rule (which applies from its min_references on)")

    enroll = commands.add_parser("enroll", help="enrol a person's reference signatures in a gallery")
    enroll.add_argument("--gallery", required=True, help="gallery file (SQLite; created if missing)")
    enroll.add_argument("--person", required=True, help="person id")
    enroll.add_argument("images", nargs="+", metavar="IMG", help="reference signature crops")
    models(enroll)
    enroll.set_defaults(handler=cmd_enroll)

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
    verify.add_argument("--gallery", help="gallery file")
    verify.add_argument("--person", help="claimed person id (with --gallery)")
    verify.add_argument("--reference", nargs="+", metavar="IMG", help="reference signatures of the claimed writer")
    verify.add_argument("--json", action="store_true", help="print one JSON object per query (JSON lines)")
    verify.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    models(verify)
    verify.set_defaults(handler=cmd_verify)

    identify = commands.add_parser("identify", help="find the closest enrolled people for a signature")
    identify.add_argument("--gallery", required=True, help="gallery file")
    identify.add_argument("--query", required=True, help="the signature to identify")
    identify.add_argument("-k", type=int, default=5, help="how many people to list (default 5)")
    identify.add_argument("--json", action="store_true", help="print one JSON object")
    models(identify)
    identify.set_defaults(handler=cmd_identify)

    document = commands.add_parser(
        "verify-document", help="find the signatures on a page and check them against a claimed person",
        description="Detect signatures on PAGE, clean and embed each, and compare with the claimed person "
        "(--gallery/--person) or with reference images (--reference).",
    )
    document.add_argument("page", help="the page image")
    document.add_argument("--gallery", help="gallery file")
    document.add_argument("--person", help="claimed person id (with --gallery)")
    document.add_argument("--reference", nargs="+", metavar="IMG", help="reference signatures of the claimed writer")
    document.add_argument("--threshold", type=float, default=0.3, help="detector score threshold (default 0.3)")
    document.add_argument("--out", help="write a report picture (PNG): the page, boxes, crops, verdicts")
    document.add_argument("--json", action="store_true", help="print one JSON object")
    models(document, detector=True)
    document.set_defaults(handler=cmd_verify_document)

    def document_limits(sub: argparse.ArgumentParser) -> None:
        """How documents are read (``io.load_pages``): PDF resolution and the page limit."""
        sub.add_argument("--dpi", type=int, default=PDF_DPI, help=f"PDF rasterisation resolution (default {PDF_DPI})")
        sub.add_argument("--max-pages", type=int, default=DEFAULT_MAX_PAGES,
                         help=f"refuse documents with more pages (default {DEFAULT_MAX_PAGES})")

    index = commands.add_parser(
        "index", help="index documents (pages, multi-page TIFFs, PDFs) into a searchable library",
        description="Detect, tag, crop, clean and embed every signature of every document into LIB (SQLite). "
        "Each document is one transaction: an interrupted run keeps what it finished; a rerun skips it.")
    index.add_argument("paths", nargs="+", metavar="DIR", help="folders (searched recursively) or document files")
    index.add_argument("--library", required=True, help="library file (SQLite; created if missing)")
    document_limits(index)
    index.add_argument("--json", action="store_true", help="one JSON object per document")
    index.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    models(index, detector=True)
    index.set_defaults(handler=cmd_index)

    serve = commands.add_parser(
        "serve", help="SignVer Studio: the HTTP API and the web page (needs the serve extra)",
        description="Serve the models over HTTP (FastAPI + uvicorn): the page at /, the API under /api, OpenAPI docs "
        "at /docs. Binds to 127.0.0.1; elsewhere, writes need --token (or $SIGNVER_TOKEN).")
    serve.add_argument("--gallery", help="gallery of enrolled people (SQLite; created on first enrolment)")
    serve.add_argument("--library", help="document library (SQLite; created if missing)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="processes, each with its own models (default 1)")
    serve.add_argument("--token", help="token that writes (enrol, delete, index) must carry")
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload per file (default 20 MB)")
    document_limits(serve)
    checkpoints(serve, detector=True)
    serve.set_defaults(handler=cmd_serve)

    bench = commands.add_parser(
        "benchmark", help="measure train and inference throughput on cpu, gpu or hpu",
        description="Throughput of detector, cleaner and extractor (synthetic fixed-shape inputs, warm-up excluded, "
        "device synchronised before each clock read); raw PyTorch loop and Lightning Trainer paths.",
    )
    bench.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu", "hpu", "auto"))
    bench.add_argument("--recipe", help="recipe each module is configured by: a name (cpu, gpu, hpu, ...) or a path "
                       "(default: the accelerator's, recipes/<module>/<accelerator>.yaml)")
    bench.add_argument("--precision", choices=("fp32", "bf16-mixed"), help="default: the recipe's")
    bench.add_argument("--batch-size", type=int, help="images per step (default: the recipe's)")
    bench.add_argument("--steps", type=int, default=10, help="timed steps per configuration (default 10)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default 3)")
    bench.add_argument("--compile", action="store_true", help="torch.compile (hpu_backend on HPU)")
    bench.add_argument("--models", nargs="+", choices=[name for name, task in training_tasks().items() if task.benchmark],
                       help="default: every module")
    bench.add_argument("--modes", nargs="+", default=["train", "inference"], choices=("train", "inference"))
    bench.add_argument("--paths", nargs="+", default=["raw", "lightning"], choices=("raw", "lightning"))
    bench.add_argument("--data", help="shared data folder, to also time each model's data pipeline (e.g. ../shared/data)")
    bench.add_argument("--out", default="benchmarks/results", help="folder for the JSON record file")
    bench.add_argument("--quiet", action="store_true")
    bench.set_defaults(handler=cmd_benchmark)

    clean = commands.add_parser(
        "clean", help="remove lines, text and noise from signature crops",
        description="Clean signature crops; writes OUT/<name>.png for each input (white paper, the ink kept).",
    )
    clean.add_argument("images", nargs="+", metavar="IMAGE", help="signature crops (any image format)")
    clean.add_argument("--out", required=True, help="folder for the cleaned PNGs")
    clean.add_argument("--checkpoint", default="default", help="shipped name or .safetensors path")
    clean.add_argument("--device", help="cpu, cuda, ... (default: the best present)")
    clean.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    clean.set_defaults(handler=cmd_clean)

    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``signver`` console script; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra  # `signver train` passes them on to LightningCLI
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("signver: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `signver info | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except SignVerError as error:
        if args.debug:
            raise
        print(f"signver: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:  # an unexpected failure still gets one line, with a way to see more
        if args.debug:
            raise
        print(
            f"signver: internal error: {type(error).__name__}: {_one_line(error)} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
