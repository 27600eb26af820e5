"""Throughput of every registered module, measured the same way on CPU, CUDA GPUs and Gaudi HPUs.

Each module is timed as a recipe trains it (``recipes/<module>/<accelerator>.yaml`` by default): its
own LightningModule built from the recipe's ``model`` section (loss, miner, sizes), its own
``training_loss`` on a synthetic batch shaped as its DataModule yields it from the recipe's ``data``
section (:class:`~signver_torch.tasks.BenchmarkSpec`), its own optimiser and schedule, the recipe's
precision unless ``--precision`` says otherwise. For each mode (train step, inference): images/s,
step time (median, p90) and peak device memory, after warm-up steps that are excluded, reading the
clock only after synchronising the device. Two paths are timed:

* ``raw``: a plain PyTorch loop around the module (batch to the device, ``training_loss``, backward,
  optimiser and schedule step; or its forward under inference_mode);
* ``lightning``: the same module fitted (or predicting) in a real ``lightning.Trainer`` built by
  :func:`~signver_torch.accelerators.trainer_kwargs`, so Lightning's overhead shows as the difference.

Data loading is measured on its own (the models' real synthetic generators, per batch) and never
inside the step times. Each run writes one JSON file of records (device name, accelerator, precision,
batch, versions, date, host) under ``benchmarks/results/``; ``benchmarks/compare.py`` makes the table.
"""

from __future__ import annotations

import contextlib
import json
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from signver_torch.accelerators import hpu_lazy_mode, installed_version, memory_format, prepare_modules, resolve_accelerator
from signver_torch.errors import SignVerError
from signver_torch.tasks import get_task, training_tasks

MODES = ("train", "inference")
PATHS = ("raw", "lightning")
PRECISIONS = ("fp32", "bf16-mixed")
#: Lightning precision strings of the recipes → the benchmark's names.
RECIPE_PRECISION = {"32-true": "fp32", "32": "fp32", "bf16-mixed": "bf16-mixed"}


def benchmarked_modules() -> tuple[str, ...]:
    """The registered modules that declare how to benchmark them."""
    return tuple(name for name, task in training_tasks().items() if task.benchmark is not None)


@dataclass
class Record:
    """One measured configuration; the schema of ``benchmarks/results/*.json``."""

    model: str
    mode: str
    path: str
    recipe: str
    accelerator: str
    device_name: str
    precision: str
    batch_size: int
    input_shape: list[int]
    compile: bool
    #: the networks' layout on the device (``accelerators.memory_format``); records before 2026-12-04 lack it
    memory_format: str
    steps: int
    warmup: int
    images_per_second: float
    step_ms_median: float
    step_ms_p90: float
    peak_memory_mb: float | None
    data_images_per_second: float | None
    versions: dict[str, str | None]
    date: str
    host: str


RECORD_FIELDS = tuple(Record.__dataclass_fields__)


def synchronizer(accelerator: str) -> Callable[[], None]:
    """The function that waits for the device's queued work (a no-op on CPU)."""
    if accelerator == "gpu":
        return torch.cuda.synchronize
    if accelerator == "hpu":
        import habana_frameworks.torch.hpu as hpu  # present only inside Habana's container

        return hpu.synchronize
    return lambda: None


def device_of(accelerator: str) -> torch.device:
    return torch.device({"gpu": "cuda", "hpu": "hpu", "cpu": "cpu"}[accelerator])


def device_name(accelerator: str) -> str:
    if accelerator == "gpu":
        return torch.cuda.get_device_name(0)
    if accelerator == "hpu":
        import habana_frameworks.torch.hpu as hpu

        return str(hpu.get_device_name())
    from signver_torch.training import cpu_model

    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def timed_steps(step: Callable[[], Any], sync: Callable[[], None], steps: int, warmup: int) -> list[float]:
    """Seconds of each of ``steps`` calls of ``step`` after ``warmup`` untimed ones; the device is
    synchronised before every clock read, so queued kernels are counted in the step that queued them."""
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return times


@dataclass
class Setup:
    """One module as a recipe configures it, ready to time: its LightningModule class and arguments,
    a host-side batch, and the recipe's sizes."""

    name: str
    recipe: Path
    module_class: type
    model_args: dict[str, Any]
    data: dict[str, Any]
    batch: Any
    batch_size: int
    input_shape: list[int]
    precision: str

    def build(self, compile_model: bool = False) -> Any:
        """A fresh LightningModule (random weights: they do not change the speed), with the loss the data implies."""
        module = self.module_class(**{**self.model_args, "compile": compile_model})
        spec = training_tasks()[self.name].benchmark
        if spec.prepare is not None:
            spec.prepare(module, self.data)
        return module


def module_setup(name: str, recipe: str | Path, batch_size: int | None = None, precision: str | None = None) -> Setup:
    """``name``'s LightningModule and synthetic batch as ``recipe`` (a name such as ``cpu`` or a path) configures them."""
    import yaml

    from signver_torch.training import resolve_recipe

    task = get_task(name)
    if task.benchmark is None:
        raise SignVerError(f"the {name} declares no benchmark (benchmarked: {', '.join(benchmarked_modules())})")
    path = resolve_recipe(name, str(recipe), fine_tune=False)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SignVerError(f"{path}: cannot read the recipe ({error})") from error
    model_args = {key: value for key, value in (config.get("model") or {}).items()
                  if key not in ("init", "init_backbone", "compile")}  # random weights, no checkpoint to read
    data = config.get("data") or {}
    size = batch_size or task.benchmark.batch_size(data)
    recipe_precision = str((config.get("hardware") or {}).get("precision", "32-true"))
    if precision is None and recipe_precision not in RECIPE_PRECISION:
        raise SignVerError(f"{path}: precision {recipe_precision!r} is not one the benchmark times "
                           f"({', '.join(RECIPE_PRECISION)}); give --precision")
    chosen = precision or RECIPE_PRECISION[recipe_precision]
    if chosen not in PRECISIONS:
        raise SignVerError(f"precision must be one of {', '.join(PRECISIONS)}, not {chosen!r}")
    module_class, _ = task.classes()
    return Setup(name, path, module_class, model_args, data, task.benchmark.batch(data, size), size,
                 task.benchmark.input_shape(data), chosen)


def on_device(module: Any, batch: Any, device: torch.device) -> Any:
    """The batch as the module's training step receives it: moved, then through its batch-transfer hook."""
    return module.on_after_batch_transfer(module.transfer_batch_to_device(batch, device, 0), 0)


def _autocast(accelerator: str, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_of(accelerator).type, dtype=torch.bfloat16)


def step_marker(accelerator: str) -> Callable[[], None]:
    """``htcore.mark_step`` on an HPU in (legacy) lazy mode, where it ends the graph to run; else a no-op."""
    if accelerator == "hpu" and hpu_lazy_mode():
        import habana_frameworks.torch.core as htcore

        return htcore.mark_step
    return lambda: None


def measure_raw(setup: Setup, mode: str, accelerator: str, steps: int, warmup: int, compile_model: bool = False,
                sync: Callable[[], None] | None = None) -> list[float]:
    """Step times of a plain PyTorch loop around the module: the batch moved to the device each step
    (as a loader's would be), its ``training_loss``, backward, its optimiser and schedule."""
    import warnings

    device = device_of(accelerator)
    sync = sync or synchronizer(accelerator)
    module = setup.build().to(device)
    prepare_modules(module, module.compiled_parts(), compile_model, device.type)
    mark_step = step_marker(accelerator)
    warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer to log to: the loss is what is timed
    if mode == "train":
        module.train()
        optimization = module.optimization(steps + warmup)
        optimizer, scheduler = optimization["optimizer"], optimization["lr_scheduler"]["scheduler"]

        def step() -> None:
            batch = on_device(module, setup.batch, device)
            optimizer.zero_grad(set_to_none=True)
            with _autocast(accelerator, setup.precision):
                loss, _ = module.training_loss(batch)
            loss.backward()
            mark_step()
            optimizer.step()
            scheduler.step()
            module.on_train_batch_end(loss, batch, 0)  # what the module does after a step (the extractor's EMA)
            mark_step()
    else:
        module.eval()

        def step() -> None:
            batch = on_device(module, setup.batch, device)
            with torch.inference_mode(), _autocast(accelerator, setup.precision):
                module(batch[0])
            mark_step()

    return timed_steps(step, sync, steps, warmup)


def benchmark_trainer(accelerator: str, precision: str, steps: int, callbacks: list) -> Any:
    """A real ``lightning.Trainer`` on one device of ``accelerator`` (hardware from accelerators.py)."""
    import lightning

    from signver_torch.accelerators import trainer_kwargs

    return lightning.Trainer(
        **trainer_kwargs(accelerator, 1, "32-true" if precision == "fp32" else precision),
        max_steps=steps, limit_train_batches=steps, limit_val_batches=0, num_sanity_val_steps=0, callbacks=callbacks,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )


def measure_lightning(setup: Setup, mode: str, accelerator: str, steps: int, warmup: int,
                      compile_model: bool = False) -> list[float]:
    """Step times of the module fitted (or predicting) in a real ``lightning.Trainer``, read by a callback;
    the loader hands it the same host batch every step."""
    import lightning

    sync = synchronizer(accelerator)
    times: list[float] = []

    class StepClock(lightning.Callback):
        def _start(self, *args: Any) -> None:
            sync()
            self.began = time.perf_counter()

        def _end(self, *args: Any) -> None:
            sync()
            times.append(time.perf_counter() - self.began)

        on_train_batch_start = on_predict_batch_start = _start
        on_train_batch_end = on_predict_batch_end = _end

    total = steps + warmup
    loader = torch.utils.data.DataLoader([setup.batch] * total, batch_size=None, collate_fn=lambda batch: batch)
    trainer = benchmark_trainer(accelerator, setup.precision, total, [StepClock()])
    module = setup.build(compile_model)
    if mode == "train":
        trainer.fit(module, train_dataloaders=loader)
    else:
        module.predict_step = lambda batch, batch_idx=0, dataloader_idx=0: module(batch[0])  # its forward, as inference runs it
        trainer.predict(module, loader, return_predictions=False)
    return times[warmup:]


def loading_records(data_dir: Path) -> list[Any]:
    """The signatures a data-loading measurement reads: CEDAR writers 1-2 of ``data_dir``."""
    from signver_torch.data.signatures import discover_signatures, writer_split

    [records] = writer_split(discover_signatures(data_dir / "cedar"), "1-2")
    return records


def items_per_second(dataset: Any) -> float:
    """Items/s of reading every item of ``dataset`` once."""
    start = time.perf_counter()
    for index in range(len(dataset)):
        dataset[index]
    return len(dataset) / (time.perf_counter() - start)


def data_loading_rate(setup: Setup, data_dir: Path | None) -> float | None:
    """Images/s of the module's own input pipeline on this host, or None without data (or a way to measure it)."""
    spec = training_tasks()[setup.name].benchmark
    if data_dir is None or not (data_dir / "cedar").is_dir() or spec.loading_rate is None:
        return None
    return spec.loading_rate(data_dir, setup.batch_size, setup.data)


def peak_memory_mb(accelerator: str) -> float | None:
    if accelerator == "gpu":
        return torch.cuda.max_memory_allocated() / 2**20
    if accelerator == "hpu":
        import habana_frameworks.torch.hpu as hpu

        return hpu.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def reset_peak_memory(accelerator: str) -> None:
    if accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()
    elif accelerator == "hpu":
        import habana_frameworks.torch.hpu as hpu

        hpu.reset_peak_memory_stats()


def versions() -> dict[str, str | None]:
    return {name: installed_version(name) for name in ("torch", "lightning", "lightning-habana", "habana-torch-plugin", "signver-torch")}


def run_benchmarks(
    accelerator: str = "cpu",
    models: tuple[str, ...] | None = None,
    modes: tuple[str, ...] = MODES,
    paths: tuple[str, ...] = PATHS,
    precision: str | None = None,
    batch_size: int | None = None,
    steps: int = 10,
    warmup: int = 3,
    compile_model: bool = False,
    data_dir: Path | None = None,
    recipe: str | None = None,
    progress: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
) -> Iterator[Record]:
    """Measure every module × mode × path as ``recipe`` (default: the accelerator's, e.g. ``gpu``)
    configures it; yields one :class:`Record` each."""
    accelerator = resolve_accelerator(accelerator)  # raises AcceleratorUnavailableError with what is present
    if precision is not None and precision not in PRECISIONS:
        raise SignVerError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if steps < 2 or warmup < 0:
        raise SignVerError(f"--steps must be at least 2 (a median and a p90 need two timings) and --warmup at least 0, not {steps} and {warmup}")
    name_of_device = device_name(accelerator)
    for model in models or benchmarked_modules():
        setup = module_setup(model, recipe or accelerator, batch_size, precision)
        loading = data_loading_rate(setup, data_dir)
        for mode in modes:
            for path in paths:
                progress(f"{model} {mode} ({path}, {setup.precision}, batch {setup.batch_size}, recipe {setup.recipe.name}) "
                         f"on {name_of_device} ...")
                reset_peak_memory(accelerator)
                measure = measure_raw if path == "raw" else measure_lightning
                times = measure(setup, mode, accelerator, steps, warmup, compile_model)
                median = statistics.median(times)
                yield Record(
                    model=model, mode=mode, path=path, recipe=str(Path(setup.recipe.parent.name) / setup.recipe.name),
                    accelerator=accelerator, device_name=name_of_device, precision=setup.precision,
                    batch_size=setup.batch_size, input_shape=setup.input_shape, compile=compile_model,
                    memory_format=str(memory_format(device_of(accelerator).type)).removeprefix("torch."), steps=len(times),
                    warmup=warmup, images_per_second=setup.batch_size / median, step_ms_median=median * 1000,
                    step_ms_p90=statistics.quantiles(times, n=10)[-1] * 1000, peak_memory_mb=peak_memory_mb(accelerator),
                    data_images_per_second=loading, versions=versions(), date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    host=platform.node(),
                )


def write_records(records: list[Record], out_dir: Path) -> Path:
    """One JSON file for the run: ``<date>-<host>-<accelerator>-<precision>.json`` holding its records."""
    out_dir.mkdir(parents=True, exist_ok=True)
    first = records[0]
    path = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{first.host}-{first.accelerator}-{first.precision}.json"
    path.write_text(json.dumps([asdict(record) for record in records], indent=1))
    return path
