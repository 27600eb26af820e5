#!/usr/bin/env bash
# Writer-grouped cross-validation of extractor configurations on one CUDA GPU: every fold of every
# configuration trains side by side (gpu_two_sources.yaml plus the configuration's overrides, which may
# replace EPOCHS), then
# each configuration's fold models embed every signature for the out-of-fold report.
#   bash recipes/extractor/gpu_crossval.sh [OUT_DIR]
#   python -m signver_torch.extractor.crossval report OUT_DIR/<config>-embeddings.safetensors --references 5
# Environment: CONFIGS (names below; default all), FOLDS (5; the last is the recipes' fixed validation
# writers), EPOCHS (60), MAX_MINUTES (a guard per run), ACCELERATOR (gpu), DATA (../shared/data, else .gpu/:
# copies made by compact_signatures.py). OUT_DIR receives <config>-embeddings.safetensors, the last fold's
# model of each configuration (<config>-fixed.safetensors, fp16; its card in runs.tar.gz) and runs.tar.gz
# (folds, cards, logs).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-${OUT:-runs/crossval}}
work=${WORK:-/tmp/signver-crossval}
mkdir -p "$out" "$work"
begin=$SECONDS
if [ -d .whl ] && ! python3 -c "import kornia, pytorch_metric_learning, jsonargparse" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
data=${DATA:-../shared/data}; [ -d "$data/cedar" ] || data=.gpu
sources=("$data/cedar" "$data/dutch")
folds=${FOLDS:-5}
declare -A configs=(
  [r18]=""
  [r18-long]="--max-epochs 100"
)
names=${CONFIGS:-${!configs[@]}}
[ "${ACCELERATOR:-gpu}" = gpu ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$work/nvidia-smi.csv"
python3 -m signver_torch.extractor.crossval folds --data "${sources[@]}" --folds "$folds" --fixed cedar:33-40,dutch:037-048 \
  > "$work/folds.json" || exit 1
runs=$(( $(wc -w <<< "$names") * folds ))
export OMP_NUM_THREADS=$(( $(nproc) / runs > 0 ? $(nproc) / runs : 1 ))
override() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['overrides'][int(sys.argv[2])][sys.argv[3]])" "$work/folds.json" "$1" "$2"; }
for name in $names; do
  for ((i = 1; i <= folds; i++)); do
    # shellcheck disable=SC2086
    python3 -m signver_torch train extractor --config recipes/extractor/gpu_two_sources.yaml --data "${sources[@]}" \
      --train-writers "$(override $((i - 1)) train_writers)" --val-writers "$(override $((i - 1)) val_writers)" \
      --max-epochs "${EPOCHS:-60}" --accelerator "${ACCELERATOR:-gpu}" ${configs[$name]} \
      --trainer.max_time="00:00:$(printf %02d "${MAX_MINUTES:-6}"):00" \
      --out "$work/$name/fold$i/model" --run-dir "$work/$name/fold$i/run" > "$work/$name-fold$i.log" 2>&1 &
  done
done
wait
echo "trained in $((SECONDS - begin)) s" | tee -a "$work/timing.txt"
for name in $names; do
  checkpoints=()
  for ((i = 1; i <= folds; i++)); do checkpoints+=("$work/$name/fold$i/model.safetensors"); done
  python3 -m signver_torch.extractor.crossval embed --data "${sources[@]}" --folds "$work/folds.json" \
    --checkpoints "${checkpoints[@]}" --out "$out/$name-embeddings.safetensors" > "$work/$name-embed.log" 2>&1 &
  cp "$work/$name/fold$folds/model.safetensors" "$out/$name-fixed.safetensors" 2>/dev/null
done
wait
echo "embedded in $((SECONDS - begin)) s" | tee -a "$work/timing.txt"
python3 - "$work" <<'PY'
import json, pathlib, sys
for card in sorted(pathlib.Path(sys.argv[1]).glob("*/fold*/model.json")):
    c = json.loads(card.read_text())
    m = c.get("metrics", {})
    print(card.parent.parent.name, card.parent.name, "epochs", c["training"]["epochs"], "seconds", c["wall_time_seconds"],
          "eer", m.get("eer"), {k: v.get("eer") for k, v in m.get("per_source", {}).items()})
PY
tar -czf "$out/runs.tar.gz" -C "$work" --exclude='*.safetensors' --exclude='*.ckpt' --exclude='lightning_logs' . 2>/dev/null
ls -la "$out"
