"""``signver info`` and ``signver doctor``: what is installed, and whether a Gaudi container is ready."""

from __future__ import annotations

import argparse
import json

from signver_torch.cli.options import json_flag


def cmd_info(args: argparse.Namespace) -> int:
    """Versions, accelerators present and shipped checkpoints (one JSON object with --json)."""
    from signver_torch.info import collect_info

    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"signver-torch {info['packages']['signver-torch']} (python {info['python']}, {info['platform']})")
    print("\npackages:")
    for name, version in info["packages"].items():
        if name != "signver-torch":
            print(f"  {name:<24} {version or 'not installed'}")
    print("\naccelerators:")
    for kind, text in info["accelerators"].items():
        print(f"  {kind:<4} {text}")
    print("\nshipped checkpoints:")
    if not info["checkpoints"]:
        print("  none yet")
    for entry in info["checkpoints"]:
        shown = {k: v for k, v in entry.get("metrics", {}).items() if k in ("eer", "auc", "eer_random", "threshold")}
        detail = entry.get("error") or ", ".join(f"{k}={v:.4g}" for k, v in shown.items()) or "no metrics"
        print(f"  {entry['module']}/{entry['name']}: {detail}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """The Gaudi container checks, one line each; exit 1 if any failed."""
    from signver_torch.doctor import as_dicts, run_checks

    checks = run_checks(args.mode)
    if args.json:
        print(json.dumps(as_dicts(checks), indent=2))
    else:
        for check in checks:
            print(f"{check.status:<4}  {check.name:<9} {check.detail}")
    return 1 if any(check.status == "fail" for check in checks) else 0


def add_info(commands: argparse._SubParsersAction) -> None:
    info = commands.add_parser("info", help="versions, accelerators present and shipped checkpoints")
    json_flag(info)
    info.set_defaults(handler=cmd_info)


def add_doctor(commands: argparse._SubParsersAction) -> None:
    doctor = commands.add_parser("doctor", help="inside a Gaudi container: is torch Habana's, are lightning/lightning-habana "
                                                 "a supported pair, are HPUs present, does PT_HPU_LAZY_MODE match the mode")
    doctor.add_argument("--mode", choices=("eager", "lazy"), default="eager",
                        help="execution mode the run will use: eager (default; needed by compile: true) or legacy lazy")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(handler=cmd_doctor)
