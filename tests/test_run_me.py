"""End-to-end smoke test: ./run_me.sh --quick on tiny 64x64 data writes every figure, log and the summary."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import REPO
from make_demo_dataset import generate

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


@pytest.mark.slow
def test_run_me_quick_end_to_end(tmp_path):
    data = tmp_path / "data"
    generate(data, 64, {"train": 12, "val": 12, "test": 12}, 0.5, seed=1, progress=False)
    work = tmp_path / "work"
    env = {**os.environ, "FMD_WORK_DIR": str(work), "FMD_OFFLINE": "1"}
    proc = subprocess.run(["bash", "run_me.sh", "--quick", "--no-pretrained", "--skip-setup", "--image-size", "64",
                           "--data-root", str(data), "--device", "cpu"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
    assert "Bonus model: test AUC" in proc.stdout
    assert "run_me.sh: done" in proc.stdout


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
