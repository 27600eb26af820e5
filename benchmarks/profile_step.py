"""Where one training step of a model spends its time: torch.profiler over the benchmark's raw loop.

    python benchmarks/profile_step.py --model detector --accelerator gpu --batch-size 16
    python benchmarks/profile_step.py --model detector --accelerator cpu --recipe cpu --batch-size 2 --steps 3

Prints the operators with the most self time on the device (CUDA) or the host (CPU), and the share
of the step the host spends launching work: what `signver benchmark` measures as one number, taken
apart. Same module, recipe, batch and loss as the benchmark's raw loop (`signver_torch.benchmark`).
"""

from __future__ import annotations

import argparse
import time

from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from signver_torch.benchmark import _autocast, benchmarked_modules, device_of, module_setup, on_device, synchronizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="detector", choices=benchmarked_modules())
    parser.add_argument("--recipe", help="recipe name or path (default: the accelerator's)")
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--precision", choices=("fp32", "bf16-mixed"), help="default: the recipe's")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    parser.add_argument("--steps", type=int, default=5, help="profiled steps, after 3 warm-up steps")
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()

    device, sync = device_of(args.accelerator), synchronizer(args.accelerator)
    setup = module_setup(args.model, args.recipe or args.accelerator, args.batch_size, args.precision)
    module = setup.build().to(device).train()
    optimizer = module.optimization(args.steps + 3)["optimizer"]

    def step() -> None:
        batch = on_device(module, setup.batch, device)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(args.accelerator, setup.precision):
            loss, _ = module.training_loss(batch)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.accelerator == "gpu" else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        sync()
    wall = (time.perf_counter() - start) / args.steps
    sort = "self_device_time_total" if args.accelerator == "gpu" else "self_cpu_time_total"
    print(f"{args.model} train step ({setup.recipe}), batch {setup.batch_size}, {setup.precision} on {args.accelerator}: "
          f"{wall * 1000:.1f} ms per step under the profiler")
    events = prof.key_averages()
    if args.accelerator == "gpu":
        kernels = [e for e in events if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
        device_ms = sum(e.self_device_time_total for e in kernels) / 1000 / args.steps  # as the table's total
        launches = sum(e.count for e in events if e.key.startswith(("cudaLaunchKernel", "cuLaunchKernel"))) / args.steps
        print(f"device busy {device_ms:.1f} ms per step ({100 * device_ms / (wall * 1000):.0f}% of the step), "
              f"{launches:.0f} kernel launches per step")
    print(events.table(sort_by=sort, row_limit=args.rows))


if __name__ == "__main__":
    main()
