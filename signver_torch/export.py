"""``signver export``: a checkpoint's network as an ONNX graph (or an OpenVINO IR), with its export card and an accuracy check.

Each facade declares what it exports (:meth:`~signver_torch.facade.ModelFacade.graph`): the part of
inference between the host's preprocessing and its last step, with as much of both inside the graph
as exports cleanly (the cleaner's tone curve, the detector's box decoding and class probabilities).
The graph is exported with the torch.export-based exporter (``torch.onnx.export(dynamo=True)``), the
batch dimension dynamic. The OpenVINO format is that ONNX graph converted by OpenVINO's own converter
(``openvino.convert_model``, saved by ``openvino.save_model`` with fp32 weights); an ONNX export of the same
checkpoint and opset already in the folder is converted rather than exported again. Before anything is
written, the same facade is loaded under the format's backend from the new graph and compared with torch
on real images; a graph that disagrees beyond the module's tolerance is refused
(:class:`~signver_torch.errors.ExportError`) and nothing is written.

An OpenVINO graph may run in bf16 (``precision``): the same IR compiled by the CPU plugin with bf16
inference precision, on CPUs that have it. ``"auto"`` checks bf16 first and keeps it where it passes the same
check on this CPU, else fp32; the card names the precision and, where bf16 was refused, its figures.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from signver_torch.cards import FACADES, sha256_file
from signver_torch.checkpoints import background_path, checkout_dir, resolve_checkpoint
from signver_torch.errors import ExportError, SignVerError
from signver_torch.facade import ExportGraph, ModelFacade
from signver_torch.runtime import (EXPORT_SCHEMA, FORMATS, NAMED_ONLY_PRECISIONS, OPSET, PRECISIONS, companion_files, export_files,
                                   exported_formats, import_runtime, is_export, read_export_card)

#: Agreement each module's graph must reach with torch on the check images (issue 34's tolerances).
TOLERANCES = {"max_cosine_distance": 1e-3, "min_iou": 0.98, "min_psnr_db": 50.0}
#: An int8 graph's: embeddings within 0.05 cosine (0.005 measured on the check images); boxes scoring 0.1 above the
#: threshold on either side matched with IoU >= 0.8. Its verdicts are judged by their EER and AP (README, "Exported
#: backends"), not by agreement to fp32 rounding.
INT8_TOLERANCES = {**TOLERANCES, "max_cosine_distance": 0.05, "min_iou": 0.8, "sure_margin": 0.1}
#: The modules an int8 export is measured for, each facade saying how (``calibration_inputs``, ``graph()``'s
#: ``quantized_ops`` and ``float_weights``); the cleaner's output is an image, not measured in int8.
INT8_MODULES = ("extractor", "detector")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def default_check_images() -> list[Path]:
    """The checkout's fixture samples (three CEDAR signatures, a crop on ruled lines, two pages)."""
    folder = checkout_dir("tests")
    images = sorted(p for p in (folder / "data" / "samples").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder else []
    if not images:
        raise SignVerError("no check images: outside a source checkout, give --check-images (signatures and pages)")
    return images


def facade_class(module: str) -> type[ModelFacade]:
    if module not in FACADES:
        raise SignVerError(f"unknown module {module!r}; exportable: {', '.join(FACADES)}")
    path, name = FACADES[module]
    return getattr(importlib.import_module(path), name)


def _agreement(module: str, reference: ModelFacade, exported: ModelFacade, images: Sequence[Path],
               tolerances: dict[str, float] = TOLERANCES) -> dict[str, Any]:
    """How closely the exported backend reproduces torch on ``images``, in the module's own terms."""
    inputs = [str(path) for path in images]
    if module == "extractor":
        first, second = reference.extract(inputs), exported.extract(inputs)  # type: ignore[attr-defined]
        distance = float((1 - (first * second).sum(1)).max())
        return {"max_cosine_distance": distance, "n_signatures": len(inputs), "passed": distance <= tolerances["max_cosine_distance"]}
    if module == "detector":
        sure = reference.score_threshold + tolerances["sure_margin"] if "sure_margin" in tolerances else None  # type: ignore[attr-defined]
        return detection_agreement(reference.predict(inputs), exported.predict(inputs), tolerances["min_iou"], sure)  # type: ignore[attr-defined]
    for cleaner in (reference, exported):  # the graph checked at the check images' own sizes, not at the pipeline's bound
        cleaner.max_side = None  # type: ignore[attr-defined]
    first, second = reference.clean(inputs), exported.clean(inputs)  # type: ignore[attr-defined]
    psnr = min(psnr_db(a, b) for a, b in zip(first, second))
    return {"min_psnr_db": psnr, "max_abs_difference": float(max(np.abs(a - b).max() for a, b in zip(first, second))),
            "n_crops": len(inputs), "passed": psnr >= TOLERANCES["min_psnr_db"]}


def psnr_db(first: np.ndarray, second: np.ndarray) -> float:
    """PSNR of two images in [0, 1] (capped at 100 dB for identical ones)."""
    mse = float(np.mean((np.asarray(first, np.float64) - np.asarray(second, np.float64)) ** 2))
    return 100.0 if mse <= 1e-10 else float(10 * np.log10(1.0 / mse))


def detection_agreement(reference: Sequence[dict[str, torch.Tensor]], other: Sequence[dict[str, torch.Tensor]],
                        min_iou: float = TOLERANCES["min_iou"], sure: float | None = None) -> dict[str, Any]:
    """Per page the same number of detections, each torch box matched by a box of its class with IoU >= ``min_iou``.

    With ``sure`` (a score), only the boxes scoring at least ``sure`` on either side must be matched by one of the
    other side's: an int8 graph moves the scores of boxes near the threshold in and out of the kept ones."""
    from torchvision.ops import box_iou

    worst, boxes, counts_equal = 1.0, 0, True
    for first, second in zip(reference, other):
        if sure is None:
            counts_equal &= len(first["boxes"]) == len(second["boxes"])
        for found, other_found in [(first, second)] if sure is None else [(first, second), (second, first)]:
            keep = torch.ones_like(found["scores"], dtype=torch.bool) if sure is None else found["scores"] >= sure
            kept, labels = found["boxes"][keep], found["labels"][keep]
            boxes += len(kept)
            if len(kept) and len(other_found["boxes"]):
                same_class = labels[:, None] == other_found["labels"][None, :]
                worst = min(worst, float((box_iou(kept, other_found["boxes"]) * same_class).max(1).values.min()))
            elif len(kept):
                worst = 0.0
    return {"min_iou": worst, "n_boxes": boxes, "n_pages": len(reference), "same_counts": bool(counts_equal),
            **({"sure_score": sure} if sure is not None else {}), "passed": bool(counts_equal and worst >= min_iou)}


def export_module(
    module: str,
    checkpoint: str | os.PathLike = "default",
    out: str | os.PathLike = "export",
    fmt: str = "onnx",
    check_images: Sequence[str | os.PathLike] | None = None,
    opset: int = OPSET,
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
    precision: str = "auto",
    calibration: Sequence[str | os.PathLike] | None = None,
) -> Path:
    """Export ``module``'s ``checkpoint`` in format ``fmt`` into the folder ``out`` (``<module>.onnx`` and
    ``<module>.json``; ``<module>.xml``, ``<module>.bin`` and ``<module>.openvino.json``); returns the graph's
    path. ``out`` may hold other modules' and formats' exports: only this module's files in ``fmt`` are replaced.
    ``precision``: one of the format's :data:`~signver_torch.runtime.PRECISIONS`, or ``"auto"``: the lowest
    that passes the check on this CPU, int8 aside (:data:`~signver_torch.runtime.NAMED_ONLY_PRECISIONS`). ``int8``
    (the extractor or detector in ONNX) quantises the graph with onnxruntime, calibrated on up to the facade's
    ``int8_calibration_count`` of ``calibration``: signature scans, or pages.

    Raises:
        ExportError: the exporter failed, or the graph disagrees with torch on the check images.
    """
    if fmt not in FORMATS:
        raise SignVerError(f"unknown export format {fmt!r} (this version writes: {', '.join(FORMATS)})")
    if precision != "auto" and precision not in PRECISIONS[fmt]:
        raise SignVerError(f"format {fmt!r} runs in {', '.join(PRECISIONS[fmt])}, not {precision!r}")
    candidates = ([p for p in PRECISIONS[fmt][::-1] if p not in NAMED_ONLY_PRECISIONS] if precision == "auto"
                  else [precision])  # lowest first
    if "int8" in candidates:
        if module not in INT8_MODULES:
            raise SignVerError(f"int8 is measured for the {' and '.join(INT8_MODULES)} only, not the {module}; export the "
                               f"{module} in fp32")
        if not calibration:
            raise SignVerError("an int8 export needs calibration inputs (--calibration-data): signature scans or pages "
                               "like the ones it will see")
    backend = FORMATS[fmt].backend
    import_runtime(backend)  # the check runs the graph: refuse before spending a minute exporting
    say = progress or (lambda message: None)
    images = [Path(p) for p in check_images] if check_images else default_check_images()
    for path in images:
        if not path.is_file():
            raise SignVerError(f"{path}: check image not found")
    cls = facade_class(module)
    source = resolve_checkpoint(module, checkpoint)
    reference = cls(device="cpu").load(source.weights)
    graph = reference.graph()
    out = Path(out)
    _refuse_another_source(out, module, fmt, reference)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{module}-", dir=out) as staging:
        onnx_path = export_files(staging, module)[0]
        graph_path, card_path = export_files(staging, module, fmt)
        started = time.perf_counter()
        reused = fmt != "onnx" and _reuse_onnx(out, module, reference, opset, onnx_path)
        if not reused:
            say(f"exporting the {module} ({source.weights.name}) to ONNX opset {opset}")
            _torch_export(graph, onnx_path, opset)
        exporter = "torch.onnx.export(dynamo=True)"
        quantization = None
        if candidates == ["int8"]:
            say("quantising the graph to int8 on its calibration inputs")
            quantization = _quantize_int8(onnx_path, reference, graph, calibration)  # type: ignore[arg-type]
            exporter += ", then onnxruntime.quantization.quantize_static"
        if fmt == "openvino":
            say(f"converting the {module}'s ONNX graph with openvino.convert_model")
            _openvino_convert(onnx_path, graph_path)
            exporter += ", then openvino.convert_model and openvino.save_model(compress_to_fp16=False)"
        seconds = time.perf_counter() - started
        if background_path(source.weights).is_file():  # the extractor's per-person rule reads it beside the graph
            shutil.copyfile(background_path(source.weights), background_path(onnx_path))
        card = {
            "schema": EXPORT_SCHEMA, "module": module, "format": fmt, "file": graph_path.name, "sha256": sha256_file(graph_path),
            "companions": {path.name: sha256_file(path) for path in companion_files(graph_path, fmt)},
            "opset": opset, "exporter": exporter, "onnx": {"sha256": sha256_file(onnx_path), "reused": reused},
            "input": {"name": graph.input_name, "dynamic_axes": {str(axis): {"name": name, "multiple": multiple}
                                                                  for axis, (name, multiple) in graph.dynamic_axes.items()}},
            "outputs": graph.output_names, "graph": graph.fields,
            "source": {"checkpoint": str(checkpoint), "sha256": reference.sha256, "card": reference.card},
            **({"quantization": quantization} if quantization else {}),
            "command": command, "export_seconds": round(seconds, 1),
            "versions": _versions(backend), "host": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        card["check"], card["precision"], rejected = _checked_precision(module, cls, reference, staging, card, card_path, images,
                                                                         candidates, say)
        if rejected:
            card["rejected_precisions"] = rejected
        card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        for staged in (graph_path, *companion_files(graph_path, fmt), background_path(onnx_path), card_path):
            if staged.is_file():
                os.replace(staged, out / staged.name)
    return export_files(out, module, fmt)[0]


def _checked_precision(module: str, cls: type[ModelFacade], reference: ModelFacade, staging: str, card: dict[str, Any],
                       card_path: Path, images: Sequence[Path], candidates: Sequence[str],
                       say: Callable[[str], None]) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The first of ``candidates`` in which the staged graph, run as its card says, agrees with torch on ``images``
    (a precision this CPU would not run, fp32 in its place, is skipped): its check, its name and the checks of
    those refused before it; an :class:`ExportError` when none passes."""
    rejected: dict[str, Any] = {}
    for precision in candidates:
        card["precision"] = precision
        card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        exported = cls(backend=FORMATS[card["format"]].backend).load(staging)
        if exported.precision != precision:
            rejected[precision] = {"passed": False, "reason": f"this CPU runs the graph in {exported.precision}"}
            continue
        say(f"checking the graph ({precision}) against torch on {len(images)} images")
        tolerances = INT8_TOLERANCES if precision == "int8" else TOLERANCES
        check = _agreement(module, reference, exported, images, tolerances)
        check["images"] = [{"file": path.name, "sha256": sha256_file(path)} for path in images]
        check["tolerances"] = tolerances
        if check["passed"]:
            return check, precision, rejected
        rejected[precision] = check
    if all("reason" in check for check in rejected.values()):  # none could be checked on this CPU
        reasons = "; ".join(f"{precision}: {check['reason']}" for precision, check in rejected.items())
        raise ExportError(f"{module}: no precision asked for runs on this CPU ({reasons}); export with --precision fp32 or auto")
    figures = "; ".join(f"{precision}: " + ", ".join(f"{key} {value}" for key, value in check.items()
                                                     if key not in ("images", "tolerances"))
                        for precision, check in rejected.items())
    raise ExportError(f"{module}: the exported graph disagrees with torch on the check images ({figures}); nothing written")


def _same_source(card: dict[str, Any], reference: ModelFacade) -> bool:
    """Whether an export card's source is ``reference``'s checkpoint: the same weights and the same card (a
    calibration changes what a graph bakes in, such as the cleaner's tone curve)."""
    return card["source"].get("sha256") == reference.sha256 and card["source"].get("card") == reference.card


def _refuse_another_source(out: Path, module: str, fmt: str, reference: ModelFacade) -> None:
    """Refuse ``out`` where it holds ``module`` in another format from another checkpoint or card: ``auto`` would
    run that one, and the extractor's background bank beside them is shared."""
    for other in exported_formats(out, module):
        try:
            card = read_export_card(out, module, other)
        except ExportError:
            continue  # a broken export of another format: loading it fails on its own
        if other != fmt and not _same_source(card, reference):
            raise ExportError(f"{out}: holds a {other} export of the {module} from another checkpoint or card "
                              f"({card['source'].get('checkpoint')}); export into another folder, or remove it first")


def _reuse_onnx(out: Path, module: str, reference: ModelFacade, opset: int, target: Path) -> bool:
    """Copy ``out``'s checked ONNX export of the same checkpoint and opset to ``target`` (a second format costs no
    second torch export); whether there was one."""
    if not is_export(out, module):
        return False
    try:
        card = read_export_card(out, module)
    except ExportError:
        return False
    if not _same_source(card, reference) or card.get("opset") != opset or card.get("precision", "fp32") != "fp32":
        return False
    shutil.copyfile(export_files(out, module)[0], target)
    return True


def _quantize_int8(onnx_path: Path, reference: ModelFacade, graph: ExportGraph, calibration: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Quantise the graph in place (onnxruntime's static QDQ: int8 weights per channel, uint8 activations, min-max
    ranges) on what the host feeds it (:meth:`~signver_torch.facade.ModelFacade.calibration_inputs`) for a seeded draw
    of ``calibration``, the operators and float layers ``graph`` names; what the card records."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    files = [Path(path) for path in calibration]
    chosen = sorted(np.random.default_rng(0).choice(len(files), min(len(files), reference.int8_calibration_count), replace=False))
    inputs = reference.calibration_inputs([files[i] for i in chosen])

    class Inputs(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{graph.input_name: inputs[i : i + 8]} for i in range(0, len(inputs), 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    prepared = onnx_path.with_name("prepared.onnx")
    try:
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        shapes = {tensor.name: tuple(tensor.dims) for tensor in model.graph.initializer}
        excluded = [node.name for node in model.graph.node
                    if node.op_type == "Conv" and len(node.input) > 1 and shapes.get(node.input[1]) in graph.float_weights]
        quantize_static(str(prepared), str(onnx_path), Inputs(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=excluded, op_types_to_quantize=graph.quantized_ops)
    except Exception as error:  # the quantiser's own error types; one line for the command
        raise ExportError(f"onnxruntime quantisation failed ({type(error).__name__}: {str(error).splitlines()[0]})") from error
    finally:
        prepared.unlink(missing_ok=True)
    return {"method": "onnxruntime.quantization.quantize_static: QDQ, int8 weights per channel, uint8 activations, MinMax",
            "quantised": ", ".join(graph.quantized_ops) if graph.quantized_ops else "every operator onnxruntime quantises",
            "kept_float": f"{len(excluded)} output convolutions" if excluded else "nothing",
            "n_inputs": int(len(inputs)), "seed": 0,
            "files": [{"file": str(files[i]), "sha256": sha256_file(files[i])} for i in chosen]}


def _openvino_convert(onnx_path: Path, xml_path: Path) -> None:
    """The ONNX graph as OpenVINO IR (``.xml`` + ``.bin``), weights kept in fp32 (the check's tolerances are fp32's)."""
    ov = import_runtime("openvino")
    try:
        ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    except Exception as error:  # the converter's own error types; one line for the command
        raise ExportError(f"openvino.convert_model failed ({type(error).__name__}: {str(error).splitlines()[0]})") from error


def _torch_export(graph: Any, path: Path, opset: int) -> None:
    from torch.export import Dim

    dims = {axis: (Dim(name, min=1) if multiple == 1 else multiple * Dim(name, min=1, max=4096))
            for axis, (name, multiple) in graph.dynamic_axes.items()}
    try:
        torch.onnx.export(graph.module.eval(), (graph.example,), str(path), dynamo=True, opset_version=opset,
                          input_names=[graph.input_name], output_names=graph.output_names,
                          dynamic_shapes=(dims,), external_data=False, verbose=False)
    except Exception as error:  # the exporter's own error types; one line for the command
        raise ExportError(f"torch.onnx.export failed ({type(error).__name__}: {str(error).splitlines()[0]})") from error


def _versions(backend: str) -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "torch": torch.__version__, backend: import_runtime(backend).__version__}
    try:
        import onnx

        versions["onnx"] = onnx.__version__
    except ImportError:
        pass
    return versions
