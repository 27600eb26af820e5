"""``signver doctor``: is this environment one where Gaudi training will work as the docs describe?

Checks, each ``ok``, ``warn`` or ``fail`` with the reason and what to do: that torch is Intel Gaudi's
build (``habana_frameworks`` importable), that lightning and lightning-habana are a pair Intel's
support matrices list, that HPUs are present, and that ``PT_HPU_LAZY_MODE`` matches the execution
mode chosen (``eager``, the current default, which ``compile: true`` recipes need, or the legacy ``lazy``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Literal

from signver_torch.accelerators import habana_status, installed_version

Status = Literal["ok", "warn", "fail"]

#: lightning-habana release -> the Lightning release Intel Gaudi's support matrix pairs it with
#: (Intel Gaudi software 1.15: 1.4.0/2.2.0; 1.16: 1.5.0/2.2.4; 1.17 and 1.18: 1.6.0/2.3.3).
SUPPORTED_PAIRS = {"1.4.0": "2.2.0", "1.5.0": "2.2.4", "1.6.0": "2.3.3"}


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


def check_torch() -> Check:
    import torch

    try:
        import habana_frameworks.torch  # noqa: F401
    except ImportError as error:
        return Check("torch", "fail", f"torch {torch.__version__} is not Intel Gaudi's build (habana_frameworks: {error}); "
                                      "run inside Intel Gaudi's PyTorch container and do not let pip replace its torch")
    plugin = installed_version("habana-torch-plugin") or "unknown"
    return Check("torch", "ok", f"torch {torch.__version__} with habana-torch-plugin {plugin}")


def check_versions() -> Check:
    lightning, habana = installed_version("lightning"), installed_version("lightning-habana")
    if habana is None or lightning is None:
        return Check("lightning", "fail", f"lightning {lightning or 'missing'}, lightning-habana {habana or 'missing'}: "
                                          "install both (docs/hpu.md)")
    listed = ", ".join(f"lightning-habana {h} + Lightning {l}" for h, l in SUPPORTED_PAIRS.items())
    if tuple(int(part) for part in lightning.split(".")[:2] if part.isdigit()) < (2, 4):
        return Check("lightning", "fail", f"lightning {lightning}: this project needs Lightning >= 2.4 (with 2.3.3, the release "
                                          "Intel pairs with lightning-habana 1.6.0, a run fits but its export fails); "
                                          "install lightning 2.5.5")
    if SUPPORTED_PAIRS.get(habana) == lightning:
        return Check("lightning", "ok", f"lightning {lightning} + lightning-habana {habana}: a pair Intel's support matrix lists")
    return Check("lightning", "warn", f"lightning {lightning} + lightning-habana {habana} is not a pair Intel's support "
                                      f"matrices list ({listed}); this project needs Lightning >= 2.4 and runs its tests with "
                                      "lightning-habana 1.6.0 + Lightning 2.5.5 (on CPU, HPU mocked)")


def check_devices() -> Check:
    status = habana_status()
    if not status.installed:
        return Check("hpu", "fail", status.describe())
    return Check("hpu", "ok" if status.device_count else "fail", status.describe())


def check_mode(mode: str) -> Check:
    value = os.environ.get("PT_HPU_LAZY_MODE")
    wanted = "1" if mode == "lazy" else "0"
    if value is None:
        return Check("mode", "warn", f"PT_HPU_LAZY_MODE is unset: the installed software's default applies (eager in current "
                                     f"Intel Gaudi releases, lazy in older ones); export PT_HPU_LAZY_MODE={wanted} for {mode} mode")
    if value.strip() != wanted:
        return Check("mode", "fail", f"PT_HPU_LAZY_MODE={value} selects {'lazy' if value.strip() == '1' else 'eager'} mode but "
                                     f"{mode} mode was chosen: export PT_HPU_LAZY_MODE={wanted}")
    return Check("mode", "ok", f"PT_HPU_LAZY_MODE={value}: {mode} mode")


def run_checks(mode: str = "eager") -> list[Check]:
    return [check_torch(), check_versions(), check_devices(), check_mode(mode)]


def as_dicts(checks: list[Check]) -> list[dict[str, str]]:
    return [asdict(check) for check in checks]
