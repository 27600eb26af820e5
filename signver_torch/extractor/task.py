"""The extractor's training task: export with the projection fitted on the training writers and the
threshold on the held-out ones, then the metrics of ``signver evaluate extractor``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from signver_torch.tasks import TrainingTask, register_task

METRIC_KEYS = (
    "eer", "auc", "threshold_at_eer", "threshold", "far", "frr", "eer_random", "negatives",
    "n_writers", "n_pos", "n_neg", "signatures_per_second", "eer_ci", "per_source",
)


def export_extractor(
    module: Any, data: Any, trainer: Any, seconds: float, config: Path, out: Path, argv: Sequence[str] | None
) -> tuple[Path, dict[str, Any]]:
    """Export the final weights with their card, fit the projection on the training writers and the
    threshold on the held-out ones (:func:`~signver_torch.extractor.api.calibrate_extractor`), evaluate."""
    import torch

    from signver_torch.checkpoints import update_card
    from signver_torch.data.signatures import compact_writers, data_roots, data_text, writer_sort_key
    from signver_torch.extractor.api import calibrate_extractor, evaluate_extractor
    from signver_torch.metrics import writer_protocol_metrics
    from signver_torch.training import export_checkpoint, recipe_command, run_record

    canvases, labels = data.val_set.tensors
    model = module.export_model.eval().cpu()
    with torch.inference_mode():
        embeddings = torch.cat([model(chunk.float() / 255) for chunk in canvases.split(128)])
    calibration = writer_protocol_metrics(embeddings, labels // 2, labels % 2 == 1)
    train_writers = sorted({r.writer for r in data.train_records}, key=writer_sort_key)
    val_writers = sorted({r.writer for r in data.val_records}, key=writer_sort_key)
    card = {
        "module": "extractor",
        "architecture": module.architecture,
        "preprocessing": data.preprocessor.config(),
        "input": "grayscale crop of any size, dark ink on light paper; preprocessing above is applied",
        "threshold": calibration["threshold_at_eer"],
        "threshold_calibration": (
            f"cosine distance at the EER ({calibration['negatives']} forgeries) of the held-out writers "
            f"{compact_writers(val_writers)}, final epoch weights"
        ),
        "training": {
            "data": data_text(data.hparams.data_dir),
            "train_writers": compact_writers(train_writers),
            "val_writers": compact_writers(val_writers),
            "n_train_images": len(data.train_set),  # after blank scans were dropped
            "n_val_images": len(data.val_set),
            "init": module.hparams.init,
            "init_sha256": module.init_card.get("sha256"),
            "loss": module.hparams.loss,
            "epochs": trainer.current_epoch,
            "recipe": str(config),
        },
        **run_record(trainer, seconds, argv),
    }
    weights = export_checkpoint(out, model, card)
    if len(data.train_set) > model.embedding_dim:
        calibrate_extractor(data.hparams.data_dir, card["training"]["train_writers"], card["training"]["val_writers"], weights)
    else:  # a small fine-tuning set: too few signatures for the principal axes, the trained head stays
        update_card(weights, projection={"method": f"trained head (only {len(data.train_set)} training signatures: too few to fit)"})
    metrics = evaluate_extractor(data.hparams.data_dir, val_writers, weights, progress=True)
    card = update_card(
        weights,
        metrics={key: metrics[key] for key in METRIC_KEYS if key in metrics},
        metrics_command=recipe_command(
            ["evaluate", "extractor", "--data", *map(str, data_roots(data.hparams.data_dir)), "--writers", compact_writers(val_writers),
             "--checkpoint", str(weights), "--json"]
        ),
    )
    return weights, card


def summary(card: dict[str, Any]) -> str:
    metrics = card["metrics"]
    return (f"held-out writers {card['training']['val_writers']}: "
            f"EER {metrics['eer']:.2%} ({metrics['negatives']} forgeries), AUC {metrics['auc']:.3f}, "
            f"threshold {card['threshold']:.4f}")


TASK = register_task(TrainingTask(
    name="extractor",
    lightning_module="signver_torch.extractor.lit:ExtractorModule",
    data_module="signver_torch.data.datamodule:SignatureDataModule",
    export=export_extractor,
    summary=summary,
))
