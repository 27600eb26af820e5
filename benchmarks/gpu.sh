#!/usr/bin/env bash
# The GPU benchmark as one prepared run (about 5 minutes on an H100): fp32 and bf16-mixed, raw and
# Lightning paths, then bf16-mixed with torch.compile (raw), each run writing its JSON records.
#
#   bash benchmarks/gpu.sh                 # records into benchmarks/results/, then the table is rebuilt
#   OUT=/some/dir bash benchmarks/gpu.sh   # records into $OUT (a lent machine's output folder)
#
# signver-torch must be importable (pip install -e . once). Where the machine has no package index,
# wheels of the pure-Python dependencies placed in .whl/ are installed into /tmp/site first.
# ACCELERATOR=cpu STEPS=2 WARMUP=1 runs the same sequence on a CPU, to check the script itself.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
accelerator=${ACCELERATOR:-gpu}
steps=${STEPS:-20}
warmup=${WARMUP:-5}
mkdir -p "$out"
if [ -d .whl ] && ! python -c "import lightning, kornia, pytorch_metric_learning" 2>/dev/null; then
    pip install --quiet --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
[ "$accelerator" = gpu ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.csv"
bench() { python benchmarks/throughput.py --accelerator "$accelerator" --steps "$steps" --warmup "$warmup" --out "$out" --quiet "$@"; }
bench --precision fp32
bench --precision bf16-mixed
bench --precision bf16-mixed --compile --paths raw
if [ "$out" = benchmarks/results ]; then python benchmarks/compare.py; else python benchmarks/compare.py --results "$out" --print > "$out/table.md"; fi
