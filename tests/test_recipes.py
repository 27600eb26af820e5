"""Every shipped recipe parses into its model, data and Trainer, on the hardware it names (mocked where absent)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import yaml
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from lightning_habana import HPUDDPStrategy, SingleHPUStrategy

from signver_torch.tasks import get_task
from signver_torch.training import parse_recipe

from conftest import SMALL_DATA
from mock_devices import cuda_gpus, hpus

RECIPES = sorted(Path(__file__).resolve().parent.parent.glob("recipes/*/*.yaml"))


def expected_strategy(accelerator: str, devices: int) -> type:
    if accelerator == "hpu":
        return HPUDDPStrategy if devices > 1 else SingleHPUStrategy
    return DDPStrategy if devices > 1 else SingleDeviceStrategy  # "auto" is the CPU here


@pytest.mark.parametrize("recipe", RECIPES, ids=[f"{p.parent.name}/{p.stem}" for p in RECIPES])
def test_recipe_parses_on_its_hardware(recipe: Path, tmp_path: Path) -> None:
    config = yaml.safe_load(recipe.read_text())
    hardware = config["hardware"]
    accelerator, devices = hardware["accelerator"], int(hardware.get("devices", 1))
    present = {"hpu": hpus(devices), "gpu": cuda_gpus(devices)}.get(accelerator, nullcontext())
    module_class, data_class = get_task(recipe.parent.name).classes()
    overrides = ["--trainer.logger=false"]
    if config["data"].get("data_dir", "") is None:  # a fine-tuning recipe: the user names their data
        overrides.append(f"--data.data_dir={SMALL_DATA / 'cedar'}")
        config["data"]["data_dir"] = str(SMALL_DATA / "cedar")
    with present:
        cli = parse_recipe(module_class, data_class, recipe, overrides, tmp_path)
    assert isinstance(cli.model, module_class) and isinstance(cli.datamodule, data_class)
    assert isinstance(cli.trainer.strategy, expected_strategy(accelerator, devices))
    assert cli.trainer.num_devices == devices
    assert cli.trainer.max_epochs == config["trainer"]["max_epochs"]
    for key, value in config.get("data", {}).items():
        assert cli.datamodule.hparams[key] == value, key
