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


def test_a_recipe_sets_any_metric_learning_loss_and_miner(tmp_path: Path) -> None:
    from signver_torch.extractor.lit import LOSS_PRESETS, build_loss

    recipe = tmp_path / "loss.yaml"
    recipe.write_text(
        "model:\n  loss:\n    class_path: pytorch_metric_learning.losses.MultiSimilarityLoss\n"
        "    init_args: {alpha: 2, beta: 40, base: 0.5}\n  miner: multi_similarity\n"
        f"data:\n  data_dir: {SMALL_DATA / 'cedar'}\n  train_writers: '1,2'\n  val_writers: '37'\n")
    module_class, data_class = get_task("extractor").classes()
    cli = parse_recipe(module_class, data_class, recipe, [], tmp_path / "run")
    assert type(cli.model.loss_fn).__name__ == "MultiSimilarityLoss" and cli.model.loss_fn.beta == 40
    assert type(cli.model.miner).__name__ == "MultiSimilarityMiner"  # the preset's miner, by name
    for name in LOSS_PRESETS:  # every preset builds (proxy losses once the classes are known)
        loss, _ = build_loss(name, num_classes=6)
        assert loss is not None
    triplet_loss, triplet_miner = build_loss("triplet")
    assert type(triplet_loss.distance).__name__ == "CosineSimilarity" and triplet_miner.type_of_triplets == "semihard"
    with pytest.raises(ValueError, match="needs the number of classes"):
        build_loss("proxy_anchor")
    with pytest.raises(ValueError, match="cannot import"):
        build_loss({"class_path": "pytorch_metric_learning.losses.NoSuchLoss"})
