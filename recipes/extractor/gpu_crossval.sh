#!/usr/bin/env bash
# Writer-grouped cross-validation of extractor configurations on one CUDA GPU: every fold of every
# configuration trains side by side (gpu_two_sources.yaml plus the configuration's overrides, which may
# replace EPOCHS); each fold's model then embeds every signature, and each configuration gets its
# pooled out-of-fold report (single pairs and 5 references, `crossval report`).
#   bash recipes/extractor/gpu_crossval.sh [OUT_DIR]
# Environment: CONFIGS (names below; default all), FOLDS (5; the last is the recipes' fixed validation
# writers), EPOCHS (60), MAX_MINUTES (a guard per run), ACCELERATOR (gpu), DATA (../shared/data, else .gpu/:
# copies made by compact_signatures.py), ALL=1 (also train each configuration on every writer, `--val-writers
# none`, then fit its projection on them and its thresholds out of fold: <config>-all.safetensors.part-*; a
# lent machine returns at most 8 files, so give one configuration in CONFIGS with it). OUT_DIR receives the last fold's model of each configuration
# (<config>-fixed.safetensors.part-*: `cat` them; its card in runs.tar.gz) and runs.tar.gz (folds, each
# fold's card with its held-out metrics, <config>-report.json, summary.json, logs, and <config>/oof/: the last fold's
# card and background bank recalibrated from the out-of-fold distances of every writer, `calibrate --out-of-fold`).
# Measured on an H200 (2026-12-04): 2 configurations x 5 folds side by side, 60 and 100 epochs of batch 128, trained
# and exported in 481 s; embedding 3,069 signatures then took ~27 s per fold model, one model after another
# (each fold now embeds as soon as it is trained, side by side). The out-of-fold reports were not reached
# in that run: leave room for them beyond the training.
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
python3 -m signver_torch crossval folds --data "${sources[@]}" --folds "$folds" --fixed cedar:33-40,dutch:037-048 \
  > "$work/folds.json" || exit 1
all_writers=0; [ "${ALL:-0}" = 1 ] && all_writers=1
runs=$(( $(wc -w <<< "$names") * (folds + all_writers) ))
export OMP_NUM_THREADS=$(( $(nproc) / runs > 0 ? $(nproc) / runs : 1 ))
override() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['overrides'][int(sys.argv[2])][sys.argv[3]])" "$work/folds.json" "$1" "$2"; }
train_run() {  # configuration, training writers, validation writers, folder
  # shellcheck disable=SC2086
  python3 -m signver_torch train extractor --config recipes/extractor/gpu_two_sources.yaml --data "${sources[@]}" \
    --train-writers "$2" --val-writers "$3" --max-epochs "${EPOCHS:-60}" --accelerator "${ACCELERATOR:-gpu}" ${configs[$1]} \
    --trainer.max_time="00:00:$(printf %02d "${MAX_MINUTES:-6}"):00" --out "$4/model" --run-dir "$4/run"
}
embed_fold() {  # this fold's model embeds every signature as soon as it is trained (name, fold)
  python3 -m signver_torch crossval embed --fold "$2" --data "${sources[@]}" --folds "$work/folds.json" \
    --checkpoints "$work/$1/fold$2/model.safetensors" --out "$work/$1/fold$2/embeddings.safetensors"
}
for name in $names; do
  for ((i = 1; i <= folds; i++)); do
    { train_run "$name" "$(override $((i - 1)) train_writers)" "$(override $((i - 1)) val_writers)" "$work/$name/fold$i" \
        && embed_fold "$name" "$i"; } > "$work/$name-fold$i.log" 2>&1 &
  done
done
everyone=$(python3 -c "import json, sys; from signver_torch.data.signatures import compact_writers
print(compact_writers([w for fold in json.load(open(sys.argv[1]))['folds'] for w in fold]))" "$work/folds.json")
if [ "$all_writers" = 1 ]; then  # beside the folds: each configuration on every writer, none held out
  for name in $names; do
    train_run "$name" "$everyone" none "$work/$name/all" > "$work/$name-all.log" 2>&1 &
  done
fi
wait
echo "trained and embedded in $((SECONDS - begin)) s" | tee -a "$work/timing.txt"
fixed_train=$(override $((folds - 1)) train_writers)
calibrate_out_of_fold() {  # configuration, checkpoint, background writers, more options: thresholds from every fold's held-out writers
  python3 -m signver_torch calibrate extractor --data "${sources[@]}" --out-of-fold "$work/$1"/fold*/embeddings.safetensors \
    --references 5 --background-writers "$3" --checkpoint "$2" --quiet "${@:4}"
}
for name in $names; do
  python3 -m signver_torch crossval report "$work/$name"/fold*/embeddings.safetensors --references 5 \
    > "$work/$name-report.json" 2> "$work/$name-report.log" &
  # the last fold's model recalibrated out of fold (a copy: card and bank only)
  mkdir -p "$work/$name/oof" && cp "$work/$name/fold$folds"/model.{safetensors,json} "$work/$name/oof/"
  calibrate_out_of_fold "$name" "$work/$name/oof/model.safetensors" "$fixed_train" > "$work/$name-oof.log" 2>&1 &
  if [ "$all_writers" = 1 ]; then  # its projection on every writer, its thresholds out of fold
    { calibrate_out_of_fold "$name" "$work/$name/all/model.safetensors" "$everyone" --writers "$everyone" \
      && split -b 12m "$work/$name/all/model.safetensors" "$out/$name-all.safetensors.part-"; } >> "$work/$name-all.log" 2>&1 &
  fi
  # a lent machine hands back files of at most 16 MiB: the model comes in parts (cat NAME.part-* > NAME)
  split -b 12m "$work/$name/fold$folds/model.safetensors" "$out/$name-fixed.safetensors.part-"
done
wait
echo "reported in $((SECONDS - begin)) s" | tee -a "$work/timing.txt"
python3 -m signver_torch crossval cards "$work" | tee "$work/summary.json"
# the weights stay out (the last fold's come in parts above); <config>/oof/ keeps its card and background bank
tar -czf "$out/runs.tar.gz" -C "$work" --exclude='fold*/*.safetensors' --exclude='oof/model.safetensors' --exclude='all/model.safetensors' --exclude='*.ckpt' \
  --exclude='lightning_logs' . 2>/dev/null
ls -la "$out"
