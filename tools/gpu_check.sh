#!/usr/bin/env bash
# One short GPU check (a few minutes on one GPU): the quick pipeline's trainings with --amp and --channels-last on CUDA,
# a DDP run on every visible GPU, and detect.py on a clip; one line per check with its time and throughput.
#
#   bash tools/gpu_check.sh                 # on a machine with CUDA (the device tool's GPU, Colab)
#   DEVICE=cpu bash tools/gpu_check.sh      # the same checks on the CPU (a dry run of the script itself)
#
# Exit status: 0 when every check passed, 1 otherwise (each failure names its last line of output).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DEVICE=${DEVICE:-cuda}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAILED=0
TRAIN=(--data-root "$WORK/data" --image-size 128 -b 32 --no-progress --out-dir "$WORK/out" --checkpoint-dir "$WORK/ckpt")
[ "$DEVICE" = "cpu" ] && SCALE=(--train 64 --val 16 --test 16) || SCALE=(--train 600 --val 100 --test 100)

# check NAME IMAGES COMMAND...: run it, print PASS/FAIL, seconds and images/s (IMAGES = images it processes, or 0)
check() {
  local name=$1 images=$2
  shift 2
  local start end seconds
  start=$(date +%s.%N)
  if "$@" > "$WORK/last.log" 2>&1; then
    end=$(date +%s.%N)
    seconds=$(awk "BEGIN { print $end - $start }")
    if [ "$images" -gt 0 ]; then
      printf 'PASS  %-70s %7.1f s  %8.1f img/s\n' "$name" "$seconds" "$(awk "BEGIN { print $images / $seconds }")"
    else
      printf 'PASS  %-70s %7.1f s\n' "$name" "$seconds"
    fi
  else
    FAILED=1
    printf 'FAIL  %-70s %s\n' "$name" "$(grep -v '^\s*$' "$WORK/last.log" | tail -n 1)"
  fi
}

"$PY" - <<EOF || { echo "FAIL  torch cannot use device $DEVICE"; exit 1; }
import torch
device = "$DEVICE"
if device.startswith("cuda"):
    assert torch.cuda.is_available(), "CUDA is not available"
    print(f"device: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
else:
    print(f"device: {device}, torch {torch.__version__}")
EOF
"$PY" tools/make_demo_dataset.py --out-dir "$WORK/data" --size 128 "${SCALE[@]}" --no-progress > /dev/null
N_TRAIN=$(find "$WORK/data/fakes_dataset/train" -type f | wc -l)
EPOCHS=2
AMP=(--amp --channels-last)
check "train SimpleNet on fakes_dataset (--amp --channels-last)" $((N_TRAIN * EPOCHS)) \
  "$PY" train_main.py -d fakes_dataset -m SimpleNet -e $EPOCHS --device "$DEVICE" "${AMP[@]}" "${TRAIN[@]}"
check "train Bonus on fakes_dataset (--amp --channels-last)" $((N_TRAIN * EPOCHS)) \
  "$PY" train_main.py -d fakes_dataset -m Bonus --lr 0.01 -e $EPOCHS --device "$DEVICE" "${AMP[@]}" "${TRAIN[@]}"
check "train EfficientNetLite0 on synthetic_dataset (--amp --channels-last)" $((N_TRAIN * EPOCHS)) \
  "$PY" train_main.py -d synthetic_dataset -m EfficientNetLite0 --lr 3e-4 -e $EPOCHS --device "$DEVICE" "${AMP[@]}" "${TRAIN[@]}"
check "train EfficientNetLite0 self-blend (--amp --channels-last)" $((N_TRAIN * EPOCHS)) \
  "$PY" train_main.py -d fakes_dataset -m EfficientNetLite0 --fakes self-blend --lr 3e-4 -e 1 --device "$DEVICE" "${AMP[@]}" \
  "${TRAIN[@]}"
if [ "$DEVICE" = "cpu" ]; then NPROC=2; else NPROC=$("$PY" -c "import torch; print(max(1, torch.cuda.device_count()))"); fi
check "DDP: Bonus on $NPROC process(es) (torchrun)" $((N_TRAIN * EPOCHS)) \
  "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" train_main.py -d fakes_dataset -m Bonus --lr 0.01 \
  -e $EPOCHS --device "$DEVICE" --checkpoint-dir "$WORK/ddp" --data-root "$WORK/data" --image-size 128 -b 32 \
  --no-progress --out-dir "$WORK/ddp"
"$PY" - "$WORK/clip.mp4" <<'EOF'
import sys

import cv2
import numpy as np
from skimage import data

photo = data.astronaut()[:, :, ::-1]
writer = cv2.VideoWriter(sys.argv[1], cv2.VideoWriter_fourcc(*"mp4v"), 25, (1280, 720))
for k in range(100):  # 4 s of 720p: the photo drifting across the frame
    frame = np.full((720, 1280, 3), 40, np.uint8)
    x = int(700 * k / 99)
    frame[104:616, x:x + 512] = photo
    writer.write(frame)
writer.release()
EOF
check "detect.py on a 720p clip, 32 frames (the EfficientNetLite0 above)" 32 \
  "$PY" detect.py "$WORK/clip.mp4" -cpp "$WORK/ckpt/synthetic_dataset_EfficientNetLite0_Adam.pt" --frames 32 \
  --device "$DEVICE" --no-progress
check "numerical_analysis.py (ROC/DET) of the SimpleNet above" 0 \
  "$PY" numerical_analysis.py -cpp "$WORK/ckpt/fakes_dataset_SimpleNet_Adam.pt" -d fakes_dataset --data-root "$WORK/data" \
  --figures-dir "$WORK/fig" --device "$DEVICE" --no-progress --bootstrap 50
exit $FAILED
