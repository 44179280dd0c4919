"""End to end: the Colab notebook runs ./run_me.sh --quick on tiny data (figures, logs, summary, report); run_me.sh's
flags and --resume."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO
from make_demo_dataset import generate
from make_report import build_report
from test_report import check_page, parse

EXPECTED_FIGURES = ["datasets_samples.png"] + [
    f"{prefix}_{kind}.png"
    for prefix in ("fakes_dataset_SimpleNet", "synthetic_dataset_SimpleNet", "synthetic_dataset_XceptionBased")
    for kind in ("losses_plot", "accuracies_plot", "roc_curve", "det_curve", "Real_Image_grad_cam", "Fake_Image_grad_cam")
] + [
    "fakes_dataset_Bonus_roc_curve.png", "fakes_dataset_Bonus_det_curve.png",
    "fakes_dataset_SimpleNet_saliency_maps_and_images_pairs.png", "fakes_dataset_SimpleNet_mean_saliency_maps.png",
    "synthetic_dataset_XceptionBased_saliency_maps_and_images_pairs.png",
    "synthetic_dataset_XceptionBased_mean_saliency_maps.png",
    "fakes_dataset_SimpleNet_robustness_curves.png", "fakes_dataset_SimpleNet_adversarial_examples.png",
    "fakes_dataset_SimpleNet_advpgd_robustness_curves.png", "fakes_dataset_SimpleNet_advpgd_adversarial_examples.png",
    "fakes_dataset_Bonus_robustness_curves.png", "fakes_dataset_Bonus_advpgd_robustness_curves.png",
] + [
    f"{d}_EfficientNetLite0_{kind}.png" for d in ("synthetic_dataset", "fakes_dataset")
    for kind in ("losses_plot", "accuracies_plot", "roc_curve", "det_curve", "saliency_maps_and_images_pairs",
                 "Real_Image_grad_cam", "Fake_Image_grad_cam")
] + ["cross_eval_auc.png", "self_blend_triplets.png"]


def execute_notebook(params: dict, timeout: int) -> nbformat.NotebookNode:
    """Run colab.ipynb headless from the repo, as Colab would run it, with `params` set after its settings cell."""
    notebook = nbformat.read(REPO / "colab.ipynb", as_version=4)
    at = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    notebook.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items())))
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    return notebook


@pytest.mark.slow
def test_run_me_quick_end_to_end_from_the_colab_notebook(tmp_path):
    """The notebook outside Colab (a local folder for Drive) runs ./run_me.sh --quick on tiny 64x64 data: every figure,
    log, the summary and the report are written, and the report is shown inline."""
    data = tmp_path / "data"
    generate(data, 64, {"train": 12, "val": 12, "test": 12}, 0.5, seed=1, progress=False)
    notebook = execute_notebook({"DATA_ROOT": str(data), "WORK_DIR": str(tmp_path / "colab"), "RUN_FULL": None,
                                 "QUICK_FLAGS": ["--no-pretrained", "--image-size", "64", "--device", "cpu"]}, 1500)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "in Colab: False" in text and "full pipeline skipped" in text
    assert any("<iframe srcdoc=" in o.get("data", {}).get("text/html", "") for o in outputs if o.output_type == "display_data")
    work = tmp_path / "colab" / "quick"
    figures = {p.name for p in (work / "figures").glob("*.png")}
    assert set(EXPECTED_FIGURES) <= figures, sorted(set(EXPECTED_FIGURES) - figures)
    summary = (work / "out" / "summary.md").read_text()
    for row in ("| SimpleNet | fakes_dataset |", "| SimpleNet | synthetic_dataset |",
                "| XceptionBased (random init) | synthetic_dataset |", "| Bonus | fakes_dataset |",
                "| SimpleNet (advpgd) | fakes_dataset |", "| Bonus (advpgd) | fakes_dataset |", "| **total** |",
                "| EfficientNetLite0 | synthetic_dataset |", "| EfficientNetLite0 | fakes_dataset |"):
        assert row in summary
    # values, not only rows: every training row has accuracies in [0, 100], the AUC column is filled where an
    # analysis ran, and the step times add up to the total
    rows = [line.split("|")[1:-1] for line in summary.splitlines() if line.startswith("| ") and "fakes_dataset" in line
            and "/255" not in line and "L2" not in line and "PGD" not in line and "FGSM" not in line]
    assert rows
    for cells in rows:
        if len(cells) == 8:  # the training table
            assert 0 <= float(cells[3]) <= 100 and 0 <= float(cells[4]) <= 100
    auc = [line for line in summary.splitlines() if line.startswith("| SimpleNet | fakes_dataset |")][0].split("|")[6]
    assert 0 <= float(auc) <= 1
    times = (work / "out" / "run_me_times.tsv").read_text().splitlines()
    total = int(summary.split("| **total** | **")[1].split("**")[0])
    assert total == sum(int(t.split("\t")[1]) for t in times)
    assert (work / "checkpoints" / "bonus.pt").is_file()
    assert "Bonus model: test AUC" in text
    assert "run_me.sh: done" in text
    # the report: every image decodes to its figure, every number is its JSON's, and nothing the quick run makes is
    # missing; a figure removed afterwards is marked missing
    report = (work / "out" / "report.html").read_text()
    assert check_page(report, work / "out").missing == []
    (work / "figures" / "fakes_dataset_SimpleNet_roc_curve.png").unlink()
    page, gaps = build_report(work / "out", work / "figures", work / "out")
    assert parse(page).missing == gaps == ["figure fakes_dataset_SimpleNet_roc_curve.png"]


def test_run_me_bad_input_and_the_failing_step_is_named(tmp_path):
    env = {**os.environ, "FMD_WORK_DIR": str(tmp_path)}
    proc = subprocess.run(["bash", "run_me.sh", "--skip-setup", "--data-root", str(tmp_path / "nothing")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "must hold fakes_dataset/ and synthetic_dataset/" in proc.stderr
    proc = subprocess.run(["bash", "run_me.sh", "--bogus"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr
    proc = subprocess.run(["bash", "run_me.sh", "--data-root"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --data-root needs a value"
    # a relative --data-root is relative to the caller's folder, and nothing in out/ is touched before the check
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run_me_times.tsv").write_text("kept\t1\n")
    proc = subprocess.run(["bash", str(REPO / "run_me.sh"), "--skip-setup", "--data-root", "mydata"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f"{tmp_path}/mydata must hold fakes_dataset/" in proc.stderr
    assert (tmp_path / "out" / "run_me_times.tsv").read_text() == "kept\t1\n"
    data = tmp_path / "broken"
    generate(data, 32, {"train": 2, "val": 2, "test": 2}, 0.5, seed=1, progress=False)
    for image in (data / "synthetic_dataset" / "train" / "real").iterdir():
        image.unlink()
    (data / "synthetic_dataset" / "train" / "real").rmdir()
    proc = subprocess.run(["bash", "run_me.sh", "--skip-setup", "--no-pretrained", "--data-root", str(data)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "synthetic_dataset/train/real does not exist" in proc.stderr
    assert "FAILED at step 'sample grid'" in proc.stderr


def stub_python(tmp_path: Path, fail_on: str = "") -> dict:
    """An environment whose 'python' records each command line and succeeds at once (fails on `fail_on`): run_me.sh's
    orchestration runs in a second, without training anything."""
    stub = tmp_path / "stub_python"
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> "{tmp_path}/calls.txt"\n'
                    + (f'case "$*" in *"{fail_on}"*) exit 1 ;; esac\n' if fail_on else "") + "exit 0\n")
    stub.chmod(0o755)
    return {**os.environ, "FMD_WORK_DIR": str(tmp_path / "work"), "FMD_NO_VENV": "1", "PYTHON": str(stub)}


def test_run_me_resume_skips_the_finished_steps_and_refuses_other_flags(tmp_path):
    data = tmp_path / "data"
    for d in ("fakes_dataset", "synthetic_dataset"):
        (data / d).mkdir(parents=True)
    args = ["bash", "run_me.sh", "--skip-setup", "--quick", "--data-root", str(data)]
    calls = tmp_path / "calls.txt"
    # a run cut at the bonus model's training (a Colab disconnect, a failure)
    proc = subprocess.run(args, cwd=REPO, env=stub_python(tmp_path, fail_on="-m Bonus --lr 0.01"), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "FAILED at step 'train Bonus on fakes_dataset'" in proc.stderr
    first = calls.read_text().splitlines()
    assert sum("train_main.py" in c and "-m SimpleNet" in c for c in first) == 2
    calls.unlink()
    # --resume with other flags is refused before anything runs, and the earlier run's record is kept
    times = (tmp_path / "work" / "out" / "run_me_times.tsv").read_text()
    proc = subprocess.run(args[:3] + args[4:] + ["--resume"], cwd=REPO, env=stub_python(tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "--resume: the run in" in proc.stderr and "quick=1" in proc.stderr
    assert not calls.exists() and (tmp_path / "work" / "out" / "run_me_times.tsv").read_text() == times
    # a showcase step that did not succeed is no finished step (as if an earlier try had failed at it)
    with open(tmp_path / "work" / "out" / "run_me_times.tsv", "a") as f:
        f.write("detect.py on fakes_dataset test images (did not succeed)\t3\n")
    # --resume with the same flags starts at the cut step: nothing before it runs again, everything after it runs
    proc = subprocess.run(args + ["--resume"], cwd=REPO, env=stub_python(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    second = calls.read_text().splitlines()
    assert not [c for c in second if "train_main.py" in c and "-m SimpleNet" in c and "--adv" not in c]
    assert "plot_samples_of_faces_dataset.py" not in "\n".join(second)
    assert "-m Bonus --lr 0.01" in next(c for c in second if "train_main.py" in c)  # the cut step runs first
    assert "==> train SimpleNet on fakes_dataset: done in the run being resumed, skipped" in proc.stdout
    assert any("make_report.py" in c for c in second)
    assert any("detect.py" in c and "detect_fakes_dataset.csv" in c for c in second)
    steps = [line.split("\t")[0] for line in (tmp_path / "work" / "out" / "run_me_times.tsv").read_text().splitlines()]
    assert steps[0] == "sample grid" and "train Bonus on fakes_dataset" in steps
    assert len([s for s in steps if "(did not succeed)" not in s]) == len(set(steps)) - 1  # each step done once
    # without an earlier run, --resume says so
    proc = subprocess.run(args + ["--resume"], cwd=REPO, env={**stub_python(tmp_path), "FMD_WORK_DIR": str(tmp_path / "new")},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no earlier run" in proc.stderr
