"""The cleaner's training task: export with the tone curve fitted on the training writers' pairs,
then the metrics of ``signver evaluate cleaner`` on pairs of the held-out writers."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from signver_torch.tasks import TrainingTask, register_task

METRIC_KEYS = ("psnr", "ssim", "ink_f1", "n_pairs", "pair_size", "seed", "seconds_per_image")


def export_cleaner(
    module: Any, data: Any, trainer: Any, seconds: float, config: Path, out: Path, argv: Sequence[str] | None
) -> tuple[Path, dict[str, Any]]:
    """Export the final weights with their card, fit their tone curve on the training writers' pairs,
    evaluate on synthetic pairs of the held-out writers."""
    from signver_torch.checkpoints import update_card
    from signver_torch.cleaner.api import calibrate_cleaner, evaluate_cleaner
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


TASK = register_task(TrainingTask(
    name="cleaner",
    lightning_module="signver_torch.cleaner.lit:CleanerModule",
    data_module="signver_torch.data.datamodule:CleanerDataModule",
    export=export_cleaner,
    summary=summary,
    fine_tunable=False,
))
