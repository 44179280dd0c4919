#!/usr/bin/env bash
# Run the test suite in .venv (created on first use): ./run_tests.sh [pytest arguments, e.g. -k trainer -x]
set -euo pipefail
cd "$(dirname "$0")"
bash tools/setup_env.sh
export FMD_OFFLINE=1  # tests never download weights
exec .venv/bin/python -m pytest "$@"
