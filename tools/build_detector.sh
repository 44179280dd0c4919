#!/usr/bin/env bash
# Rebuild the shipped detector (weights/): train its two members, fuse them on the val splits, write its model card.
#
#   bash tools/build_detector.sh                                   # data from ../shared/data, work files in build/
#   DATA_ROOT=/path/to/data WORK=/tmp/build bash tools/build_detector.sh
#
# Members (each selected by val AUC; test splits are only read for the card):
#   1. EfficientNet-Lite0 on fakes_dataset's face swaps: 3 epochs, Adam 2e-4, cosine + 1 warm-up, --augment, 224 px
#   2. EfficientNet-Lite0 on synthetic_dataset's StyleGAN faces: 8 epochs, Adam 1e-3 (backbone x0.2), cosine + 1
#      warm-up, --augment, 256 px
# then tools/fuse_detectors.py (scales, rule and threshold fitted on both datasets' val splits, members copied in
# float16 where val AUC moves less than 0.002) and tools/detector_card.py. Measured on 2 CPU cores: about 35 + 70 min
# of training alone (more when the CPU is shared), a few minutes for the rest. An existing weights/ detector is never
# written over: move it away first.
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
COMMON=(--data-root "$DATA_ROOT" --out-dir "$WORK/out" --checkpoint-dir "$WORK/checkpoints" --channels-last --seed 42
        -m EfficientNetLite0 -o Adam --scheduler cosine --warmup-epochs 1 --select-by auc --augment)
"$PY" train_main.py -d fakes_dataset --lr 2e-4 -e 3 "${COMMON[@]}"
"$PY" train_main.py -d synthetic_dataset --image-size 256 --lr 1e-3 --backbone-lr-scale 0.2 -e 8 "${COMMON[@]}"
"$PY" tools/fuse_detectors.py --members "$WORK/checkpoints/fakes_dataset_EfficientNetLite0_Adam.pt" \
  "$WORK/checkpoints/synthetic_dataset_EfficientNetLite0_Adam.pt" --data-root "$DATA_ROOT" --rule auto --far 0.05 \
  --out "$OUT/$NAME.fused.json" --copy-members --half
"$PY" tools/detector_card.py "$OUT/$NAME.fused.json" --data-root "$DATA_ROOT" \
  --summary "The suite's ready-to-run detector: two EfficientNet-Lite0 specialists, one for face swaps (DFDC) and one for GAN faces (StyleGAN), fused into one P(fake) with a threshold chosen on real faces." \
  --recipe "bash tools/build_detector.sh   # DATA_ROOT=$DATA_ROOT" \
  "python train_main.py -d fakes_dataset --lr 2e-4 -e 3 ${COMMON[*]}" \
  "python train_main.py -d synthetic_dataset --image-size 256 --lr 1e-3 --backbone-lr-scale 0.2 -e 8 ${COMMON[*]}" \
  "python tools/fuse_detectors.py --members <the two checkpoints> --data-root $DATA_ROOT --rule auto --far 0.05 --out $OUT/$NAME.fused.json --copy-members --half" \
  "python tools/detector_card.py $OUT/$NAME.fused.json --data-root $DATA_ROOT"
echo "built $OUT/$NAME.fused.json; its card: $OUT/README.md"
