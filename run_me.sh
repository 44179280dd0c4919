#!/usr/bin/env bash
# Run the whole pipeline: set-up, data, every assignment step, the bonus model, the adversarial steps, a summary.
#
#   ./run_me.sh                                   # on the built-in demo data (generated on first use into data/)
#   ./run_me.sh --data-root /path/to/datasets     # on the real data: <root>/{fakes_dataset,synthetic_dataset}/...
#   ./run_me.sh --quick                           # a few minutes on a laptop CPU: small images, few samples and epochs
#
# Options: --data-root DIR (or DATA_ROOT=DIR), --quick, --device auto|cpu|cuda|mps, --image-size N, --no-pretrained
# (train XceptionBased from random weights), --skip-setup (use the current .venv as is), --resume (go on after a cut:
# skip the steps an earlier run with the same flags finished; the cut step starts again), -h.
# Outputs: figures/*.png, out/*.json logs, checkpoints/*.pt, out/summary.md (results table and wall time per step),
# out/report.html (every figure and number in the assignment's order: tools/make_report.py).
# It stops at the first failing step and names it. Without the ImageNet Xception file (no network), XceptionBased
# trains from random weights (marked "random init"); EfficientNet-Lite0, whose ImageNet weights ship with its pip
# package, is the pretrained model that always works offline.
set -euo pipefail
CALLER_DIR=$PWD
cd "$(dirname "$0")"

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; exit 2; }
value() {  # value FLAG NEXT_ARG_COUNT NEXT_ARG: the flag's value, or a one-line error
  [ "$2" -ge 2 ] && [ -n "$3" ] && [ "${3#--}" = "$3" ] || die "$1 needs a value"
  printf '%s' "$3"
}
QUICK=0; DEVICE=auto; IMAGE_SIZE=""; NO_PRETRAINED=0; SKIP_SETUP=0; RESUME=0
DATA_ROOT_ARG="${DATA_ROOT:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --data-root) DATA_ROOT_ARG=$(value "$1" $# "${2:-}"); shift 2 ;;
    --quick) QUICK=1; shift ;;
    --device) DEVICE=$(value "$1" $# "${2:-}"); shift 2 ;;
    --image-size) IMAGE_SIZE=$(value "$1" $# "${2:-}"); shift 2 ;;
    --no-pretrained) NO_PRETRAINED=1; shift ;;
    --skip-setup) SKIP_SETUP=1; shift ;;
    --resume) RESUME=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

# a relative --data-root means relative to where the user typed the command, not to the repo
case "$DATA_ROOT_ARG" in ""|/*) ;; *) DATA_ROOT_ARG="$CALLER_DIR/$DATA_ROOT_ARG" ;; esac
if [ -n "$DATA_ROOT_ARG" ] && { [ ! -d "$DATA_ROOT_ARG/fakes_dataset" ] || [ ! -d "$DATA_ROOT_ARG/synthetic_dataset" ]; }; then
  die "$DATA_ROOT_ARG must hold fakes_dataset/ and synthetic_dataset/ (each with train/val/test/{real,fake}/)"
fi

if [ "${FMD_NO_VENV:-0}" = "1" ]; then PY=${PYTHON:-python3}; else PY=.venv/bin/python; fi
[ "$SKIP_SETUP" = "1" ] || bash tools/setup_env.sh
export PYTHONUNBUFFERED=1
WORK="${FMD_WORK_DIR:-.}"
OUT="$WORK/out"; FIG="$WORK/figures"; CKPT="$WORK/checkpoints"
mkdir -p "$OUT" 2>/dev/null && [ -w "$OUT" ] || die "cannot write to $OUT; set FMD_WORK_DIR to a writable folder"
TIMES="$OUT/run_me_times.tsv"; SETTINGS="$OUT/run_me_settings.txt"
settings="quick=$QUICK data-root=${DATA_ROOT_ARG:-demo} image-size=${IMAGE_SIZE:-default} no-pretrained=$NO_PRETRAINED"
if [ "$RESUME" = "1" ]; then
  [ -f "$SETTINGS" ] || die "--resume: no earlier run in $OUT to go on with; run without --resume"
  [ "$(cat "$SETTINGS")" = "$settings" ] || die "--resume: the run in $OUT was started with other flags ($(cat "$SETTINGS")); resume with those, or start without --resume"
  touch "$TIMES"
else
  : > "$TIMES"
fi
printf '%s\n' "$settings" > "$SETTINGS"
T0=$(date +%s)

done_before() {  # done_before NAME: with --resume, whether an earlier run finished this step
  [ "$RESUME" = "1" ] && cut -f1 "$TIMES" | grep -qxF -- "$1"
}

step() {  # step NAME COMMAND...: run, time, and stop the pipeline with the step's name if it fails
  local name="$1"; shift
  local start; start=$(date +%s)
  if done_before "$name"; then echo; echo "==> $name: done in the run being resumed, skipped"; return; fi
  echo; echo "==> $name"
  if ! "$@"; then
    echo; echo "run_me.sh: FAILED at step '$name' (command: $*)" >&2
    exit 1
  fi
  printf '%s\t%s\n' "$name" "$(( $(date +%s) - start ))" >> "$TIMES"
}

showcase() {  # showcase NAME COMMAND...: like step, but a failure is reported and the pipeline goes on (a demo of a
  # finished run, e.g. detect.py finding no face in the picked images, must not fail the hours of work before it)
  local name="$1"; shift
  local start; start=$(date +%s)
  if done_before "$name"; then echo; echo "==> $name: done in the run being resumed, skipped"; return; fi
  echo; echo "==> $name"
  if "$@"; then
    printf '%s\t%s\n' "$name" "$(( $(date +%s) - start ))" >> "$TIMES"
  else
    echo "run_me.sh: note: showcase step '$name' did not succeed (exit $?, see above); every result before it stands" >&2
    printf '%s (did not succeed)\t%s\n' "$name" "$(( $(date +%s) - start ))" >> "$TIMES"
  fi
}

# ---- data ---------------------------------------------------------------------------------------------------
DEMO=0
if [ -n "$DATA_ROOT_ARG" ]; then
  ROOT="$DATA_ROOT_ARG"
else
  ROOT=data
  DEMO=1
  if [ ! -d "$ROOT/fakes_dataset" ] || [ ! -d "$ROOT/synthetic_dataset" ]; then
    if [ "$QUICK" = "1" ]; then
      step "generate demo data (quick)" "$PY" tools/make_demo_dataset.py --out-dir "$ROOT" --size 96 --train 240 --val 60 --test 60 --no-progress
    else
      step "generate demo data" "$PY" tools/make_demo_dataset.py --out-dir "$ROOT" --no-progress
    fi
  fi
  [ -f "$ROOT/DEMO_DATA.txt" ] || DEMO=0
fi
echo "data: $ROOT$([ "$DEMO" = 1 ] && echo ' (built-in synthetic demo data)')"

# ---- budgets: the assignment's, or small ones for --quick -----------------------------------------------------
# Beyond the assignment's own steps (which run at its settings), the extra models and the adversarial steps are
# budgeted for a 2-core CPU on real data: robustness on 400 test images, adversarial training on 2,000 train images.
if [ "$QUICK" = "1" ]; then
  # 240 training images at 96 px for 10 epochs: enough for SimpleNet and the bonus model to beat the majority class
  # (measured on the quick demo data's fakes_dataset, where 60 % are fakes, seeds 42 / 7: SimpleNet 91.7 / 96.7 % test
  # accuracy, the bonus model 83.3 / 76.7 %; at 6 epochs SimpleNet sometimes had not started to learn)
  SIZE=${IMAGE_SIZE:-96}; LSIZE=${IMAGE_SIZE:-96}; LIMIT=(--limit 240); XLIMIT=(--limit 24); ADV_LIMIT=(--limit 120)
  LITE_LIMIT=(--limit 64); E_SIMPLE=10; E_XCEPTION=1; E_BONUS=10; E_ADV=2; ADV_STEPS=2; E_LITE_SYN=1; E_LITE_FAKES=1
  ROBUST=(--epsilons 0 2 8 --steps 3 --cw-samples 2 --cw-steps 10 --cw-search 2 --limit 32)
else
  SIZE=${IMAGE_SIZE:-256}; LSIZE=${IMAGE_SIZE:-224}; LIMIT=(); XLIMIT=(); LITE_LIMIT=()
  E_SIMPLE=5; E_XCEPTION=2; E_BONUS=12; E_ADV=5; ADV_STEPS=3; E_LITE_SYN=4; E_LITE_FAKES=3
  if [ "$DEMO" = "1" ]; then ROBUST=(); ADV_LIMIT=(); else ROBUST=(--limit 400); ADV_LIMIT=(--limit 2000); fi
fi
COMMON=(--data-root "$ROOT" --device "$DEVICE" --no-progress --out-dir "$OUT" --checkpoint-dir "$CKPT" --image-size "$SIZE")
ANALYSIS=(--data-root "$ROOT" --device "$DEVICE" --figures-dir "$FIG" --no-progress)

# XceptionBased needs ImageNet weights: check before hours of training, not after.
check_weights() {  # prints the reason and fails when the ImageNet Xception weights cannot be had
  "$PY" -c "import sys
from utils import UserError
from xception import build_xception_backbone
try:
    build_xception_backbone()
except UserError as err:
    sys.exit(str(err))"
}
XCEPTION_FLAGS=()
if [ "$NO_PRETRAINED" = "1" ]; then
  XCEPTION_FLAGS=(--no-pretrained)
elif ! WHY=$(check_weights 2>&1 >/dev/null); then
  echo "note: XceptionBased is trained from random weights (marked 'random init' in the summary), since ${WHY##*$'\n'}"
  echo "      EfficientNet-Lite0 below is the pretrained comparison: its ImageNet weights ship with its pip package"
  XCEPTION_FLAGS=(--no-pretrained)
fi

train() { "$PY" train_main.py "${COMMON[@]}" "$@"; }
plot() { "$PY" plot_accuracy_and_loss.py -m "$1" -j "$OUT/$2_$1_Adam.json" -d "$2" --figures-dir "$FIG"; }
analyse() { "$PY" "$1" -m "$2" -cpp "$CKPT/$3_$2_Adam.pt" -d "$3" "${ANALYSIS[@]}" "${@:4}"; }

# ---- the assignment, in order ----------------------------------------------------------------------------------
step "sample grid" "$PY" plot_samples_of_faces_dataset.py --data-root "$ROOT" --figures-dir "$FIG"

step "train SimpleNet on fakes_dataset" train -d fakes_dataset -m SimpleNet --lr 0.001 -b 32 -e "$E_SIMPLE" -o Adam "${LIMIT[@]}"
step "curves SimpleNet fakes_dataset" plot SimpleNet fakes_dataset
step "ROC/DET SimpleNet fakes_dataset" analyse numerical_analysis.py SimpleNet fakes_dataset

step "train SimpleNet on synthetic_dataset" train -d synthetic_dataset -m SimpleNet --lr 0.001 -b 32 -e "$E_SIMPLE" -o Adam "${LIMIT[@]}"
step "curves SimpleNet synthetic_dataset" plot SimpleNet synthetic_dataset
step "ROC/DET SimpleNet synthetic_dataset" analyse numerical_analysis.py SimpleNet synthetic_dataset

step "train XceptionBased on synthetic_dataset" train -d synthetic_dataset -m XceptionBased --lr 0.001 -b 32 \
  -e "$E_XCEPTION" -o Adam "${XCEPTION_FLAGS[@]}" "${XLIMIT[@]}"
step "curves XceptionBased synthetic_dataset" plot XceptionBased synthetic_dataset
step "ROC/DET XceptionBased synthetic_dataset" analyse numerical_analysis.py XceptionBased synthetic_dataset "${XLIMIT[@]}"

step "saliency SimpleNet fakes_dataset" analyse saliency_map.py SimpleNet fakes_dataset
step "saliency XceptionBased synthetic_dataset" analyse saliency_map.py XceptionBased synthetic_dataset "${XLIMIT[@]}"
step "Grad-CAM SimpleNet fakes_dataset" analyse grad_cam_analysis.py SimpleNet fakes_dataset
step "Grad-CAM SimpleNet synthetic_dataset" analyse grad_cam_analysis.py SimpleNet synthetic_dataset
step "Grad-CAM XceptionBased synthetic_dataset" analyse grad_cam_analysis.py XceptionBased synthetic_dataset

# ---- the pretrained comparison the assignment intends, offline: EfficientNet-Lite0 fine-tuned from ImageNet ------------
LITE=(-m EfficientNetLite0 --lr 2e-4 -b 32 -o Adam --scheduler cosine --warmup-epochs 1 --select-by auc --image-size "$LSIZE")
step "train EfficientNetLite0 on synthetic_dataset" train -d synthetic_dataset "${LITE[@]}" -e "$E_LITE_SYN" "${LITE_LIMIT[@]}"
step "train EfficientNetLite0 on fakes_dataset" train -d fakes_dataset "${LITE[@]}" -e "$E_LITE_FAKES" --augment "${LITE_LIMIT[@]}"
for d in synthetic_dataset fakes_dataset; do
  step "curves EfficientNetLite0 $d" plot EfficientNetLite0 "$d"
  step "ROC/DET EfficientNetLite0 $d" analyse numerical_analysis.py EfficientNetLite0 "$d"
  step "saliency EfficientNetLite0 $d" analyse saliency_map.py EfficientNetLite0 "$d" "${XLIMIT[@]}"
  step "Grad-CAM EfficientNetLite0 $d" analyse grad_cam_analysis.py EfficientNetLite0 "$d"
done

step "cross-dataset AUC (each EfficientNetLite0 on both datasets)" "$PY" tools/cross_eval.py --checkpoints \
  "$CKPT/fakes_dataset_EfficientNetLite0_Adam.pt" "$CKPT/synthetic_dataset_EfficientNetLite0_Adam.pt" --data-roots "$ROOT" \
  --out-dir "$OUT" --figures-dir "$FIG" --device "$DEVICE" --no-progress "${LITE_LIMIT[@]}"
# what self-blended training (train_main.py --fakes self-blend, README "Generalization") makes of six real train faces
step "self-blended training images (figure)" "$PY" tools/show_self_blends.py --data-root "$ROOT" -d fakes_dataset -n 6 \
  --out "$FIG/self_blend_triplets.png"

# ---- bonus: the compact model, published to checkpoints/bonus.pt ----------------------------------------------------
step "train Bonus on fakes_dataset" train -d fakes_dataset -m Bonus --lr 0.01 -b 32 -e "$E_BONUS" -o Adam \
  --scheduler cosine --warmup-epochs 1 --select-by auc "${LIMIT[@]}"  # the recipe the design was selected with
step "evaluate bonus model" "$PY" bonus_main.py --checkpoint "$CKPT/bonus.pt" --data-root "$ROOT" --device "$DEVICE"
step "ROC/DET Bonus fakes_dataset" analyse numerical_analysis.py Bonus fakes_dataset

# ---- adversarial: attack the plain models, fine-tune PGD-hardened ones (eps 1/255), compare --------------------------
EPS_TRAIN=0.00392  # 1/255: a face-swap detector's evidence (blur, colour seams) is faint; at 2/255 the demo data has
                   # no robust detector left to find and adversarial training ends at the majority class
adversarial() {  # adversarial MODEL LR EPOCHS
  local m="$1" lr="$2" epochs="$3"
  step "robustness $m fakes_dataset" analyse robustness_analysis.py "$m" fakes_dataset --no-progress "${ROBUST[@]}"
  # fine-tunes the plain model (--init-from) at a tenth of its lr: from scratch on real faces' faint evidence, PGD
  # training ended at the all-fake answer (60 %, test AUC 0.52-0.54 for both models); from SimpleNet's checkpoint its first
  # epoch kept val AUC 0.618
  step "adversarial training $m (PGD)" train -d fakes_dataset -m "$m" --lr "$lr" -b 32 -e "$epochs" -o Adam \
    --adv pgd --eps "$EPS_TRAIN" --steps "$ADV_STEPS" --adv-ratio 0.5 "${ADV_LIMIT[@]}" \
    --init-from "$CKPT/fakes_dataset_${m}_Adam.pt"
  step "robustness $m fakes_dataset (PGD-trained)" "$PY" robustness_analysis.py -m "$m" \
    -cpp "$CKPT/fakes_dataset_${m}_Adam_advpgd.pt" -d fakes_dataset "${ANALYSIS[@]}" --tag advpgd --no-progress \
    --overlay "$FIG/fakes_dataset_${m}_robustness.json" "${ROBUST[@]}"
}
adversarial SimpleNet 0.0001 "$E_ADV"
adversarial Bonus 0.001 "$E_BONUS"

# ---- "is this photo fake?": detect.py on two real and two fake test images per dataset, with its EfficientNet-Lite0 -----
if [ "$DEMO" = "0" ]; then
  for d in fakes_dataset synthetic_dataset; do
    picks=()
    for c in real fake; do
      while IFS= read -r f; do picks+=("$ROOT/$d/test/$c/$f"); done < <(ls "$ROOT/$d/test/$c" | head -n 2)
    done
    showcase "detect.py on $d test images" "$PY" detect.py "${picks[@]}" -cpp "$CKPT/${d}_EfficientNetLite0_Adam.pt" \
      --out "$OUT/detect_${d}.csv" --annotate "$FIG/detect_$d" --cam --no-progress --device "$DEVICE"
  done
else
  echo "note: detect.py is for real faces (MTCNN finds none in the demo drawings): see README, 'Check your own photos'"
fi

# ---- summary --------------------------------------------------------------------------------------------------
"$PY" tools/summarize_run.py --out-dir "$OUT" --figures-dir "$FIG" --times "$TIMES"
"$PY" tools/make_report.py --out-dir "$OUT" --figures-dir "$FIG"
echo "run_me.sh: done in $(( $(date +%s) - T0 )) s; report $OUT/report.html, figures in $FIG, logs in $OUT, checkpoints in $CKPT"
