"""One place that turns ``accelerator`` + ``devices`` + ``precision`` into ``lightning.Trainer`` kwargs.

Recipes, the ``signver train`` command and the benchmarks all call :func:`trainer_kwargs`, so a run on
Gaudi, on CUDA and on this laptop differ only in the three words the user typed:

* ``hpu`` → lightning-habana's ``HPUAccelerator`` with ``SingleHPUStrategy`` (one card) or
  ``HPUDDPStrategy`` (several, e.g. the 8 of a Gaudi2 node) and ``HPUPrecisionPlugin`` (``bf16-mixed``
  by default);
* ``gpu`` → CUDA, DDP when several devices;
* ``cpu`` → CPU; several devices are DDP processes over gloo, launched like the GPU and HPU ranks,
  which is how the multi-rank path of an 8-card run is exercised on a machine without accelerators;
* ``auto`` → the best present, in that order.

lightning-habana is imported lazily: it is slow to import and must not be needed for CPU work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal, Union

import torch

from signver_torch.errors import AcceleratorUnavailableError

AcceleratorName = Literal["auto", "cpu", "gpu", "hpu"]
Devices = Union[int, str]

#: Precision used when the caller does not choose one.
DEFAULT_PRECISION = {"cpu": "32-true", "gpu": "bf16-mixed", "hpu": "bf16-mixed"}
_HPU_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
_PRECISION_ALIASES = {"fp32": "32-true", "32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed", "16": "16-mixed"}

HPU_INSTALL_HINT = (
    "run inside Intel Gaudi's PyTorch container (its torch is built for HPUs), install this package "
    "there with `pip install --no-deps -e .` and its other requirements as docs/hpu.md lists them "
    "(never a torch from PyPI), then check with `signver doctor`"
)

#: ``torch.compile`` backend per device type: Habana's graph compiler on HPU, inductor elsewhere.
COMPILE_BACKENDS = {"hpu": "hpu_backend"}
DEFAULT_COMPILE_BACKEND = "inductor"


def compile_backend(device_type: str) -> str:
    """The ``torch.compile`` backend that suits ``device_type`` (``hpu``, ``cuda``, ``cpu``)."""
    return COMPILE_BACKENDS.get(device_type, DEFAULT_COMPILE_BACKEND)


#: Memory layout of the networks per device type, for training and inference alike. Channels-last
#: lets oneDNN's convolutions skip their layout conversions on CPU (gains measured in
#: docs/benchmarks.md); devices not listed keep PyTorch's default, as nothing was measured there.
MEMORY_FORMATS = {"cpu": torch.channels_last}


def memory_format(device_type: str) -> torch.memory_format:
    """The layout networks are stored in on ``device_type`` (their outputs are the same either way)."""
    return MEMORY_FORMATS.get(device_type, torch.preserve_format)


def prepare_modules(module: torch.nn.Module, compiled: list[torch.nn.Module], setting: bool | str, device_type: str) -> str | None:
    """Ready a LightningModule for ``device_type``: its weights in the device's :func:`memory_format`,
    then its ``compiled`` parts compiled as :func:`compile_modules` does; returns the backend."""
    module.to(memory_format=memory_format(device_type))
    return compile_modules(compiled, setting, device_type)


def compile_modules(modules: list[torch.nn.Module], setting: bool | str, device_type: str) -> str | None:
    """Compile ``modules`` in place (``nn.Module.compile``: state-dict keys unchanged) as a recipe's
    ``compile`` asks: ``false`` none, ``true`` the device's backend, or a backend by name; returns it."""
    if setting is False or setting is None or str(setting).lower() in ("false", "0", "no"):
        return None
    backend = compile_backend(device_type) if setting is True or str(setting).lower() in ("true", "1", "yes") else str(setting)
    if backend == "hpu_backend":
        import habana_frameworks.torch.core  # noqa: F401  (registers hpu_backend with torch.compile)
    for module in modules:
        module.compile(backend=backend)
    return backend


def hpu_lazy_mode() -> bool:
    """Whether Habana's bridge runs lazy mode (``PT_HPU_LAZY_MODE=1``), asked of the bridge when it is
    installed. Current Intel Gaudi software defaults to eager mode with ``torch.compile`` (0); lazy
    mode is its legacy fallback, where ``mark_step()`` ends each graph."""
    try:
        from habana_frameworks.torch.utils.internal import is_lazy
    except ImportError:
        return os.environ.get("PT_HPU_LAZY_MODE", "0").strip() == "1"
    return bool(is_lazy())


def inference_device(device: str | torch.device | None = None) -> torch.device:
    """Where a model facade runs: the device asked for, else CUDA, else a Gaudi HPU (asked of Habana's
    PyTorch bridge, without importing Lightning), else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    try:
        import habana_frameworks.torch.hpu as hthpu
    except ImportError:
        return torch.device("cpu")
    return torch.device("hpu") if hthpu.is_available() else torch.device("cpu")


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (``lightning-habana``, ``habana-torch-plugin``, ...), or ``None``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class HabanaStatus:
    """What this machine offers for Gaudi: is lightning-habana importable, and how many HPUs."""

    installed: bool
    version: str | None
    device_count: int
    detail: str

    def describe(self) -> str:
        if not self.installed:
            return f"lightning-habana not usable ({self.detail})"
        if self.device_count == 0:
            return f"lightning-habana {self.version} installed, no HPU present"
        return f"lightning-habana {self.version} installed, {self.device_count} HPU(s) present"


def habana_status() -> HabanaStatus:
    """Import lightning-habana and count HPUs, never raising."""
    try:
        import lightning_habana
        from lightning_habana import HPUAccelerator
    except Exception as error:  # ImportError, or lightning-habana's own check of the lightning version
        return HabanaStatus(False, None, 0, f"{type(error).__name__}: {error}")
    try:
        count = HPUAccelerator.auto_device_count() if HPUAccelerator.is_available() else 0
    except Exception as error:  # a broken driver must not break `signver info`
        return HabanaStatus(True, lightning_habana.__version__, 0, f"HPU query failed: {error}")
    return HabanaStatus(True, lightning_habana.__version__, int(count), "")


def cuda_device_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def describe_present() -> dict[str, str]:
    """A line per accelerator kind, for ``signver info`` and for error messages."""
    cuda = cuda_device_count()
    gpu = (
        ", ".join(f"{i}: {torch.cuda.get_device_name(i)}" for i in range(cuda))
        if cuda
        else f"no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'})"
    )
    return {"cpu": f"{os.cpu_count()} cores", "gpu": gpu, "hpu": habana_status().describe()}


def resolve_accelerator(accelerator: str = "auto") -> str:
    """Map ``auto`` to the best accelerator present; check a named one exists."""
    name = accelerator.lower()
    if name == "cuda":
        name = "gpu"
    if name not in ("auto", "cpu", "gpu", "hpu"):
        raise AcceleratorUnavailableError(
            f"unknown accelerator {accelerator!r}; choose one of auto, cpu, gpu, hpu"
        )
    if name == "auto":
        if habana_status().device_count:
            return "hpu"
        return "gpu" if cuda_device_count() else "cpu"
    if name == "hpu":
        status = habana_status()
        if not status.device_count:
            raise AcceleratorUnavailableError(
                f"accelerator 'hpu' requested but no Gaudi HPU is present ({status.describe()}); "
                f"present: {_present_summary()}. To use Gaudi, {HPU_INSTALL_HINT}"
            )
    if name == "gpu" and not cuda_device_count():
        raise AcceleratorUnavailableError(
            f"accelerator 'gpu' requested but no CUDA device is present (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda or 'none'}); present: {_present_summary()}. "
            "Install a CUDA build of torch on a machine with an NVIDIA GPU, or use --accelerator cpu"
        )
    return name


def normalize_precision(precision: str | int | None, accelerator: str) -> str:
    """Lightning's precision string for ``precision`` (``fp32``/``bf16``/... accepted), or the default."""
    if precision is None:
        if accelerator == "gpu" and not torch.cuda.is_bf16_supported():
            return "16-mixed"
        return DEFAULT_PRECISION[accelerator]
    value = _PRECISION_ALIASES.get(str(precision).lower(), str(precision))
    if accelerator == "hpu" and value not in _HPU_PRECISIONS:
        raise AcceleratorUnavailableError(
            f"precision {precision!r} is not supported on HPU; choose one of {', '.join(_HPU_PRECISIONS)}"
        )
    return value


def trainer_kwargs(
    accelerator: AcceleratorName | str = "auto",
    devices: Devices = "auto",
    precision: str | int | None = None,
) -> dict[str, Any]:
    """Return ``accelerator``, ``devices``, ``strategy`` and ``precision``/``plugins`` for ``lightning.Trainer``.

    Args:
        accelerator: ``auto``, ``cpu``, ``gpu`` (CUDA) or ``hpu`` (Gaudi, via lightning-habana).
        devices: how many devices; ``"auto"`` takes all present (one for CPU).
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ``16-mixed``; ``fp32``/``bf16``/``fp16``
            accepted). ``None`` picks ``bf16-mixed`` on HPU and GPU (``16-mixed`` on GPUs without bf16)
            and ``32-true`` on CPU.

    Raises:
        AcceleratorUnavailableError: the accelerator, or that many devices, is not present.
    """
    name = resolve_accelerator(accelerator)
    count = _parse_devices(devices, name)
    chosen_precision = normalize_precision(precision, name)

    if name == "hpu":
        from lightning_habana import HPUAccelerator, HPUDDPStrategy, HPUPrecisionPlugin, SingleHPUStrategy

        strategy = (
            SingleHPUStrategy()
            if count == 1
            else HPUDDPStrategy(parallel_devices=[torch.device("hpu")] * count)
        )
        return {
            "accelerator": HPUAccelerator(),
            "devices": count,
            "strategy": strategy,
            "plugins": [HPUPrecisionPlugin(precision=chosen_precision)],
        }
    if name == "gpu":
        return {
            "accelerator": "gpu",
            "devices": count,
            "strategy": "ddp" if count > 1 else "auto",
            "precision": chosen_precision,
        }
    return {"accelerator": "cpu", "devices": count, "strategy": "ddp" if count > 1 else "auto", "precision": chosen_precision}


def _parse_devices(devices: Devices, accelerator: str) -> int:
    """A device count for ``accelerator`` (already known present); ``auto``/-1 means all of them."""
    text = str(devices).strip().lower()
    count = -1 if text == "auto" else int(text) if text.lstrip("-").isdigit() else 0
    if count == 0 or count < -1:
        raise AcceleratorUnavailableError(f"devices must be a positive number or 'auto', got {devices!r}")
    if accelerator == "cpu":  # several CPU "devices" are DDP processes sharing the cores: a rehearsal of multi-card runs
        return 1 if count == -1 else count
    available = cuda_device_count() if accelerator == "gpu" else habana_status().device_count
    if count == -1:
        return available
    if count > available:
        raise AcceleratorUnavailableError(
            f"{count} {accelerator.upper()} device(s) requested but only {available} present"
        )
    return count


def _present_summary() -> str:
    return "; ".join(f"{kind}: {text}" for kind, text in describe_present().items())
