#!/usr/bin/env bash
# Train several extractor candidates side by side on one CUDA GPU, keep the one with the lowest
# skilled-forgery EER on the held-out writers (33-40), and pack it with every candidate's card.
#   bash recipes/extractor/gpu_candidates.sh DATA_DIR OUT_DIR [MAX_MINUTES]
# The chosen checkpoint's figures are then re-measured with `signver evaluate extractor` on the
# original scans. Choosing among N candidates on the writers that are also reported is a selection
# (disclosed in docs/extractor.md), not an untouched test.
set -uo pipefail
data=${1:?data dir}; out=${2:?out dir}; minutes=${3:-5}
signver() { python3 -m signver_torch "$@"; }
common=(--data.data_dir "$data" --trainer.max_time "00:00:$(printf %02d "$minutes"):00")
declare -A candidates=(
  [r18-ema]="--model.ema_decay 0.998 --data.writers_per_batch 8 --trainer.max_epochs 150"
  [r18-ema-wpb16]="--model.ema_decay 0.998 --trainer.max_epochs 150"
  [r18-noema]="--data.writers_per_batch 8 --trainer.max_epochs 150"
  [r34-ema]="--model.backbone resnet34 --model.ema_decay 0.998 --data.writers_per_batch 8 --trainer.max_epochs 100"
  [r18-ema-hires]="--model.ema_decay 0.998 --data.writers_per_batch 8 --data.height 144 --data.width 240 --trainer.max_epochs 100"
)
mkdir -p "$out/candidates"
# Each process preprocesses the scans on the CPU first: N processes with all-core thread pools each
# oversubscribe the host (measured on a 16-core H200 host: 0.5 instead of ~100 images/s), so split the cores.
export OMP_NUM_THREADS=$(( $(nproc) / ${#candidates[@]} > 0 ? $(nproc) / ${#candidates[@]} : 1 ))
for name in "${!candidates[@]}"; do
  # shellcheck disable=SC2086
  signver train extractor --config recipes/extractor/gpu.yaml "${common[@]}" ${candidates[$name]} \
    --out "$out/candidates/$name/model" --run-dir "$out/candidates/$name/run" >"$out/candidates/$name.log" 2>&1 &
done
wait
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
cards = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("candidates/*/model.json"))}
summary = {name: {"eer": c.get("metrics", {}).get("eer"), "epochs": c["training"]["epochs"],
                  "seconds": c["wall_time_seconds"], "hardware": c["hardware"]} for name, c in cards.items()}
best = min(summary, key=lambda n: summary[n]["eer"]) if summary else None
(out / "summary.json").write_text(json.dumps({"best": best, "candidates": summary, "cards": cards}, indent=1))
print(json.dumps({"best": best, **summary}, indent=1))
(out / "best").write_text(best or "")
PY
