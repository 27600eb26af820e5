"""Throughput of the three models, measured the same way on CPU, CUDA GPUs and Gaudi HPUs.

For each model (detector, cleaner, extractor) and mode (train step, inference) on synthetic
fixed-shape inputs: images/s, step time (median, p90) and peak device memory, after warm-up steps
that are excluded, reading the clock only after synchronising the device. Two paths are timed:

* ``raw``: a plain PyTorch loop (forward, backward, optimizer step; or forward under inference_mode);
* ``lightning``: the same step inside a real ``lightning.Trainer`` built by
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
from torch import nn

from signver_torch.accelerators import compile_modules, hpu_lazy_mode, installed_version, resolve_accelerator
from signver_torch.errors import SignVerError

MODELS = ("detector", "cleaner", "extractor")
MODES = ("train", "inference")
PATHS = ("raw", "lightning")
PRECISIONS = ("fp32", "bf16-mixed")
#: Input shape of one image per model: what each model sees in its CPU recipe.
INPUT_SHAPES = {"detector": (3, 448, 448), "cleaner": (1, 128, 256), "extractor": (1, 112, 192)}
DEFAULT_BATCH = {"detector": 2, "cleaner": 16, "extractor": 64}


@dataclass
class Record:
    """One measured configuration; the schema of ``benchmarks/results/*.json``."""

    model: str
    mode: str
    path: str
    accelerator: str
    device_name: str
    precision: str
    batch_size: int
    input_shape: list[int]
    compile: bool
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


def build_model(name: str) -> nn.Module:
    """A freshly initialised model as its CPU recipe builds it (weights do not change the speed)."""
    if name == "detector":
        from signver_torch.detector.model import build_detector

        return build_detector("retinanet_lite", image_size=INPUT_SHAPES["detector"][-1])
    if name == "cleaner":
        from signver_torch.cleaner.model import build_cleaner

        return build_cleaner("unet_slim")
    if name == "extractor":
        from signver_torch.extractor.model import build_extractor

        return build_extractor("resnet18")
    raise SignVerError(f"unknown model {name!r} (choose from {', '.join(MODELS)})")


def synthetic_batch(name: str, batch_size: int, device: torch.device) -> tuple[Any, Any]:
    """Fixed-shape inputs and the training targets each model's loss needs."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, *INPUT_SHAPES[name], generator=generator).to(device)
    if name == "detector":
        box = torch.tensor([[40.0, 60.0, 240.0, 110.0]], device=device)
        targets = [{"boxes": box, "labels": torch.tensor([1], device=device)} for _ in range(batch_size)]
        return list(images), targets
    if name == "cleaner":
        return images, (images > 0.5).float()
    return images, torch.arange(batch_size, device=device) % 8


def loss_of(name: str, model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
    if name == "detector":
        return sum(model(inputs, targets).values())
    if name == "cleaner":
        return nn.functional.binary_cross_entropy_with_logits(model(inputs).float(), targets)
    from pytorch_metric_learning.losses import MultiSimilarityLoss

    return MultiSimilarityLoss()(model(inputs).float(), targets)


def _autocast(accelerator: str, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_of(accelerator).type, dtype=torch.bfloat16)


def _compiled(model: nn.Module, accelerator: str, compile_model: bool) -> nn.Module:
    compile_modules([model], compile_model, device_of(accelerator).type)
    return model


def step_marker(accelerator: str) -> Callable[[], None]:
    """``htcore.mark_step`` on an HPU in (legacy) lazy mode, where it ends the graph to run; else a no-op."""
    if accelerator == "hpu" and hpu_lazy_mode():
        import habana_frameworks.torch.core as htcore

        return htcore.mark_step
    return lambda: None


def measure_raw(name: str, mode: str, accelerator: str, precision: str, batch_size: int, steps: int, warmup: int,
                compile_model: bool = False, sync: Callable[[], None] | None = None) -> list[float]:
    """Step times of the plain PyTorch loop."""
    device = device_of(accelerator)
    sync = sync or synchronizer(accelerator)
    model = _compiled(build_model(name).to(device), accelerator, compile_model)
    inputs, targets = synthetic_batch(name, batch_size, device)
    mark_step = step_marker(accelerator)
    if mode == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with _autocast(accelerator, precision):
                loss = loss_of(name, model, inputs, targets)
            loss.backward()
            mark_step()
            optimizer.step()
            mark_step()
    else:
        model.eval()

        def step() -> None:
            with torch.inference_mode(), _autocast(accelerator, precision):
                model(inputs)
            mark_step()

    return timed_steps(step, sync, steps, warmup)


def benchmark_trainer(accelerator: str, precision: str, steps: int, callbacks: list) -> Any:
    """A real ``lightning.Trainer`` on one device of ``accelerator`` (hardware from accelerators.py)."""
    import lightning

    from signver_torch.accelerators import trainer_kwargs

    return lightning.Trainer(
        **trainer_kwargs(accelerator, 1, "32-true" if precision == "fp32" else precision),
        max_steps=steps, limit_train_batches=steps, callbacks=callbacks, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )


def measure_lightning(name: str, mode: str, accelerator: str, precision: str, batch_size: int, steps: int, warmup: int,
                      compile_model: bool = False) -> list[float]:
    """Step times inside a real ``lightning.Trainer`` (hardware from accelerators.py), read by a callback."""
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

    class Bench(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = _compiled(build_model(name), accelerator, compile_model)

        def _make_inputs(self) -> None:
            # once, on the device (the model is there by now), like the raw loop's: making inputs is
            # not Lightning's overhead
            self.inputs, self.targets = synthetic_batch(name, batch_size, self.device)

        on_fit_start = on_predict_start = _make_inputs

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return loss_of(name, self.model, self.inputs, self.targets)

        def predict_step(self, batch: Any, batch_idx: int) -> Any:
            self.model(self.inputs)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=1e-4)

    total = steps + warmup
    loader = torch.utils.data.DataLoader(range(total), batch_size=1)  # indices only: the inputs live on the device
    trainer = benchmark_trainer(accelerator, precision, total, [StepClock()])
    if mode == "train":
        trainer.fit(Bench(), loader)
    else:
        trainer.predict(Bench(), loader, return_predictions=False)
    return times[warmup:]


def data_loading_rate(name: str, batch_size: int, data_dir: Path | None, batches: int = 5) -> float | None:
    """Images/s of the model's own input pipeline on this host (its synthetic generator), or None without data."""
    if data_dir is None or not (data_dir / "cedar").is_dir():
        return None
    from signver_torch.data.dirt import DirtyPairs, load_ink_maps
    from signver_torch.data.pages import PageConfig, SyntheticPages
    from signver_torch.data.signatures import discover_signatures, writer_split

    [records] = writer_split(discover_signatures(data_dir / "cedar"), "1-2")
    if name == "extractor":
        from signver_torch.data.datamodule import preprocess_records
        from signver_torch.data.preprocess import SignaturePreprocessor

        chosen = records[: batch_size * 2]
        start = time.perf_counter()
        preprocess_records(chosen, SignaturePreprocessor(), batch_size=batch_size)
        return len(chosen) / (time.perf_counter() - start)
    maps = load_ink_maps(records[:8], progress=False)
    dataset = DirtyPairs(maps, batch_size * batches) if name == "cleaner" else SyntheticPages(
        maps, batch_size * batches, config=PageConfig(size=INPUT_SHAPES["detector"][-1]))
    start = time.perf_counter()
    for index in range(len(dataset)):
        dataset[index]
    return len(dataset) / (time.perf_counter() - start)


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
    models: tuple[str, ...] = MODELS,
    modes: tuple[str, ...] = MODES,
    paths: tuple[str, ...] = PATHS,
    precision: str = "fp32",
    batch_size: int | None = None,
    steps: int = 10,
    warmup: int = 3,
    compile_model: bool = False,
    data_dir: Path | None = None,
    progress: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
) -> Iterator[Record]:
    """Measure every model × mode × path; yields one :class:`Record` each."""
    accelerator = resolve_accelerator(accelerator)  # raises AcceleratorUnavailableError with what is present
    if precision not in PRECISIONS:
        raise SignVerError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if steps < 2 or warmup < 0:
        raise SignVerError(f"--steps must be at least 2 (a median and a p90 need two timings) and --warmup at least 0, not {steps} and {warmup}")
    name_of_device = device_name(accelerator)
    for model in models:
        batch = batch_size or DEFAULT_BATCH[model]
        loading = data_loading_rate(model, batch, data_dir)
        for mode in modes:
            for path in paths:
                progress(f"{model} {mode} ({path}, {precision}, batch {batch}) on {name_of_device} ...")
                reset_peak_memory(accelerator)
                measure = measure_raw if path == "raw" else measure_lightning
                times = measure(model, mode, accelerator, precision, batch, steps, warmup, compile_model)
                median = statistics.median(times)
                yield Record(
                    model=model, mode=mode, path=path, accelerator=accelerator, device_name=name_of_device,
                    precision=precision, batch_size=batch, input_shape=list(INPUT_SHAPES[model]),
                    compile=compile_model, steps=len(times), warmup=warmup, images_per_second=batch / median,
                    step_ms_median=median * 1000, step_ms_p90=statistics.quantiles(times, n=10)[-1] * 1000,
                    peak_memory_mb=peak_memory_mb(accelerator), data_images_per_second=loading,
                    versions=versions(), date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), host=platform.node(),
                )


def write_records(records: list[Record], out_dir: Path) -> Path:
    """One JSON file for the run: ``<date>-<host>-<accelerator>-<precision>.json`` holding its records."""
    out_dir.mkdir(parents=True, exist_ok=True)
    first = records[0]
    path = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{first.host}-{first.accelerator}-{first.precision}.json"
    path.write_text(json.dumps([asdict(record) for record in records], indent=1))
    return path
