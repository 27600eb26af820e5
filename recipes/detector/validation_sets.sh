#!/usr/bin/env bash
# The fixed synthetic validation set of each page family (issue 33): seeded, from the validation writers of
# all three sources (never trained on), written under OUT (default ../detector-validation) as YOLO folders.
#   recipes/detector/validation_sets.sh OUT [PAGES]
#   signver evaluate detector --data ../shared/data/documents OUT/* --held-out-every 3 --json
set -euo pipefail
out=${1:-../detector-validation}
pages=${2:-40}
data=${SIGNVER_DATA:-../shared/data}
writers="cedar:33-40,dutch:037-048,chinese:055-067,chinese:069-075"
for family in letter sheet form cheque contract; do
  signver synthesize pages --data "$data/cedar" "$data/dutch" "$data/chinese" --writers "$writers" \
    --layout "$family" --seed 0 --pages "$pages" --out "$out/$family" --quiet
done
# phone photos of the family the shipped detector failed on, and of forms
for family in sheet form; do
  signver synthesize pages --data "$data/cedar" "$data/dutch" "$data/chinese" --writers "$writers" \
    --layout "$family" --photo 1 --seed 1 --pages "$pages" --out "$out/${family}_photo" --quiet
done
