"""Benchmark harness: real timing code on real models, device synchronisation, HPU path, records, table."""

from __future__ import annotations

import os
import json
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from mock_devices import hpus

from signver_torch import benchmark
from signver_torch.benchmark import RECORD_FIELDS, measure_raw, timed_steps
from signver_torch.accelerators import compile_modules
from signver_torch.errors import AcceleratorUnavailableError

from cli_runner import signver_process

REPO = Path(__file__).resolve().parent.parent


def test_clock_is_read_only_after_the_device_is_synchronised() -> None:
    events: list[str] = []
    clock = iter(range(100))
    with mock.patch.object(benchmark.time, "perf_counter", side_effect=lambda: events.append("clock") or next(clock)):
        times = timed_steps(lambda: events.append("step"), lambda: events.append("sync"), steps=3, warmup=2)
    assert times == [1, 1, 1]
    # warm-up steps untimed, then a sync; each timed step: clock, step, sync, clock
    assert events == ["step", "step", "sync"] + ["clock", "step", "sync", "clock"] * 3


def test_raw_loop_synchronises_a_device_on_every_timed_step() -> None:
    calls = []
    setup = benchmark.module_setup("cleaner", "cpu", batch_size=2)
    times = measure_raw(setup, "train", "cpu", steps=3, warmup=1, sync=lambda: calls.append(1))
    assert len(times) == 3 and all(t > 0 for t in times)
    assert len(calls) == 1 + 3  # after warm-up, then after each timed step


def test_gpu_and_hpu_synchronizers_are_the_devices_own() -> None:
    assert benchmark.synchronizer("gpu") is torch.cuda.synchronize
    habana = mock.MagicMock()  # Habana's package exists only in its container
    with mock.patch.dict(sys.modules, {"habana_frameworks": habana, "habana_frameworks.torch": habana.torch,
                                       "habana_frameworks.torch.hpu": habana.torch.hpu}):
        assert benchmark.synchronizer("hpu") is habana.torch.hpu.synchronize


def test_hpu_path_builds_habana_pieces_and_fails_clearly_without_hpu() -> None:
    with pytest.raises(AcceleratorUnavailableError, match="HPU"):
        list(benchmark.run_benchmarks("hpu", models=("cleaner",), steps=1, warmup=0))
    with hpus(1):
        trainer = benchmark.benchmark_trainer("hpu", "bf16-mixed", 5, [])
        assert type(trainer.accelerator).__name__ == "HPUAccelerator"
        assert type(trainer.strategy).__name__ == "SingleHPUStrategy"
        assert type(trainer.precision_plugin).__name__ == "HPUPrecisionPlugin" and trainer.max_steps == 5
    model = torch.nn.Linear(2, 2)
    core = mock.Mock()  # Habana's bridge, which registers hpu_backend and provides mark_step
    habana_torch = mock.Mock(core=core)
    bridge = {"habana_frameworks": mock.Mock(torch=habana_torch), "habana_frameworks.torch": habana_torch, "habana_frameworks.torch.core": core}
    with mock.patch.dict(sys.modules, bridge), mock.patch.object(torch.nn.Module, "compile") as compile_:
        assert compile_modules([model], True, benchmark.device_of("hpu").type) == "hpu_backend"
        compile_.assert_called_once_with(backend="hpu_backend")
        compile_modules([model], True, benchmark.device_of("gpu").type)
        compile_.assert_called_with(backend="inductor")
        with mock.patch.dict(os.environ, {"PT_HPU_LAZY_MODE": "1"}):
            assert benchmark.step_marker("hpu") is core.mark_step  # lazy mode: each step ends its graph
            benchmark.step_marker("cpu")()
        with mock.patch.dict(os.environ, {"PT_HPU_LAZY_MODE": "0"}):
            benchmark.step_marker("hpu")()
        core.mark_step.assert_not_called()
    assert compile_modules([model], False, "hpu") is None
    assert benchmark.device_of("hpu") == torch.device("hpu")


def test_cpu_benchmark_writes_records_and_the_table(tmp_path: Path) -> None:
    result = signver_process("benchmark", "--accelerator", "cpu", "--models", "cleaner", "extractor", "--steps", "2",
                             "--warmup", "1", "--batch-size", "2", "--out", str(tmp_path), "--quiet")
    assert result.returncode == 0, result.stderr
    [written] = tmp_path.glob("*.json")
    records = json.loads(written.read_text())
    assert len(records) == 2 * 2 * 2  # models x modes x paths
    for record in records:
        assert set(record) == set(RECORD_FIELDS)
        assert record["accelerator"] == "cpu" and record["images_per_second"] > 0 and record["memory_format"] == "channels_last"
        assert record["step_ms_p90"] >= record["step_ms_median"] > 0 and record["versions"]["torch"]
    sys.path.insert(0, str(REPO / "benchmarks"))
    import compare

    table = compare.build_table(records)
    assert "not measured" in table and "| cleaner | train | fp32 | lightning | cpu.yaml, channels-last |" in table
    assert all(record["recipe"] in ("cleaner/cpu.yaml", "extractor/cpu.yaml") for record in records)
    assert table.count("\n") == 1 + 8  # header, rule, one row per configuration


def test_too_few_steps_for_a_p90_is_a_clear_error() -> None:
    with pytest.raises(benchmark.SignVerError, match="--steps must be at least 2"):
        next(benchmark.run_benchmarks("cpu", models=("extractor",), steps=1))


def test_compiled_runs_get_their_own_rows() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import compare

    base = {"model": "extractor", "mode": "train", "precision": "bf16-mixed", "path": "raw", "accelerator": "gpu",
            "device_name": "NVIDIA H100", "batch_size": 64, "date": "2026-11-26T10:00:00", "step_ms_median": 10.0}
    records = [{**base, "compile": False, "images_per_second": 100.0},
               {**base, "compile": True, "images_per_second": 150.0, "date": "2026-11-26T10:05:00"}]
    table = compare.build_table(records)
    assert "| extractor | train | bf16-mixed | raw | generic step | 100.0 img/s" in table
    assert "| extractor | train | bf16-mixed | raw + compile | generic step | 150.0 img/s" in table


def test_each_module_is_timed_as_its_recipe_trains_it() -> None:
    extractor = benchmark.module_setup("extractor", "cpu")
    module = extractor.build()
    assert type(module.loss_fn).__name__ == "ProxyAnchorLoss" and len(module.loss_fn.proxies) == 64  # 2 x 32 writers
    assert extractor.batch_size == 64 and extractor.input_shape == [1, 112, 192] and extractor.precision == "fp32"
    canvas, labels = extractor.batch
    assert canvas.dtype == torch.uint8 and labels.tolist()[:8] == [0, 0, 0, 0, 1, 1, 1, 1]

    detector = benchmark.module_setup("detector", "gpu", batch_size=1)
    assert detector.input_shape == [3, 640, 640] and detector.precision == "bf16-mixed"
    images, targets = detector.batch  # the recipe pads (max_boxes): one static-shape tensor, as its DataModule collates
    assert images.shape == (1, 3, 640, 640) and targets["present"].sum() == 3
    module = detector.build().train()
    loss, logged = module.training_loss(benchmark.on_device(module, detector.batch, torch.device("cpu")))
    assert torch.isfinite(loss) and set(logged) == {"train_loss", "train_classification", "train_bbox_regression"}

    cleaner = benchmark.module_setup("cleaner", "cpu", batch_size=2)
    module = cleaner.build()
    assert cleaner.input_shape == [1, 128, 256] and module.hparams.mse_weight == 4.0  # the recipe's loss weights
    with pytest.raises(benchmark.SignVerError, match="recipe not found|cannot read"):
        benchmark.module_setup("cleaner", "no-such-recipe")
