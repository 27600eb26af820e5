"""``signver export``: a module's checkpoint as an ONNX graph or an OpenVINO IR with its export card (``export.py``)."""

from __future__ import annotations

import argparse
import shlex
import sys

from signver_torch.cards import MODULES
from signver_torch.cli.options import quiet_flag


def cmd_export(args: argparse.Namespace) -> int:
    """Export, check against torch, write; one line naming the graph and the check it passed."""
    from signver_torch.export import export_module
    from signver_torch.runtime import export_files, read_export_card

    command = "signver " + " ".join(shlex.quote(arg) for arg in args.argv)
    calibration = None
    if args.calibration_data and args.module == "detector":
        from signver_torch.data.detection import read_detection_dataset, split_pages

        every = args.calibration_held_out_every
        calibration = [page.path for folder in args.calibration_data for page in
                       (split_pages(read_detection_dataset(folder), every)[0] if every else read_detection_dataset(folder))]
    elif args.calibration_data:
        from signver_torch.data.signatures import discover_signatures

        calibration = [record.path for record in discover_signatures(args.calibration_data, args.calibration_writers)]
    path = export_module(args.module, args.checkpoint, args.out, args.format, args.check_images, args.opset, command,
                         progress=None if args.quiet else (lambda text: print(text, file=sys.stderr)), precision=args.precision,
                         calibration=calibration)
    card = read_export_card(path, args.module, args.format)
    print(f"wrote {path} and {export_files(path, args.module, args.format)[1].name} (runs in {card['precision']}, checked "
          "against torch)")
    return 0


def add_export(commands: argparse._SubParsersAction) -> None:
    from signver_torch.runtime import FORMATS, OPSET, PRECISIONS

    sub = commands.add_parser(
        "export", help="export a module's network for a lean runtime (ONNX for onnxruntime, or OpenVINO IR)",
        description="Write <module>.onnx and its export card <module>.json (--format openvino: <module>.xml, "
        "<module>.bin and <module>.openvino.json, converted from the ONNX graph by OpenVINO) into --out: dynamic "
        "batch, the opset and shapes stated, the source checkpoint's sha256 and card, this command, and the accuracy "
        "check against torch on --check-images it passed (a graph that fails it is not written). Load it with "
        "backend='onnxruntime' or 'openvino' (or 'auto').",
    )
    sub.add_argument("module", choices=MODULES)
    sub.add_argument("--format", default="onnx", choices=tuple(FORMATS),
                     help="onnx (default; the [onnx] extra) or openvino (the [onnx] and [openvino] extras)")
    sub.add_argument("--out", required=True, help="folder to write into (other modules' exports in it are kept)")
    sub.add_argument("--checkpoint", default="default", help="shipped name or .safetensors path (default: default)")
    sub.add_argument("--check-images", nargs="+", metavar="IMG",
                     help="images the graph is checked on against torch (default: the checkout's tests/data/samples)")
    sub.add_argument("--precision", default="auto", choices=("auto", *sorted({p for ps in PRECISIONS.values() for p in ps})),
                     help="what the graph runs in: auto (default): bf16 where the format runs it (openvino) and it passes "
                     "the check on this CPU, else fp32; fp32; bf16 (openvino, on CPUs with AVX512-BF16 or AMX); int8 (the "
                     "extractor or detector in onnx, quantised by onnxruntime on --calibration-data; never chosen by auto)")
    sub.add_argument("--calibration-data", nargs="+", metavar="DIR",
                     help="what an int8 export is calibrated on: the extractor, signature folders (CEDAR or writer-folder "
                     "layout) of writers it will not be measured on; the detector, labelled page folders (YOLO, COCO or "
                     "SignVerOD), their training pages")
    sub.add_argument("--calibration-writers", metavar="SPEC", help="extractor: only these writers of --calibration-data "
                     "(as --train-writers), e.g. cedar:1-32,dutch:001-036")
    sub.add_argument("--calibration-held-out-every", type=int, default=3, metavar="N",
                     help="detector: leave out every N-th page by file name, the pages `signver evaluate detector "
                     "--held-out-every N` scores (default 3; 0: every page)")
    sub.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default: {OPSET})")
    quiet_flag(sub, "no progress on stderr")
    sub.set_defaults(handler=cmd_export)
