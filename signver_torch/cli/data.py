"""``signver synthesize``, ``signver mine``, ``signver detect`` and ``signver clean``: pages made, hard negatives
mined, marks found, crops cleaned."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from signver_torch.cli.options import checkpoint_option, device_option, quiet_flag
from signver_torch.detector.layouts import FAMILIES
from signver_torch.errors import SignVerError


def cmd_synthesize(args: argparse.Namespace) -> int:
    """Draw seeded synthetic pages (all four classes) into a YOLO folder the evaluate command reads, or synthetic
    writers into writer folders the extractor trains on."""
    if args.kind == "writers":
        return _synthesize_writers(args)
    if not args.data:
        raise SignVerError("signver synthesize pages needs --data: the signatures to paste")
    from signver_torch.data.detection import SYNTHESIS_RECORD
    from signver_torch.data.ink import load_ink_maps
    from signver_torch.data.signatures import discover_signatures
    from signver_torch.detector.data import YOLO_CLASS_MAP, SyntheticPages, write_yolo_pages
    from signver_torch.cli.options import data_argument
    from signver_torch.detector.pages import PageConfig

    if args.pages < 1:
        raise SignVerError(f"--pages must be at least 1, not {args.pages}")
    if not 0 <= args.photo <= 1:
        raise SignVerError(f"--photo must be a share between 0 and 1, not {args.photo}")
    records = discover_signatures(data_argument(args.data), args.writers or None)
    config = PageConfig(size=args.size, layouts={args.layout: 1.0}, photo_rate=args.photo)
    pages = SyntheticPages(load_ink_maps(records, progress=not args.quiet), args.pages, args.seed, config)
    root = write_yolo_pages(pages, args.out, progress=not args.quiet)
    (root / SYNTHESIS_RECORD).write_text(json.dumps({"command": "signver " + shlex.join(args.argv)}) + "\n")
    print(f"wrote {args.pages} pages to {root}; score them with: signver evaluate detector --data {root} --class-map {YOLO_CLASS_MAP}")
    return 0


def _synthesize_writers(args: argparse.Namespace) -> int:
    from signver_torch.data.synthetic_writers import SyntheticWritersConfig, write_synthetic_writers

    config = SyntheticWritersConfig(writers=args.count, genuine=args.genuine, forged=args.forged, names=args.names,
                                    seed=args.seed)
    root = write_synthetic_writers(args.out, config, progress=not args.quiet, command="signver " + shlex.join(args.argv))
    print(f"wrote {args.count} synthetic writers to {root}; train on them with --data.data_dir {root}")
    return 0


def synthesis_command(data: str | list[str]) -> str | None:
    """The ``signver synthesize`` commands that made the data folders, joined by ``&&`` in the folders' order (a
    folder not synthesized adds none), or ``None`` when no folder says."""
    from signver_torch.data.detection import SYNTHESIS_RECORD

    made_by: list[str] = []
    for folder in [data] if isinstance(data, str) else data:
        record = Path(folder) / SYNTHESIS_RECORD
        if record.is_file():
            made_by.append(json.loads(record.read_text()).get("command"))
    return " && ".join(dict.fromkeys(command for command in made_by if command)) or None


def cmd_mine(args: argparse.Namespace) -> int:
    """Write the detector's confident false positives on the real training pages to a JSON file the
    detector's DataModule pastes (``negatives``)."""
    from signver_torch.detector.evaluation import mine_negatives
    from signver_torch.distributed import write_atomically

    if args.pages is not None and args.pages < 1:
        raise SignVerError(f"--pages must be at least 1, not {args.pages}")
    mined = mine_negatives(args.data, args.checkpoint, held_out_every=args.held_out_every, threshold=args.threshold,
                           pages=args.pages, device=args.device, progress=not args.quiet)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**mined, "command": "signver " + shlex.join(args.argv)}, indent=1) + "\n"
    write_atomically(out, lambda path: path.write_text(text))  # an interrupted run leaves the old file whole
    print(f"wrote {len(mined['negatives'])} negatives from {mined['n_pages']} training pages to {out}")
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
    bound = {} if args.max_side is None else {"max_side": args.max_side or None}  # 0: full resolution
    cleaner = Cleaner(device=args.device, **bound).load(args.checkpoint)
    cleaned = cleaner.clean_pages(pages, progress=not args.quiet)
    out.mkdir(parents=True, exist_ok=True)
    for name, page in zip(names, cleaned):
        target = out / f"{name}.png"
        Image.fromarray((page[0].numpy() * 255).round().astype("uint8")).save(target)
        print(target)
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    """Annotated PNG and JSON per page into ``--out``; ``--summary`` prints what each page holds."""
    from signver_torch.detector.api import Detector, draw_detections
    from signver_torch.detector.marks import summarize
    from signver_torch.detector.marks import detections
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
            "detections": [detection.as_dict() for detection in detections(found)],
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


def add_synthesize(commands: argparse._SubParsersAction) -> None:
    synthesize = commands.add_parser(
        "synthesize",
        help="draw seeded synthetic pages (signatures, initials, redactions, dates) into a YOLO folder, or synthetic "
        "writers (genuine signatures and imitations) into writer folders",
    )
    synthesize.add_argument("kind", choices=("pages", "writers"))
    synthesize.add_argument("--data", nargs="+", metavar="DIR",
                            help="pages: signatures to paste: CEDAR or writer-folder layout; several folders name writers by source")
    synthesize.add_argument("--writers", help="whose signatures, e.g. 33-40 or cedar:33-40,dutch:037-048 (default: all)")
    synthesize.add_argument("--layout", default="letter", choices=FAMILIES,
                            help="page family: letter (square, as the real pages), sheet (a grid of boxes to sign), form, "
                            "cheque, contract (default letter)")
    synthesize.add_argument("--photo", type=float, default=0.0, metavar="SHARE",
                            help="share of the pages photographed with a phone: perspective, light, shadow, blur, JPEG (default 0)")
    synthesize.add_argument("--pages", type=int, default=64, help="number of pages (default 64)")
    synthesize.add_argument("--seed", type=int, default=20261126, help="page i (writer w) is fixed by (seed, i) (default 20261126)")
    synthesize.add_argument("--size", type=int, default=640, help="page's longest side in pixels (default 640, as the "
                            "real pages; 3508 is A4 at 300 dpi)")
    synthesize.add_argument("--out", required=True, help="new or empty folder for images/ and labels/ (pages) or writer "
                            "folders (writers)")
    writers = synthesize.add_argument_group("writers")
    writers.add_argument("--count", type=int, default=1000, help="number of synthetic writers (default 1000)")
    writers.add_argument("--genuine", type=int, default=12, help="genuine signatures per writer (default 12)")
    writers.add_argument("--forged", type=int, default=6, help="imitations of each writer by others (default 6)")
    writers.add_argument("--names", type=int, default=250, help="size of the name pool the writers share: writers of "
                         "one name are same-text impostors (default 250)")
    quiet_flag(synthesize)
    synthesize.set_defaults(handler=cmd_synthesize)


def add_mine(commands: argparse._SubParsersAction) -> None:
    mine = commands.add_parser(
        "mine", help="list the detector's confident false positives on real training pages (hard negatives)",
        description="Run the detector over the real training pages (never the held-out ones) and write each "
        "signature detection that overlaps no labelled signature (IoU < 0.1) to a JSON file; the detector's "
        "training pastes them, unlabelled, on synthetic pages (--data.negatives, --data.negative_rate).",
    )
    mine.add_argument("kind", choices=("negatives",))
    mine.add_argument("--data", required=True, metavar="DIR", help="real labelled pages (YOLO, SignVerOD or COCO)")
    mine.add_argument("--held-out-every", type=int, default=3, metavar="N",
                      help="every N-th page by file name is held out and never read, as in the recipes (default 3)")
    mine.add_argument("--threshold", type=float, default=0.3, help="minimum score of a negative (default 0.3)")
    mine.add_argument("--pages", type=int, help="read only the first N training pages (default all)")
    mine.add_argument("--out", required=True, help="the JSON file to write")
    checkpoint_option(mine)
    device_option(mine)
    quiet_flag(mine)
    mine.set_defaults(handler=cmd_mine)


def add_detect(commands: argparse._SubParsersAction) -> None:
    detect = commands.add_parser(
        "detect", help="find signatures, initials, redactions and dates on pages",
        description="Detect on pages; writes OUT/<name>.png (boxes drawn) and OUT/<name>.json per page.",
    )
    detect.add_argument("pages", nargs="+", metavar="PAGE", help="page images (any format)")
    detect.add_argument("--out", required=True, help="folder for annotated PNGs and JSON")
    detect.add_argument("--summary", action="store_true", help="print per page whether it is signed, initialled, redacted, dated")
    detect.add_argument("--threshold", type=float, help="minimum score (default: the checkpoint's, chosen by `signver "
                        "calibrate detector`; 0.3 when its card has none)")
    checkpoint_option(detect)
    device_option(detect)
    detect.set_defaults(handler=cmd_detect)


def max_side_option(text: str) -> int:
    """``--max-side``: 0 (full resolution) or a bound of at least 8 pixels, checked before any image is read."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value != 0 and value < 8:
        raise argparse.ArgumentTypeError(f"must be 0 (full resolution) or at least 8 pixels, not {text!r}")
    return value


def add_clean(commands: argparse._SubParsersAction) -> None:
    clean = commands.add_parser(
        "clean", help="remove lines, text and noise from signature crops",
        description="Clean signature crops; writes OUT/<name>.png for each input (white paper, the ink kept).",
    )
    clean.add_argument("images", nargs="+", metavar="IMAGE", help="signature crops (any image format)")
    clean.add_argument("--out", required=True, help="folder for the cleaned PNGs")
    clean.add_argument("--max-side", type=max_side_option, default=None, metavar="PX",
                       help="clean crops larger than this on a downscaled copy and scale the result back (default: the "
                            "pipeline's bound, 384; 0: every crop at its own resolution)")
    checkpoint_option(clean)
    device_option(clean)
    quiet_flag(clean)
    clean.set_defaults(handler=cmd_clean)
