"""Metrics on hand-made scores, saliency and Grad-CAM on constructed models, and the three scripts end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve
from torch import nn

import grad_cam_analysis
import numerical_analysis
import saliency_map
import train_main
from grad_cam_analysis import compute_cams, get_grad_cam_visualization
from numerical_analysis import compute_metrics, equal_error_rate
from saliency_map import compute_gradient_saliency_maps


def test_metrics_on_hand_made_scores():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    m = compute_metrics(labels, scores)
    # 16 real/fake pairs, one ranked wrong (0.6 real above 0.4 fake)
    assert m["auc"] == pytest.approx(15 / 16)
    assert m["eer"] == pytest.approx(0.25, abs=1e-6)
    # AP: precision at each fake's rank: 0.9 -> 1, 0.8 -> 1, 0.7 -> 1, 0.4 -> 4/5
    assert m["average_precision"] == pytest.approx((1 + 1 + 1 + 0.8) / 4)
    assert m["accuracy"] == pytest.approx(6 / 8) and m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["confusion_matrix"] == {"tn": 3, "fp": 1, "fn": 1, "tp": 3}
    perfect = compute_metrics(labels, np.array([0, 0, 0, 0, 1, 1, 1, 1.0]))
    assert perfect["auc"] == 1.0 and perfect["eer"] == pytest.approx(0.0, abs=1e-9)


def test_group_a_roc_is_the_mirror_of_group_b():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    fake = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1)
    real = 1 - fake  # softmax over two outputs
    fpr_a, tpr_a, _ = roc_curve(labels, real)
    fpr_b, tpr_b, _ = roc_curve(labels, fake)
    # point reflection through (0.5, 0.5): (fpr, tpr) of A = (1 - fpr, 1 - tpr) of B
    a = sorted(zip(fpr_a.round(9), tpr_a.round(9)))
    b = sorted(zip((1 - fpr_b).round(9), (1 - tpr_b).round(9)))
    assert a == b
    assert compute_metrics(labels, real)["auc"] == pytest.approx(1 - compute_metrics(labels, fake)["auc"])
    eer_a, _ = equal_error_rate(labels, real)
    eer_b, _ = equal_error_rate(labels, fake)
    assert eer_a == pytest.approx(1 - eer_b, abs=1e-6)


class TopLeftNet(nn.Module):
    """Looks only at the top-left quadrant of the image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = x.shape[-1] // 2
        return self.fc(torch.tanh(self.conv(x[:, :, :h, :h])).mean(dim=(2, 3)))


def test_saliency_shape_zero_where_ignored_and_no_side_effects():
    torch.manual_seed(0)
    model = TopLeftNet().train()
    x = torch.randn(3, 3, 16, 16)
    maps = compute_gradient_saliency_maps(x, torch.tensor([0, 1, 1]), model)
    assert maps.shape == (3, 16, 16)
    assert torch.all(maps[:, 8:, :] == 0) and torch.all(maps[:, :, 8:] == 0)
    assert torch.all(maps[:, :8, :8].flatten(1).amax(1) > 0)
    assert model.training and all(p.grad is None and p.requires_grad for p in model.parameters())
    assert not x.requires_grad


class BlobNet(nn.Module):
    """Fake score = total activation of a positive-weight conv layer: evidence sits where the input is bright."""

    def __init__(self):
        super().__init__()
        self.conv3 = nn.Conv2d(3, 2, 3, padding=1)
        nn.init.constant_(self.conv3.weight, 0.1)
        nn.init.zeros_(self.conv3.bias)

    def forward(self, x):
        s = torch.relu(self.conv3(x)).mean(dim=(1, 2, 3))
        return torch.stack([-s, s], dim=1)

    def cam_layer(self):
        return self.conv3


def test_grad_cam_peaks_where_the_model_looks():
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, 20:28, 4:12] = 1.0  # a bright blob bottom-left
    cam = compute_cams(BlobNet(), x, torch.tensor([1]), "SimpleNet")
    assert cam.shape == (1, 32, 32) and cam.min() >= 0 and cam.max() <= 1
    peak = np.unravel_index(cam[0].argmax(), cam[0].shape)
    assert 18 <= peak[0] < 30 and 2 <= peak[1] < 14
    assert cam[0, 20:28, 4:12].mean() > 5 * cam[0, :10, 20:].mean()


def test_get_grad_cam_visualization_contract():
    data = torch.utils.data.TensorDataset(torch.rand(4, 3, 256, 256) * 2 - 1, torch.tensor([0, 1, 0, 1]))
    vis, label = get_grad_cam_visualization(data, BlobNet(), generator=torch.Generator().manual_seed(0))
    assert vis.shape == (256, 256, 3) and vis.dtype == np.uint8
    assert label.shape == torch.Size([1]) and int(label) in (0, 1)


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    train_main.main(["-d", "fakes_dataset", "-m", "SimpleNet", "-e", "1", "-b", "8", "--image-size", "64", "--data-root",
                     str(demo_root), "--out-dir", str(out), "--checkpoint-dir", str(out), "--no-progress",
                     "--num-workers", "0"])
    return out / "fakes_dataset_SimpleNet_Adam.pt"


def common_args(trained, demo_root, figs):
    return ["-m", "SimpleNet", "-cpp", str(trained), "-d", "fakes_dataset", "--data-root", str(demo_root),
            "--figures-dir", str(figs)]


def test_scripts_write_their_figures(trained, demo_root, tmp_path):
    args = common_args(trained, demo_root, tmp_path)
    result = numerical_analysis.main(args)
    assert 0 <= result["auc"] <= 1 and result["n_samples"] == 8
    assert result["auc_group_a_real_score"] == pytest.approx(1 - result["auc"])
    assert result["ci95"]["auc"][0] <= result["auc"] <= result["ci95"]["auc"][1]
    from checkpoints import read_checkpoint

    saved = read_checkpoint(trained)["threshold"]
    assert result["val_threshold"] == pytest.approx(saved["value"]) and result["val_threshold_source"] == saved["source"]
    assert saved["source"].startswith("at most 5 % of the validation split's real faces")
    youden = numerical_analysis.main(args + ["--threshold", "val-youden", "--calibrate", "--bootstrap", "20"])
    assert youden["val_threshold_source"] == "validation Youden J" and youden["temperature"] > 0
    assert 0 <= youden["ece_calibrated"] <= 1 and youden["auc"] == result["auc"]
    assert json.loads((tmp_path / "fakes_dataset_SimpleNet_metrics.json").read_text())["auc"] == result["auc"]
    saliency_map.main(args + ["--n-pairs", "4"])
    grad_cam_analysis.main(args + ["--n", "2"])
    grad_cam_analysis.main(args + ["--n", "2", "--method", "gradcam++"])
    names = {p.name for p in tmp_path.glob("*.png")}
    assert names == {
        f"fakes_dataset_SimpleNet_{k}.png" for k in (
            "roc_curve", "det_curve", "reliability", "saliency_maps_and_images_pairs", "mean_saliency_maps",
            "Real_Image_grad_cam", "Fake_Image_grad_cam", "Real_Image_gradcam_plus_plus", "Fake_Image_gradcam_plus_plus",
        )
    }


def test_wrong_checkpoint_is_a_clear_error(trained, demo_root, tmp_path, capsys):
    args = common_args(trained, demo_root, tmp_path)
    args[1] = "XceptionBased"
    with pytest.raises(SystemExit) as err:
        numerical_analysis.main(args)
    assert err.value.code == 2 and "holds a SimpleNet model, not XceptionBased" in capsys.readouterr().err
    args = common_args(tmp_path / "missing.pt", demo_root, tmp_path)
    with pytest.raises(SystemExit):
        saliency_map.main(args)
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:  # neither -d nor --catalog
        grad_cam_analysis.main(["-cpp", str(trained), "--figures-dir", str(tmp_path)])
    assert err.value.code == 2 and "pass -d DATASET (or --catalog CSV)" in capsys.readouterr().err


def test_every_cam_method_name_maps_to_a_class_and_runs():
    from analysis import METHOD_NAMES, cam_methods

    assert set(cam_methods()) == set(METHOD_NAMES)
    x = torch.zeros(1, 3, 16, 16)
    x[:, :, 4:8, 4:8] = 1.0
    for method in ("gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"):
        cam = compute_cams(BlobNet(), x, torch.tensor([1]), "SimpleNet", method)
        assert cam.shape == (1, 16, 16) and np.isfinite(cam).all()


def test_robustness_scores_with_p_fake_and_writes_its_results(trained, demo_root, tmp_path):
    import robustness_analysis
    from normalization import ASSIGNMENT_NORM
    from robustness_analysis import evaluate_under_attack

    class Knows(nn.Module):  # P(fake) high exactly for the bright class of the toy set below
        def forward(self, x):
            bright = (x.mean(dim=(1, 2, 3)) > 0).float()
            return torch.stack([3 * (1 - bright), 3 * bright], dim=1)

    x = torch.cat([torch.full((4, 3, 8, 8), -0.6), torch.full((4, 3, 8, 8), 0.6)])
    data = torch.utils.data.TensorDataset(x, torch.tensor([0] * 4 + [1] * 4))
    clean = evaluate_under_attack(Knows(), ASSIGNMENT_NORM, data, "pgd", 0.0, 1, None, 4, torch.device("cpu"), 0, False, 0)
    assert clean == {"accuracy": 100.0, "auc": 1.0, "fake_evasion_rate": 0.0}
    result = robustness_analysis.main(common_args(trained, demo_root, tmp_path) + [
        "--epsilons", "0", "8", "--steps", "2", "--cw-samples", "2", "--cw-steps", "3", "--cw-search", "1",
        "--n-examples", "2", "--no-progress", "--num-workers", "0"])
    rows = result["attacks"]["pgd"]
    assert [r["eps_255"] for r in rows] == [0, 8] and rows[1]["accuracy"] <= rows[0]["accuracy"]
    metrics = json.loads((tmp_path / "fakes_dataset_SimpleNet_metrics.json").read_text()) if (
        tmp_path / "fakes_dataset_SimpleNet_metrics.json").exists() else None
    assert metrics is None or metrics["auc"] == pytest.approx(rows[0]["auc"])
    saved = json.loads((tmp_path / "fakes_dataset_SimpleNet_robustness.json").read_text())[0]
    assert saved["attacks"]["pgd"] == rows and saved["cw"]["n_images"] == 2


def test_bonus_main_reports_the_test_auc_and_size(demo_root, tmp_path):
    from sklearn.metrics import roc_auc_score

    import bonus_main
    from bonus_model import my_bonus_model
    from faces_dataset import load_dataset

    train_main.main(["-d", "fakes_dataset", "-m", "Bonus", "-e", "1", "-b", "8", "--image-size", "64", "--data-root",
                     str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path), "--no-progress",
                     "--num-workers", "0"])
    result = bonus_main.main(["--checkpoint", str(tmp_path / "bonus.pt"), "--data-root", str(demo_root), "--no-progress"])
    model = my_bonus_model(tmp_path / "bonus.pt")
    test = load_dataset("fakes_dataset", "test", demo_root, 64)
    with torch.no_grad():
        scores = torch.cat([torch.softmax(model(x[None]), 1)[:, 1] for x, _ in test]).numpy()
    assert result["auc"] == pytest.approx(roc_auc_score([y for _, y in test], scores))
    assert result["n_params"] == 27_826


def test_cross_eval_has_one_cell_per_checkpoint_and_set_with_numerical_analysis_auc(trained, demo_root, tmp_path):
    import cross_eval

    other = tmp_path / "second.pt"
    train_main.main(["-d", "synthetic_dataset", "-m", "Bonus", "-e", "1", "-b", "8", "--image-size", "64", "--data-root",
                     str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path), "--no-progress",
                     "--num-workers", "0"])
    (tmp_path / "synthetic_dataset_Bonus_Adam.pt").rename(other)
    rows = cross_eval.main(["--checkpoints", str(trained), str(other), "--data-roots", str(demo_root), "--out-dir",
                            str(tmp_path), "--figures-dir", str(tmp_path), "--no-progress", "--bootstrap", "30"])
    assert [(r["checkpoint"], r["test_set"]) for r in rows] == [
        (trained.stem, "fakes_dataset"), (trained.stem, "synthetic_dataset"),
        ("second", "fakes_dataset"), ("second", "synthetic_dataset")]
    for r in rows:
        ckpt = trained if r["checkpoint"] == trained.stem else other
        reference = numerical_analysis.main(["-cpp", str(ckpt), "-d", r["test_set"], "--data-root", str(demo_root),
                                             "--figures-dir", str(tmp_path / "na"), "--no-progress", "--bootstrap", "30"])
        assert r["auc"] == pytest.approx(reference["auc"]) and r["eer"] == pytest.approx(reference["eer"])
        assert r["ci95"]["auc"] == pytest.approx(reference["ci95"]["auc"])  # same seed 42: same interval
        assert r["accuracy"] == pytest.approx(reference["accuracy_at_val_threshold"])
    assert json.loads((tmp_path / "cross_eval.json").read_text()) == rows
    assert (tmp_path / "cross_eval_auc.png").stat().st_size > 5000


def test_video_aggregation_on_hand_made_frame_scores():
    from metrics import safe_auc, video_scores

    sources = ["a", "a", "b", "b", "c", "c", "d", "d"]
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    frames = np.array([0.1, 0.9, 0.3, 0.3, 0.2, 0.6, 0.9, 0.9])  # frame AUC 11 of 16 pairs (ties half); video means a .5 b .3 c .4 d .9
    videos, video_labels, means = video_scores(sources, labels, frames, "mean")
    assert videos == ["a", "b", "c", "d"] and video_labels.tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(means, [0.5, 0.3, 0.4, 0.9])
    assert safe_auc(labels, frames) == pytest.approx(11 / 16)
    assert safe_auc(video_labels, means) == pytest.approx(0.75)  # pairs (c,a) lost, (c,b) (d,a) (d,b) won: 3 of 4
    with pytest.raises(ValueError, match="both labels"):
        video_scores(["a", "a"], np.array([0, 1]), np.array([0.1, 0.2]), "mean")


def test_numerical_analysis_scores_each_video_of_a_catalog(trained, demo_root, tmp_path):
    """A catalog of demo images, two frames per 'video': the video AUC equals the one computed from the frame scores."""
    import csv

    from detector import load_model_from_checkpoint
    from faces_dataset import load_dataset

    rows = []
    for split in ("val", "test"):
        for label, cls in ((0, "real"), (1, "fake")):
            for i, path in enumerate(sorted((demo_root / "fakes_dataset" / split / cls).iterdir())):
                rows.append({"path": str(path), "source": f"{split}-{cls}-{i // 2}.mp4", "label": label, "split": split})
    catalog = tmp_path / "clips" / "catalog.csv"
    catalog.parent.mkdir()
    with open(catalog, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "source", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    result = numerical_analysis.main(["-cpp", str(trained), "--catalog", str(catalog), "--figures-dir", str(tmp_path),
                                      "--bootstrap", "20", "--no-progress"])
    assert result["dataset"] == "catalog-clips" and result["n_samples"] == 8
    assert (tmp_path / "catalog-clips_SimpleNet__fakes_dataset_SimpleNet_Adam_roc_curve.png").is_file()  # another run's checkpoint
    detector = load_model_from_checkpoint(trained)
    model = detector.module
    test = load_dataset("", "test", None, detector.image_size, norm=detector.normalization, catalog=catalog)
    _, frame_scores, labels = numerical_analysis.get_soft_scores_and_true_labels(test, model, 8, torch.device("cpu"),
                                                                                 False, 0)
    test_sources = [r["source"] for r in rows if r["split"] == "test"]  # 3 real + 5 fake frames -> 2 + 3 videos
    means = {s: np.mean([p for p, t in zip(frame_scores, test_sources) if t == s]) for s in dict.fromkeys(test_sources)}
    video = result["video"]
    assert video["n_videos"] == 5 and video["n_fake_videos"] == 3
    from sklearn.metrics import roc_auc_score

    expected = roc_auc_score([int("fake" in s) for s in means], list(means.values()))
    assert video["by_aggregate"]["mean"]["auc"] == pytest.approx(expected)
    assert set(video["by_aggregate"]) == {"mean", "confident"}
    folder = numerical_analysis.main(common_args(trained, demo_root, tmp_path) + ["--bootstrap", "20"])
    assert "video" not in folder  # folder datasets have no source videos
