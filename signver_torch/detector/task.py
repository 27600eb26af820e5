"""The detector's training task: export, then the metrics of ``signver evaluate detector`` on the
held-out real pages when the recipe has real pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from signver_torch.errors import SignVerError
from signver_torch.tasks import BenchmarkSpec, ModuleCommand, TrainingTask, register_task


def export_detector(
    module: Any, data: Any, trainer: Any, seconds: float, config: Path, out: Path, argv: Sequence[str] | None
) -> tuple[Path, dict[str, Any]]:
    """Export the final weights with their card, evaluate on the held-out real pages."""
    from signver_torch.checkpoints import update_card
    from signver_torch.data.detection import CLASS_NAMES
    from signver_torch.detector.evaluation import evaluate_detector
    from signver_torch.training import export_checkpoint, recipe_command, run_record

    hp = data.hparams
    card = {
        "module": "detector",
        "architecture": module.architecture,
        "classes": {str(label): name for label, name in CLASS_NAMES.items()},
        "input": f"RGB or grayscale page of any size, letterboxed to {module.architecture['image_size']} px (white padding)",
        "training": {
            "signatures": f"{hp.signatures_dir} writers {hp.train_writers} pasted on {hp.synthetic_pages} synthetic pages",
            "real_pages": str(hp.real_dir) if hp.real_dir else None,
            "real_split": (f"{len(data.real_train)} pages trained on, {len(data.real_val)} held out "
                           f"(1 in {hp.held_out_every} by file name)") if hp.real_dir else None,
            "init": module.hparams.init,
            "init_sha256": module.init_card.get("sha256") if module.hparams.init else None,
            # how the starting checkpoint was itself trained: the chain that reproduces this one
            "init_recipe_command": module.init_card.get("recipe_command") if module.hparams.init else None,
            "init_backbone": None if module.hparams.init else module.hparams.init_backbone,
            "init_backbone_sha256": None if module.hparams.init else module.init_card.get("sha256"),
            "epochs": trainer.current_epoch,
            "recipe": str(config),
            # the last epoch's validation on synthetic pages of the held-out writers: the only figures for
            # initials, redactions and dates, which the real pages do not label
            "synthetic_validation": {key.removeprefix("val_synthetic_"): round(float(value), 4)
                                     for key, value in trainer.callback_metrics.items() if key.startswith("val_synthetic_")},
        },
        **run_record(trainer, seconds, argv),
    }
    weights = export_checkpoint(out, module.model.eval().cpu(), card)
    metrics_command = ["evaluate", "detector", "--checkpoint", str(weights), "--json"]
    if hp.real_dir:
        metrics = evaluate_detector(hp.real_dir, weights, held_out_every=hp.held_out_every)
        metrics_command[2:2] = ["--data", str(hp.real_dir), "--held-out-every", str(hp.held_out_every)]
        card = update_card(weights, metrics={k: v for k, v in metrics.items() if k.startswith(("map", "n_", "seconds"))},
                           metrics_command=recipe_command(metrics_command))
    return weights, card


def summary(card: dict[str, Any]) -> str:
    metrics = card.get("metrics", {})
    return ("held-out real pages: "
            + (f"mAP@0.5 {metrics['map50']:.3f}, mAP {metrics['map']:.3f}" if metrics else "none in this recipe"))


def evaluate(args: Any) -> dict[str, Any]:
    """``signver evaluate detector``: mAP, and recall and precision at the checkpoint's score threshold, on
    labelled pages (several folders: per folder and pooled)."""
    from signver_torch.data.detection import parse_class_map
    from signver_torch.detector.evaluation import evaluate_detector, evaluate_detector_sets

    if isinstance(args.data, list):
        if args.class_map or args.errors:
            raise SignVerError("--class-map and --errors take one --data folder (with several, synthetic folders are "
                               "read by their own classes)")
        return evaluate_detector_sets(args.data, args.checkpoint, held_out_every=args.held_out_every, progress=not args.quiet,
                                      backend=args.backend)
    return evaluate_detector(args.data, args.checkpoint, class_map=parse_class_map(args.class_map),
                             held_out_every=args.held_out_every, progress=not args.quiet, errors_dir=args.errors,
                             backend=args.backend)


def calibrate(args: Any) -> str:
    """``signver calibrate detector``: the signature score threshold, chosen on the held-out real pages
    (and synthetic family folders), written into the card."""
    from signver_torch.detector.calibration import HELD_OUT_EVERY, calibrate_detector

    card = calibrate_detector(args.data, args.checkpoint, target_precision=args.target_precision,
                              target_recall=args.target_recall, progress=not args.quiet,
                              held_out_every=HELD_OUT_EVERY if args.held_out_every is None else args.held_out_every)
    chosen = card["score_threshold_calibration"]
    signature = chosen["signature"]
    return (f"score threshold {card['score_threshold']:.4f} ({chosen['rule']}) on {chosen['n_pages']} pages, "
            f"{signature['marks']} signatures: recall {signature['recall']:.2%}, precision {signature['precision']:.2%}, "
            f"F1 {signature['f1']:.3f}; written into {args.checkpoint}")


def benchmark_batch(data: dict[str, Any], batch_size: int) -> tuple[Any, Any]:
    """Pages of the recipe's size with three marks each: padded to ``max_boxes`` when the recipe pads
    (``PaddedTargets``), else torchvision's lists, as ``PageDataModule`` yields them."""
    import torch

    from signver_torch.detector.data import PaddedTargets

    size = int(data["image_size"])
    generator = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.3], [0.55, 0.6, 0.7, 0.65], [0.1, 0.8, 0.3, 0.85]]) * size
    pages = [(torch.rand(3, size, size, generator=generator), {"boxes": boxes, "labels": torch.tensor([1, 2, 4])})
             for _ in range(batch_size)]
    if data.get("max_boxes"):
        return PaddedTargets(int(data["max_boxes"]))(pages)
    images, targets = zip(*pages)
    return list(images), list(targets)


def loading_rate(data_dir: Path, batch_size: int, data: dict[str, Any]) -> float:
    """Pages/s of the synthetic page generator at the recipe's size, on real signatures' ink."""
    from signver_torch.benchmark import items_per_second, loading_records
    from signver_torch.data.ink import load_ink_maps
    from signver_torch.detector.data import SyntheticPages
    from signver_torch.detector.pages import PageConfig

    maps = load_ink_maps(loading_records(data_dir)[:8], progress=False)
    return items_per_second(SyntheticPages(maps, batch_size * 5, config=PageConfig(size=int(data["image_size"]))))


TASK = register_task(TrainingTask(
    name="detector",
    lightning_module="signver_torch.detector.lit:DetectorModule",
    data_module="signver_torch.detector.data:PageDataModule",
    export=export_detector,
    summary=summary,
    data_argument="real_dir",
    several_data=False,
    evaluate=ModuleCommand(evaluate, ("class_map", "held_out_every", "errors"), several_data=True),
    calibrate=ModuleCommand(calibrate, ("held_out_every", "target_precision", "target_recall"), several_data=True),
    benchmark=BenchmarkSpec(benchmark_batch, lambda data: int(data["batch_size"]),
                            lambda data: [3, int(data["image_size"]), int(data["image_size"])], loading_rate=loading_rate),
))
