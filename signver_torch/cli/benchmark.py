"""``signver benchmark``: train and inference throughput of every registered module (``benchmark.py``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from signver_torch.cli.options import quiet_flag
from signver_torch.tasks import training_tasks


def cmd_benchmark(args: argparse.Namespace) -> int:
    """A line per (module, mode, path) measured, then the JSON record file written."""
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


def add_benchmark(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "benchmark", help="measure train and inference throughput on cpu, gpu or hpu",
        description="Throughput of every registered module (synthetic fixed-shape inputs, warm-up excluded, "
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
    quiet_flag(bench, None)
    bench.set_defaults(handler=cmd_benchmark)
