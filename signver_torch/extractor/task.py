"""The extractor's training task: export with the projection fitted on the training writers and the
threshold on the held-out ones, then the metrics of ``signver evaluate extractor``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from signver_torch.tasks import BenchmarkSpec, ModuleCommand, TrainingTask, register_task

METRIC_KEYS = (
    "eer", "auc", "threshold_at_eer", "threshold", "far", "frr", "eer_random", "negatives",
    "n_writers", "n_pos", "n_neg", "signatures_per_second", "eer_ci", "per_source",
)


#: The card of a run without held-out writers until ``calibrate --out-of-fold`` sets its thresholds.
UNCALIBRATED = ("none yet: trained on every writer, none held out; fit the projection and set the thresholds with "
                "`signver calibrate extractor --writers <the training writers> --out-of-fold <crossval embed files of "
                "this recipe>`")


def export_extractor(
    module: Any, data: Any, trainer: Any, seconds: float, config: Path, out: Path, argv: Sequence[str] | None
) -> tuple[Path, dict[str, Any]]:
    """Export the final weights with their card, fit the projection on the training writers and the
    threshold on the held-out ones (:func:`~signver_torch.extractor.evaluation.calibrate_extractor`), evaluate."""
    import torch

    from signver_torch.checkpoints import read_card, update_card
    from signver_torch.extractor.data import NO_VALIDATION
    from signver_torch.data.signatures import compact_writers, data_roots, data_text, decode_labels, writer_sort_key
    from signver_torch.extractor.evaluation import calibrate_extractor, evaluate_extractor
    from signver_torch.metrics import writer_protocol_metrics
    from signver_torch.training import export_checkpoint, recipe_command, run_record

    model = module.export_model.eval().cpu()
    train_writers = sorted({r.writer for r in data.train_records}, key=writer_sort_key)
    val_writers = sorted({r.writer for r in data.val_records}, key=writer_sort_key)
    if val_writers:
        canvases, labels = data.val_set.tensors
        with torch.inference_mode():
            embeddings = torch.cat([model(chunk.float() / 255) for chunk in canvases.split(128)])
        calibration = writer_protocol_metrics(embeddings, *decode_labels(labels))
        threshold = calibration["threshold_at_eer"]
        described = (f"cosine distance at the EER ({calibration['negatives']} forgeries) of the held-out writers "
                     f"{compact_writers(val_writers)}, final epoch weights")
    else:
        threshold, described = None, UNCALIBRATED
    card = {
        "module": "extractor",
        "architecture": module.architecture,
        "preprocessing": data.preprocessor.config(),
        "input": "grayscale crop of any size, dark ink on light paper; preprocessing above is applied",
        "threshold": threshold,
        "threshold_calibration": described,
        "training": {
            "data": data_text(data.hparams.data_dir),
            "train_writers": compact_writers(train_writers),
            "val_writers": compact_writers(val_writers) or NO_VALIDATION,
            "n_train_images": len(data.train_set),  # after blank scans were dropped
            "n_val_images": len(data.val_set) if data.val_set is not None else 0,
            "init": module.hparams.init,
            "init_sha256": module.init_card.get("sha256"),
            "loss": module.hparams.loss,
            "epochs": trainer.current_epoch,
            "recipe": str(config),
        },
        **run_record(trainer, seconds, argv),
    }
    weights = export_checkpoint(out, model, card)
    if not val_writers:  # the projection and thresholds wait for the cross-validation: UNCALIBRATED says how
        return weights, read_card(weights)
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
    if "metrics" not in card:
        return f"threshold: {card['threshold_calibration']}"
    metrics = card["metrics"]
    return (f"held-out writers {card['training']['val_writers']}: "
            f"EER {metrics['eer']:.2%} ({metrics['negatives']} forgeries), AUC {metrics['auc']:.3f}, "
            f"threshold {card['threshold']:.4f}")


def evaluate(args: Any) -> dict[str, Any]:
    """``signver evaluate extractor``: the writer protocol (EER with its interval, per source, FAR/FRR at
    the threshold), the same-text protocol where files declare their text, with ``--references`` the
    gallery protocol per decision rule, with ``--ink-variants`` the same under altered ink."""
    from signver_torch.extractor.evaluation import evaluate_extractor

    return evaluate_extractor(args.data, args.writers, args.checkpoint, threshold=args.threshold, references=args.references,
                              background_writers=args.background_writers, ink_variants=bool(args.ink_variants),
                              cleaner=args.cleaner, backend=args.backend, progress=not args.quiet)


def calibrate(args: Any) -> str:
    """``signver calibrate extractor``: the projection on the training writers, then the threshold (and
    with ``--references`` the per-person decision) on the held-out ones."""
    from signver_torch.errors import SignVerError
    from signver_torch.extractor.evaluation import calibrate_extractor

    if args.writers and not (args.val_writers or args.out_of_fold):
        raise SignVerError("calibrate extractor with --writers needs --val-writers (held-out writers to set the threshold on) "
                           "or --out-of-fold (a cross-validation's embeddings)")
    card = calibrate_extractor(args.data, args.writers, args.val_writers, args.checkpoint, target_far=args.target_far,
                               references=args.references, background_writers=args.background_writers, rule=args.rule,
                               out_of_fold=args.out_of_fold, progress=not args.quiet)
    point = card["operating_point"]
    fitted = (f"projection fitted on {card['projection']['fitted_on']['n_images']} signatures of writers {args.writers}; "
              if args.writers else "projection kept; ")
    lines = [f"{fitted}threshold {card['threshold']:.4f} ({card['threshold_calibration']}): FAR {point['far']:.2%}, "
             f"FRR {point['frr']:.2%}; written into {args.checkpoint} (rerun `signver evaluate extractor` for its metrics)"]
    if args.references is not None:
        decision, chosen = card["decision"], card["decision"]["operating_point"]
        compared = ", ".join(f"{name} {entry['eer']:.2%}" for name, entry in decision["rules_compared"].items())
        lines.append(f"with {args.references} references: rule {decision['rule']} (EERs {compared}), threshold "
                     f"{decision['threshold']:.4f}: genuine accepted {chosen['genuine_accepted']:.2%}, forgeries rejected "
                     f"{chosen['forgeries_rejected']:.2%}")
    return "\n".join(lines)


def benchmark_batch(data: dict[str, Any], batch_size: int) -> tuple[Any, Any]:
    """uint8 canvases of the recipe's size with writer-grouped labels (``2 * writer + forged``, each
    class ``per_class`` times), as ``WriterBatchSampler`` draws them."""
    import torch

    generator = torch.Generator().manual_seed(0)
    canvas = (torch.rand(batch_size, 1, data["height"], data["width"], generator=generator) * 255).to(torch.uint8)
    labels = torch.arange(batch_size) // int(data.get("per_class", 4))
    return canvas, labels % benchmark_classes(data)  # a batch larger than the recipe's reuses its classes


def benchmark_classes(data: dict[str, Any]) -> int:
    """Two classes (genuine, forged) per training writer of the recipe."""
    from signver_torch.data.signatures import parse_writers

    return 2 * len(parse_writers(data.get("train_writers", "1-32")))


def benchmark_batch_size(data: dict[str, Any]) -> int:
    return int(data.get("writers_per_batch", 8)) * 2 * int(data.get("per_class", 4))


def prepare_benchmark(module: Any, data: dict[str, Any]) -> None:
    """Proxy losses hold one proxy per class: two per training writer (genuine, forged)."""
    if module.loss_fn is None:
        module.configure_loss(benchmark_classes(data))


def loading_rate(data_dir: Path, batch_size: int, data: dict[str, Any]) -> float:
    """Signatures/s of reading and preprocessing real scans (``preprocess_records``, the DataModule's path)."""
    import time

    from signver_torch.benchmark import loading_records
    from signver_torch.extractor.data import preprocess_records
    from signver_torch.extractor.transforms import PreprocessConfig, SignaturePreprocessor

    chosen = loading_records(data_dir)[: batch_size * 2]
    preprocessor = SignaturePreprocessor(PreprocessConfig(height=int(data["height"]), width=int(data["width"]),
                                                          otsu_sample=int(data.get("otsu_sample", PreprocessConfig.otsu_sample))))
    start = time.perf_counter()
    preprocess_records(chosen, preprocessor, batch_size=batch_size)
    return len(chosen) / (time.perf_counter() - start)


TASK = register_task(TrainingTask(
    name="extractor",
    lightning_module="signver_torch.extractor.lit:ExtractorModule",
    data_module="signver_torch.extractor.data:SignatureDataModule",
    export=export_extractor,
    summary=summary,
    evaluate=ModuleCommand(evaluate, ("writers", "threshold", "references", "background_writers", "ink_variants", "cleaner")),
    calibrate=ModuleCommand(calibrate, ("writers", "val_writers", "target_far", "references", "background_writers", "rule",
                                        "out_of_fold")),
    benchmark=BenchmarkSpec(benchmark_batch, benchmark_batch_size, lambda data: [1, int(data["height"]), int(data["width"])],
                            prepare_benchmark, loading_rate),
))
