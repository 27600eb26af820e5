"""What accelerators.py constructs for each accelerator, with availability mocked where absent."""

from __future__ import annotations

from unittest import mock

import lightning
from pathlib import Path

import pytest
import torch
from lightning_habana import HPUAccelerator, HPUDDPStrategy, HPUPrecisionPlugin, SingleHPUStrategy

from signver_torch.accelerators import (
    compile_backend,
    compile_modules,
    habana_status,
    prepare_modules,
    resolve_accelerator,
    trainer_kwargs,
)
from signver_torch.errors import AcceleratorUnavailableError, SignVerError

from mock_devices import cuda_gpus, hpus


def build_trainer(kwargs: dict) -> lightning.Trainer:
    return lightning.Trainer(**kwargs, logger=False, enable_checkpointing=False, enable_progress_bar=False)


def test_cpu_kwargs_build_a_real_trainer() -> None:
    kwargs = trainer_kwargs("cpu")
    assert kwargs == {"accelerator": "cpu", "devices": 1, "strategy": "auto", "precision": "32-true"}
    trainer = build_trainer(kwargs)
    assert trainer.num_devices == 1
    assert type(trainer.accelerator).__name__ == "CPUAccelerator"


def test_cpu_accepts_bf16_alias() -> None:
    assert trainer_kwargs("cpu", precision="bf16")["precision"] == "bf16-mixed"


def test_single_hpu_uses_single_strategy_and_bf16_plugin() -> None:
    with hpus(8):
        kwargs = trainer_kwargs("hpu", devices=1)
        assert isinstance(kwargs["accelerator"], HPUAccelerator)
        assert kwargs["devices"] == 1
        assert isinstance(kwargs["strategy"], SingleHPUStrategy)
        [plugin] = kwargs["plugins"]
        assert isinstance(plugin, HPUPrecisionPlugin) and plugin.precision == "bf16-mixed"
        assert "precision" not in kwargs, "precision travels in the HPU plugin, not beside it"
        trainer = build_trainer(kwargs)
        assert trainer.strategy is kwargs["strategy"]
        assert trainer.precision_plugin is plugin
        assert trainer.num_devices == 1


def test_eight_hpus_use_hpu_ddp_over_eight_devices() -> None:
    with hpus(8):
        kwargs = trainer_kwargs("hpu", devices=8, precision="32-true")
        strategy = kwargs["strategy"]
        assert isinstance(strategy, HPUDDPStrategy)
        assert strategy.parallel_devices == [torch.device("hpu")] * 8
        assert kwargs["plugins"][0].precision == "32-true"
        trainer = build_trainer(kwargs)
        assert trainer.num_devices == 8
        assert trainer.strategy is strategy


def test_auto_prefers_hpu_then_gpu_then_cpu() -> None:
    with hpus(8), cuda_gpus(2):
        assert resolve_accelerator("auto") == "hpu"
        assert trainer_kwargs("auto")["devices"] == 8
    with hpus(0), cuda_gpus(2):
        assert resolve_accelerator("auto") == "gpu"
    with hpus(0), cuda_gpus(0):
        assert resolve_accelerator("auto") == "cpu"


def test_one_gpu_and_several_gpus() -> None:
    with cuda_gpus(4):
        assert trainer_kwargs("gpu", devices=1) == {
            "accelerator": "gpu", "devices": 1, "strategy": "auto", "precision": "bf16-mixed"
        }
        assert trainer_kwargs("gpu", devices="auto") == {
            "accelerator": "gpu", "devices": 4, "strategy": "ddp", "precision": "bf16-mixed"
        }
        assert trainer_kwargs("cuda", devices="2", precision="fp32")["precision"] == "32-true"


def test_gpu_without_bf16_falls_back_to_fp16() -> None:
    with cuda_gpus(1), mock.patch.object(torch.cuda, "is_bf16_supported", return_value=False):
        assert trainer_kwargs("gpu")["precision"] == "16-mixed"


def test_missing_hpu_says_what_is_present_and_how_to_get_one() -> None:
    with hpus(0):
        with pytest.raises(AcceleratorUnavailableError) as caught:
            trainer_kwargs("hpu")
    message = str(caught.value)
    assert "no Gaudi HPU is present" in message
    assert "installed, no HPU present" in message
    assert "cpu:" in message
    assert "Intel Gaudi's PyTorch container" in message and "pip install --no-deps -e ." in message and "signver doctor" in message
    assert "pip install --no-deps -e ." in (Path(__file__).resolve().parent.parent / "docs" / "hpu.md").read_text()  # the same as the docs
    assert isinstance(caught.value, SignVerError)


def test_missing_gpu_and_too_many_devices_are_clear_errors() -> None:
    with cuda_gpus(0), pytest.raises(AcceleratorUnavailableError, match="no CUDA device"):
        trainer_kwargs("gpu")
    with hpus(1), pytest.raises(AcceleratorUnavailableError, match="8 HPU device.*only 1 present"):
        trainer_kwargs("hpu", devices=8)
    with pytest.raises(AcceleratorUnavailableError, match="unknown accelerator"):
        trainer_kwargs("tpu")
    with pytest.raises(AcceleratorUnavailableError, match="positive number"):
        trainer_kwargs("cpu", devices="many")


def test_several_cpu_devices_are_ddp_processes_and_compile_picks_the_device_backend() -> None:
    assert trainer_kwargs("cpu", devices=2) == {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "precision": "32-true"}
    assert compile_backend("hpu") == "hpu_backend" and compile_backend("cuda") == "inductor" == compile_backend("cpu")
    model = torch.nn.Linear(3, 2)
    keys = list(model.state_dict())
    assert compile_modules([model], False, "cpu") is None and model._compiled_call_impl is None
    assert compile_modules([model], "eager", "cpu") == "eager" and model._compiled_call_impl is not None
    assert list(model.state_dict()) == keys  # a compiled module exports the same checkpoint keys
    torch.testing.assert_close(model(torch.ones(1, 3)), torch.nn.functional.linear(torch.ones(1, 3), model.weight, model.bias))
    with hpus(1), pytest.raises(AcceleratorUnavailableError, match="not supported on HPU"):
        trainer_kwargs("hpu", precision="64-true")


def test_prepared_modules_are_channels_last_on_cpu_only() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    images = torch.rand(2, 1, 9, 11)
    expected = net(images)
    for device_type in ("hpu", "cuda"):  # nothing measured there: PyTorch's default layout stays
        assert prepare_modules(net, [], False, device_type) is None and net[2].weight.is_contiguous()  # (4 channels in)
    assert prepare_modules(net, [net[2]], "eager", "cpu") == "eager"
    assert all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in (net[0], net[2]))
    assert net[2]._compiled_call_impl is not None  # then compiled, as compile_modules does
    torch.testing.assert_close(net(images), expected)


def test_habana_status_on_this_machine_reports_installed_without_hpu() -> None:
    status = habana_status()
    assert status.installed, status.detail
    if status.device_count:
        pytest.skip("this machine has Gaudi cards")
    assert status.describe() == f"lightning-habana {status.version} installed, no HPU present"
