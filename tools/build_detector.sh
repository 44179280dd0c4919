#!/usr/bin/env bash
# Rebuild the shipped detector (weights/): train its two members, fuse them on the val splits, write its model card.
#
#   bash tools/build_detector.sh                                   # data from ../shared/data, work files in build/
#   DATA_ROOT=/path/to/data WORK=/tmp/build bash tools/build_detector.sh
#
# Members (each selected by val AUC; test splits are only read for the card):
#   1. EfficientNet-Lite0 on fakes_dataset's face swaps (the specialist)
#   2. EfficientNet-Lite0 on both datasets at once (the joint model): a catalog of fakes_dataset and synthetic_dataset
#      (tools/join_datasets.py; synthetic_dataset's 1,400 train faces listed 3 times, so it is 28 % of each epoch)
#   both: 3 epochs, Adam 2e-4, cosine + 1 warm-up, --augment, 224 px, best epoch by val AUC
# then tools/fuse_detectors.py (scales, rule and threshold fitted on both datasets' val splits, members copied in
# float16 where val AUC moves less than 0.002) and tools/detector_card.py. On 2 CPU cores alone: the joint model 49 min
# (measured), the specialist about 35 min at the same rate, 10 min to fuse, 2 min for the card.
# An existing weights/ detector is never written over: move it away first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DATA_ROOT=${DATA_ROOT:-../shared/data}
WORK=${WORK:-build}
OUT=${OUT:-weights}
NAME=generalist
if [ -e "$OUT/$NAME.fused.json" ]; then
  echo "error: $OUT/$NAME.fused.json exists; move $OUT/ away (or set OUT=) to rebuild (a shipped detector is never written over)" >&2
  exit 2
fi
COMMON=(-m EfficientNetLite0 -o Adam -b 32 --lr 2e-4 -e 3 --scheduler cosine --warmup-epochs 1 --select-by auc --augment
        --channels-last --seed 42 --out-dir "$WORK/out" --checkpoint-dir "$WORK/checkpoints")
MEMBERS=("$WORK/checkpoints/fakes_dataset_EfficientNetLite0_Adam.pt" "$WORK/checkpoints/catalog-joint_EfficientNetLite0_Adam.pt")
[ -e "$WORK/joint/catalog.csv" ] || "$PY" tools/join_datasets.py --data-root "$DATA_ROOT" \
  --datasets fakes_dataset synthetic_dataset --repeat synthetic_dataset=3 --out "$WORK/joint/catalog.csv"
"$PY" train_main.py -d fakes_dataset --data-root "$DATA_ROOT" "${COMMON[@]}"
"$PY" train_main.py --catalog "$WORK/joint/catalog.csv" "${COMMON[@]}"
# --margin 0.19: the framing chosen on val with tools/framing_cost.py --split val (README, "The shipped detector")
"$PY" tools/fuse_detectors.py --members "${MEMBERS[@]}" --data-root "$DATA_ROOT" --rule auto --far 0.05 --margin 0.19 \
  --out "$OUT/$NAME.fused.json" --copy-members --half
"$PY" tools/detector_card.py "$OUT/$NAME.fused.json" --data-root "$DATA_ROOT" \
  --summary "The suite's ready-to-run detector: two EfficientNet-Lite0 networks, a face-swap specialist trained on DFDC and a joint model trained on DFDC face swaps and StyleGAN faces at once, fused into one P(fake) by a logistic rule fitted on validation faces, with a threshold chosen on real faces." \
  --recipe "bash tools/build_detector.sh   # DATA_ROOT=$DATA_ROOT; the steps:" \
  "python tools/join_datasets.py --data-root $DATA_ROOT --datasets fakes_dataset synthetic_dataset --repeat synthetic_dataset=3 --out $WORK/joint/catalog.csv" \
  "python train_main.py -d fakes_dataset --data-root $DATA_ROOT ${COMMON[*]}" \
  "python train_main.py --catalog $WORK/joint/catalog.csv ${COMMON[*]}" \
  "python tools/fuse_detectors.py --members ${MEMBERS[*]} --data-root $DATA_ROOT --rule auto --far 0.05 --margin 0.19 --out $OUT/$NAME.fused.json --copy-members --half" \
  "python tools/detector_card.py $OUT/$NAME.fused.json --data-root $DATA_ROOT"
echo "built $OUT/$NAME.fused.json; its card: $OUT/README.md"
