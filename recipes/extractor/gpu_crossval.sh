#!/usr/bin/env bash
# Writer-grouped cross-validation of extractor configurations on one CUDA GPU: every fold of every
# configuration trains side by side (gpu_two_sources.yaml plus the configuration's overrides, which may
# replace EPOCHS), then each configuration's fold models embed every signature for the out-of-fold report.
#   bash recipes/extractor/gpu_crossval.sh [OUT_DIR]
#   python -m signver_torch.extractor.crossval report OUT_DIR/<config>-embeddings.safetensors --references 5
# Environment: CONFIGS (names below; default all), FOLDS (5; the last is the recipes' fixed validation
# writers), EPOCHS (60), MAX_MINUTES (a guard per run), ACCELERATOR (gpu), DATA (../shared/data, else .gpu/:
# copies made by compact_signatures.py). OUT_DIR receives <config>-embeddings.safetensors, the last fold's
# model of each configuration (<config>-fixed.safetensors.part-*: `cat` them; its card in runs.tar.gz) and runs.tar.gz
# (folds, cards with each fold's held-out metrics, summary.json, logs).
# Measured on an H200 (2026-12-04): 2 configurations x 5 folds side by side, 60 and 100 epochs of batch 128, trained
# and exported in 481 s; embedding 3,069 signatures took ~27 s per fold model, so the embedding step needs
# ~2.5 min more per configuration (run side by side): budget about 11 minutes for the defaults.
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
  # a lent machine hands back files of at most 16 MiB: the model comes in parts (cat NAME.part-* > NAME)
  split -b 12m "$work/$name/fold$folds/model.safetensors" "$out/$name-fixed.safetensors.part-"
done
wait
echo "embedded in $((SECONDS - begin)) s" | tee -a "$work/timing.txt"
python3 -m signver_torch.extractor.crossval cards "$work" | tee "$work/summary.json"
tar -czf "$out/runs.tar.gz" -C "$work" --exclude='*.safetensors' --exclude='*.ckpt' --exclude='lightning_logs' . 2>/dev/null
ls -la "$out"
