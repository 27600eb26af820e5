#!/usr/bin/env bash
# One lent GPU session for the detector, as one prepared run (about 9 minutes on an H100):
#   1. the throughput benchmark of the three models (bf16, raw loop), which also sizes the schedule;
#   2. two lite-detector runs side by side from recipes/detector/gpu_lite.yaml, at 640 px and at
#      448 px (the CPU recipe's size), each given TRAIN_SECONDS; the epoch count of each is derived
#      from the measured detector throughput and written into its recipe command;
#   3. each run exports its checkpoint and evaluates it on the held-out real pages (the card's metrics).
#
#   bash recipes/detector/gpu_session.sh                   # results into runs/gpu-session/
#   OUT=/some/dir bash recipes/detector/gpu_session.sh     # results into $OUT (a lent machine's output folder)
#
# Where the machine has no package index, wheels of the missing pure-Python dependencies placed in
# .whl/ are installed into /tmp/site first; where ../shared/data is absent, a copy of it in .gpu/
# (cedar/, documents/) stands in for it. The checkpoints come back split in parts of 15 MB
# (`cat NAME.safetensors.part-* > NAME.safetensors`).
# ACCELERATOR=cpu TRAIN_SECONDS=20 EXTRA="--data.synthetic_pages=8 ..." checks the script on a CPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-runs/gpu-session}
accelerator=${ACCELERATOR:-gpu}
train_seconds=${TRAIN_SECONDS:-330}
extra=${EXTRA:-}
mkdir -p "$out/bench" runs/gpu
begin=$SECONDS
if [ -d .whl ] && ! python3 -c "import lightning, kornia, pytorch_metric_learning, jsonargparse, pycocotools" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1
if [ ! -d ../shared/data ] && [ -d .gpu ]; then mkdir -p ../shared && ln -s "$PWD/.gpu" ../shared/data; fi
[ "$accelerator" = gpu ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/bench/nvidia-smi.csv"
signver() { python3 -m signver_torch "$@"; }

signver benchmark --accelerator "$accelerator" --precision bf16-mixed --paths raw --models detector --batch-size 16 \
    --steps 10 --warmup 3 --out "$out/bench" --quiet
signver benchmark --accelerator "$accelerator" --precision bf16-mixed --paths raw --models extractor cleaner \
    --steps 10 --warmup 3 --out "$out/bench" --quiet
echo "benchmarks done at $((SECONDS - begin)) s"

# Epochs that fit TRAIN_SECONDS: the benchmark's detector training rate (448 px, one box a page), scaled by
# pixels for 640 px, shared by the two runs (x0.5) with Lightning, validation and data loading (x0.9),
# capped by what 7 loader workers draw (~20 ms a page); a multiple of the recipe's validation interval.
# Lightning's max_time stops a run that the estimate sized too long (its learning rate is then not quite annealed).
epochs() {
    python3 - "$out/bench" "$1" "$train_seconds" <<'EOF'
import json, pathlib, sys
records = [r for f in pathlib.Path(sys.argv[1]).glob("2*.json") for r in json.loads(f.read_text())]
rate = next((r["images_per_second"] for r in records if r["model"] == "detector" and r["mode"] == "train"), 200.0)
size, seconds = int(sys.argv[2]), float(sys.argv[3])
rate = min(rate * (448 / size) ** 2 * 0.5 * 0.9, 7 / 0.020)
pages = 3000 + 144 * 3
print(max(4, int(rate * seconds / pages) // 4 * 4))
EOF
}
pids=()
max_time=$(printf "00:00:%02d:%02d" $(((train_seconds + 90) / 60)) $(((train_seconds + 90) % 60)))
for size in 640 448; do
    n=$(epochs "$size") || exit 1
    echo "lite-$size: $n epochs"
    timeout $((train_seconds + 200)) python3 -m signver_torch train detector --config recipes/detector/gpu_lite.yaml \
        --accelerator "$accelerator" --out "runs/gpu/lite$size/model" --run-dir "runs/gpu/lite$size" --max-epochs "$n" \
        --model.image_size="$size" --data.image_size="$size" --trainer.max_time="$max_time" $extra > "$out/bench/lite$size.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || echo "a training run failed (exit $?): see its log"; done
echo "training done at $((SECONDS - begin)) s"

for size in 640 448; do
    model=runs/gpu/lite$size/model
    [ -f "$model.safetensors" ] || continue
    split -b 15M "$model.safetensors" "$out/lite$size.safetensors.part-"
    cp "$model.json" "$out/lite$size.json"
    tail -n 2 "$out/bench/lite$size.log"
done
tar czf "$out/logs.tgz" "$out/bench" runs/gpu/*/lightning_logs 2>/dev/null
rm -rf "$out/bench"
echo "all done at $((SECONDS - begin)) s"
