"""The cleaner's training task: export with the tone curve fitted on the training writers' pairs,
then the metrics of ``signver evaluate cleaner`` on pairs of the held-out writers."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from signver_torch.tasks import BenchmarkSpec, ModuleCommand, TrainingTask, register_task

METRIC_KEYS = ("psnr", "ssim", "ink_f1", "n_pairs", "pair_size", "seed", "seconds_per_image")


def export_cleaner(
    module: Any, data: Any, trainer: Any, seconds: float, config: Path, out: Path, argv: Sequence[str] | None
) -> tuple[Path, dict[str, Any]]:
    """Export the final weights with their card, fit their tone curve on the training writers' pairs,
    evaluate on synthetic pairs of the held-out writers."""
    from signver_torch.checkpoints import update_card
    from signver_torch.cleaner.evaluation import calibrate_cleaner, evaluate_cleaner
    from signver_torch.data.signatures import compact_writers, data_roots, data_text, writer_sort_key
    from signver_torch.training import export_checkpoint, recipe_command, run_record

    val_writers = compact_writers(sorted({r.writer for r in data.val_records}, key=writer_sort_key))
    card = {
        "module": "cleaner",
        "architecture": module.architecture,
        "input": "grayscale crop of any size >= 8x8 in [0, 1], dark ink on light paper",
        "output": "same size, white paper and the signature's ink: 1 - sigmoid(logits)",
        "dirt": asdict(data.dirt),
        "training": {
            "data": data_text(data.hparams.data_dir),
            "train_writers": compact_writers(sorted({r.writer for r in data.train_records}, key=writer_sort_key)),
            "val_writers": val_writers,
            "n_train_signatures": len(data.train_records),
            "pairs_seen": trainer.global_step * data.hparams.batch_size,
            "epochs": trainer.current_epoch,
            "recipe": str(config),
        },
        **run_record(trainer, seconds, argv),
    }
    weights = export_checkpoint(out, module.model.eval().cpu(), card)
    calibrate_cleaner(data.hparams.data_dir, card["training"]["train_writers"], weights, progress=True)
    metrics = evaluate_cleaner(data.hparams.data_dir, val_writers, weights, progress=True)
    card = update_card(
        weights,
        metrics={key: metrics[key] for key in METRIC_KEYS},
        metrics_command=recipe_command(
            ["evaluate", "cleaner", "--data", *map(str, data_roots(data.hparams.data_dir)), "--writers", val_writers,
             "--checkpoint", str(weights), "--json"]
        ),
    )
    return weights, card


def summary(card: dict[str, Any]) -> str:
    metrics = card["metrics"]
    return (f"pairs from held-out writers {card['training']['val_writers']}: "
            f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}, ink F1 {metrics['ink_f1']:.4f}")


#: Synthetic pairs ``evaluate cleaner`` and ``calibrate cleaner`` draw unless ``--pairs`` says otherwise.
DEFAULT_PAIRS = 256


def evaluate(args: Any) -> dict[str, Any]:
    """``signver evaluate cleaner``: PSNR/SSIM/ink F1 on seeded synthetic pairs of the writers' signatures."""
    from signver_torch.cleaner.evaluation import evaluate_cleaner

    return evaluate_cleaner(args.data, args.writers, args.checkpoint, n_pairs=args.pairs or DEFAULT_PAIRS,
                            backend=args.backend, progress=not args.quiet)


def calibrate(args: Any) -> str:
    """``signver calibrate cleaner``: the tone curve, fitted on the training writers' pairs."""
    from signver_torch.cleaner.evaluation import calibrate_cleaner
    from signver_torch.errors import SignVerError

    if not args.writers:
        raise SignVerError("calibrate cleaner needs --writers: the training writers whose pairs fit the tone curve")
    card = calibrate_cleaner(args.data, args.writers, args.checkpoint, n_pairs=args.pairs or DEFAULT_PAIRS,
                             progress=not args.quiet)
    values = card["tone_curve"]["values"]
    return (f"tone curve written into the card of {args.checkpoint}: output 0 -> {values[0]:.3f}, 0.5 -> "
            f"{values[len(values) // 2]:.3f}, 1 -> {values[-1]:.3f} (rerun `signver evaluate cleaner` for its metrics)")


def benchmark_batch(data: dict[str, Any], batch_size: int) -> tuple[Any, Any]:
    """A (dirty, clean) pair batch of the recipe's crop size, as ``CleanerDataModule`` yields it."""
    import torch

    generator = torch.Generator().manual_seed(0)
    dirty = torch.rand(batch_size, 1, data["height"], data["width"], generator=generator)
    return dirty, (dirty > 0.3).float()


def loading_rate(data_dir: Path, batch_size: int, data: dict[str, Any]) -> float:
    """Pairs/s of the synthetic dirt generator on real signatures' ink."""
    from signver_torch.benchmark import items_per_second, loading_records
    from signver_torch.cleaner.data import DirtConfig, DirtyPairs
    from signver_torch.data.ink import load_ink_maps

    maps = load_ink_maps(loading_records(data_dir)[:8], progress=False)
    return items_per_second(DirtyPairs(maps, batch_size * 5, config=DirtConfig(height=int(data["height"]), width=int(data["width"]))))


TASK = register_task(TrainingTask(
    name="cleaner",
    lightning_module="signver_torch.cleaner.lit:CleanerModule",
    data_module="signver_torch.cleaner.data:CleanerDataModule",
    export=export_cleaner,
    summary=summary,
    fine_tunable=False,
    evaluate=ModuleCommand(evaluate, ("writers", "pairs")),
    calibrate=ModuleCommand(calibrate, ("writers", "pairs")),
    benchmark=BenchmarkSpec(benchmark_batch, lambda data: int(data["batch_size"]),
                            lambda data: [1, int(data["height"]), int(data["width"])], loading_rate=loading_rate),
))
