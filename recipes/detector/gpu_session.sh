#!/usr/bin/env bash
# One lent GPU session for the detector, as one prepared run (about 9 minutes on an H100):
#   1. the throughput benchmark of the three models (bf16, raw loop), which also sizes the schedule;
#   2. detector runs of RECIPE side by side, one per size in SIZES, each given TRAIN_SECONDS; the epoch
#      count of each is derived from the detector's training rate and written into its recipe command;
#   3. each run exports its checkpoint and evaluates it on the held-out real pages (the card's metrics).
#
#   bash recipes/detector/gpu_session.sh                   # results into runs/gpu-session/
#   OUT=/some/dir bash recipes/detector/gpu_session.sh     # results into $OUT (a lent machine's output folder)
#   BENCHMARK=0 RECIPE=recipes/detector/gpu_finetune.yaml SIZES=640 TRAIN_SECONDS=400 bash recipes/detector/gpu_session.sh
#                                                          # one fine-tune, sized by RATE instead of a new benchmark
#
# RATE (default 141: the H100 figure in benchmarks/results) is the detector's training images/s at
# 448 px, batch 16, when BENCHMARK=0. Where the machine has no package index, wheels of the missing
# pure-Python dependencies placed in .whl/ are installed into /tmp/site first; where ../shared/data is
# absent, a copy of it in .gpu/ (cedar/, documents/) stands in for it. The checkpoints come back split
# in parts of 15 MB (`cat NAME.safetensors.part-* > NAME.safetensors`).
# ACCELERATOR=cpu TRAIN_SECONDS=20 EXTRA="--data.synthetic_pages=8 ..." checks the script on a CPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-runs/gpu-session}
accelerator=${ACCELERATOR:-gpu}
train_seconds=${TRAIN_SECONDS:-330}
recipe=${RECIPE:-recipes/detector/gpu_lite.yaml}
sizes=${SIZES:-640 448}
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

if [ "${BENCHMARK:-1}" = 1 ]; then
    signver benchmark --accelerator "$accelerator" --precision bf16-mixed --paths raw --models detector --batch-size 16 \
        --steps 10 --warmup 3 --out "$out/bench" --quiet
    signver benchmark --accelerator "$accelerator" --precision bf16-mixed --paths raw --models extractor cleaner \
        --steps 10 --warmup 3 --out "$out/bench" --quiet
    echo "benchmarks done at $((SECONDS - begin)) s"
fi

# Epochs that fit TRAIN_SECONDS: the detector training rate (448 px, one box a page: the benchmark's, or
# RATE), scaled by pixels for the run's size, shared by the runs side by side, with Lightning, validation
# and data loading (x0.9), capped by what the recipe's loader workers draw (~20 ms a page); an epoch is the
# recipe's synthetic pages plus its real training pages times real_repeat.
# Lightning's max_time stops a run that the estimate sized too long (its learning rate is then not quite annealed).
epochs() {
    python3 - "$out/bench" "$recipe" "$1" "$train_seconds" "$(wc -w <<< "$sizes")" "${RATE:-141}" <<'EOF'
import json, pathlib, sys
import yaml
from signver_torch.data.detection import read_detection_dataset, split_pages
bench, recipe, size, seconds, runs, rate = sys.argv[1], yaml.safe_load(open(sys.argv[2])), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
records = [r for f in pathlib.Path(bench).glob("2*.json") for r in json.loads(f.read_text())]
rate = next((r["images_per_second"] for r in records if r["model"] == "detector" and r["mode"] == "train"), rate)
data = recipe["data"]
rate = min(rate * (448 / size) ** 2 / runs * 0.9, data["num_workers"] / 0.020)
real = len(split_pages(read_detection_dataset(data["real_dir"]), data["held_out_every"])[0]) if data.get("real_dir") else 0
pages = data["synthetic_pages"] + real * data.get("real_repeat", 1)
every = recipe["trainer"].get("check_val_every_n_epoch", 1)
print(max(every, int(rate * seconds / pages) // every * every))
EOF
}
pids=()
max_time=$(printf "00:00:%02d:%02d" $(((train_seconds + 90) / 60)) $(((train_seconds + 90) % 60)))
for size in $sizes; do
    n=$(epochs "$size") || exit 1
    echo "lite-$size: $n epochs"
    timeout $((train_seconds + 200)) python3 -m signver_torch train detector --config "$recipe" \
        --accelerator "$accelerator" --out "runs/gpu/lite$size/model" --run-dir "runs/gpu/lite$size" --max-epochs "$n" \
        --model.image_size="$size" --data.image_size="$size" --trainer.max_time="$max_time" $extra > "$out/bench/lite$size.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || echo "a training run failed (exit $?): see its log"; done
echo "training done at $((SECONDS - begin)) s"

for size in $sizes; do
    model=runs/gpu/lite$size/model
    [ -f "$model.safetensors" ] || continue
    split -b 15M "$model.safetensors" "$out/lite$size.safetensors.part-"
    cp "$model.json" "$out/lite$size.json"
    tail -n 2 "$out/bench/lite$size.log"
done
tar czf "$out/logs.tgz" "$out/bench" runs/gpu/*/lightning_logs 2>/dev/null
rm -rf "$out/bench"
echo "all done at $((SECONDS - begin)) s"
