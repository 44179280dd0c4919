"""Issue #29's wrong answers, each as a user met it: framing taken from a dataset's name, one face in two splits, NaN
flags, a NaN in a JSON file, a full disk while saving, fakes self-blended as real faces, mixed-up reports."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from utils import atomic_write_json


# ---- NaN and infinity --------------------------------------------------------------------------------------------------
def test_no_flag_parses_a_bare_float():
    """float('nan') parses: every float flag goes through utils.finite_float (or a type built on it) instead."""
    offenders = [f"{path.relative_to(REPO)}:{n}" for path in [*REPO.glob("*.py"), *REPO.glob("tools/*.py")]
                 for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"(?<!\w)type\s*=\s*float\b", line)]
    assert offenders == []


@pytest.mark.parametrize("script, argv, flag", [
    ("tools/face_preprocess.py", ["--image-dir", ".", "--out-dir", "x", "--split", "nan", "0.5", "0.5"], "--split"),
    ("robustness_analysis.py", ["-cpp", "c.pt", "-d", "fakes_dataset", "--epsilons", "nan"], "--epsilons"),
    ("robustness_analysis.py", ["-cpp", "c.pt", "-d", "fakes_dataset", "--alpha", "inf"], "--alpha"),
    ("train_main.py", ["--eps", "nan"], "--eps"),
    ("tools/make_demo_dataset.py", ["--fake-fraction", "nan"], "--fake-fraction"),
    ("detect.py", ["x.png", "--margin", "-inf"], "--margin"),
])
def test_nan_and_infinity_are_refused_at_parsing(script, argv, flag, tmp_path):
    proc = subprocess.run([sys.executable, script, *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"argument {flag}" in proc.stderr and "Traceback" not in proc.stderr


def test_a_json_file_the_suite_writes_holds_no_nan_literal(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"a": math.nan, "b": [math.inf, 1.5], "c": np.float32("nan"), "d": {"e": -math.inf}})

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    data = json.loads(path.read_text(), parse_constant=refuse)  # a strict parser, as browsers and jq are
    assert data == {"a": None, "b": [None, 1.5], "c": None, "d": {"e": None}}
