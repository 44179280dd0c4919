"""The assignment's own definitions, asserted on constructed cases where the right answer is known in closed form."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import train_main
from attacks import cw_attack
from bonus_model import BonusNet
from grad_cam_analysis import compute_cams, get_grad_cam_visualization, overlay
from normalization import ASSIGNMENT_NORM, IMAGENET_NORM, normalize
from numerical_analysis import get_soft_scores_and_true_labels
from saliency_map import compute_gradient_saliency_maps


class Linear(nn.Module):
    def __init__(self, size: int = 8, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(3 * size * size, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_cw_returns_close_to_the_smallest_perturbation_of_a_linear_model():
    """For logits linear in the pixels, the closest point with a flipped decision lies at distance
    margin / ||grad of margin|| (here the model sees 2x - 1, so the gradient is 2 (w_y - w_other))."""
    model = Linear().eval()
    torch.manual_seed(1)
    x = 0.5 + 0.02 * torch.randn(6, 3, 8, 8)
    with torch.no_grad():
        labels = model(normalize(x)).argmax(1)
    w = model.fc.weight
    g = 2 * (w[labels] - w[1 - labels])  # (B, D): gradient of own - other w.r.t. the pixels
    with torch.no_grad():
        logits = model(normalize(x))
        margin = logits.gather(1, labels[:, None])[:, 0] - logits.gather(1, (1 - labels)[:, None])[:, 0]
    optimum = margin / g.norm(dim=1)
    adv = cw_attack(model, x, labels, c=1.0, steps=200, lr=0.005, binary_search_steps=8)
    l2 = (adv - x).flatten(1).norm(dim=1)
    with torch.no_grad():
        assert torch.all(model(normalize(adv)).argmax(1) != labels)
    assert torch.all(l2 >= optimum * 0.999)  # nothing beats the closed form
    assert torch.all(l2 <= optimum * 1.10)  # and C&W keeps its smallest success, within 10 %


def test_saliency_is_the_max_over_channels_of_the_absolute_gradient():
    torch.manual_seed(0)
    weights = torch.randn(2, 3, 6, 6)  # signed, different per channel and class

    class Weighted(nn.Module):
        def forward(self, x):
            return (x[:, None] * weights[None]).sum(dim=(2, 3, 4))  # score_c = <W_c, x>, gradient W_c

    labels = torch.tensor([0, 1])
    maps = compute_gradient_saliency_maps(torch.rand(2, 3, 6, 6), labels, Weighted())
    expected = weights[labels].abs().amax(dim=1)
    assert torch.allclose(maps, expected)
    assert not torch.allclose(maps, weights[labels].amax(dim=1))  # the signed gradient would differ
    assert not torch.allclose(maps, weights[labels].abs().mean(dim=1))  # and so would the channel mean


def test_soft_score_columns_are_real_then_fake():
    class Knows(nn.Module):  # logits (0, 4) for bright images, (4, 0) for dark ones
        def forward(self, x):
            bright = (x.mean(dim=(1, 2, 3)) > 0).float()
            return torch.stack([4 * (1 - bright), 4 * bright], dim=1)

    x = torch.cat([torch.full((3, 3, 4, 4), -0.5), torch.full((2, 3, 4, 4), 0.5)])
    y = torch.tensor([0, 0, 0, 1, 1])
    real, fake, labels = get_soft_scores_and_true_labels(torch.utils.data.TensorDataset(x, y), Knows(), progress=False,
                                                         num_workers=0)
    assert labels.tolist() == [0, 0, 0, 1, 1]
    assert np.all(fake[labels == 1] > 0.98) and np.all(fake[labels == 0] < 0.02)
    assert np.allclose(real + fake, 1)


class TwoBlobNet(nn.Module):
    """Feature 0 responds to red, feature 1 to blue; class 0 evidence is red, class 1 evidence is blue."""

    def __init__(self):
        super().__init__()
        self.conv3 = nn.Conv2d(3, 2, 3, padding=1)
        with torch.no_grad():
            self.conv3.weight.zero_()
            self.conv3.weight[0, 0] = 0.1  # red
            self.conv3.weight[1, 2] = 0.1  # blue
            self.conv3.bias.zero_()

    def forward(self, x):
        return torch.relu(self.conv3(x)).mean(dim=(2, 3))

    def cam_layer(self):
        return self.conv3


def test_grad_cam_follows_the_requested_class():
    x = torch.zeros(1, 3, 32, 32)
    x[:, 0, 12:20, 4:10] = 1.0  # a red blob on the left
    x[:, 2, 12:20, 22:28] = 1.0  # a blue blob on the right
    left, right = (compute_cams(TwoBlobNet(), x, torch.tensor([c]), "SimpleNet")[0] for c in (0, 1))
    assert left[:, :16].sum() > 3 * left[:, 16:].sum()
    assert right[:, 16:].sum() > 3 * right[:, :16].sum()


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "scorecam", "eigencam", "hirescam", "layercam"])
def test_every_cam_method_peaks_on_the_evidence(method):
    x = torch.zeros(1, 3, 32, 32)
    x[:, 2, 12:20, 22:28] = 1.0
    cam = compute_cams(TwoBlobNet(), x, torch.tensor([1]), "SimpleNet", method)[0]
    assert cam.shape == (32, 32) and np.isfinite(cam).all() and 0 <= cam.min() and cam.max() <= 1
    assert cam[12:20, 20:30].mean() > cam[:, :14].mean()


def test_get_grad_cam_visualization_is_the_overlay_of_that_image():
    x = torch.zeros(1, 3, 32, 32)
    x[:, 2, 12:20, 22:28] = 1.0
    data = torch.utils.data.TensorDataset(normalize(x.clamp(0, 1)), torch.tensor([1]))
    model = TwoBlobNet()
    vis, label = get_grad_cam_visualization(data, model, generator=torch.Generator().manual_seed(0))
    expected = overlay(data[0][0], compute_cams(model, data[0][0][None], torch.tensor([1]), "SimpleNet")[0], ASSIGNMENT_NORM)
    assert label.tolist() == [1] and vis.dtype == np.uint8 and np.array_equal(vis, expected)
    assert vis[16, 25].astype(int).sum() != vis[2, 2].astype(int).sum()  # the blob is highlighted, the corner is not


def test_bonus_model_size_is_exactly_the_documented_one():
    assert sum(p.numel() for p in BonusNet().parameters()) == 27_826


def test_legacy_2d_pointwise_xception_gives_the_same_outputs(tmp_path):
    from xception import Xception, load_xception_state_dict

    torch.manual_seed(0)
    model = Xception().eval()
    legacy = {k: v[:, :, 0, 0] if "pointwise" in k else v for k, v in model.state_dict().items()}
    torch.save(legacy, tmp_path / "legacy.pth")
    again = Xception().eval()
    again.load_state_dict(load_xception_state_dict(tmp_path / "legacy.pth"), strict=True)
    x = torch.randn(1, 3, 72, 72)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_catalog_splits_select_their_own_rows(tmp_path):
    from PIL import Image

    from faces_dataset import CatalogDataset
    from splits import build_splits

    lines = ["path,source,label,split"]
    (tmp_path / "crops").mkdir()
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        for i in range(n):
            name = f"crops/{split}_{i}.png"
            Image.new("RGB", (64, 64), (200 * (i % 2), 50, 50)).save(tmp_path / name)
            lines.append(f"{name},{split}_{i}.mp4,{i % 2},{split}")
    (tmp_path / "catalog.csv").write_text("\n".join(lines) + "\n")
    args = train_main.parse_args(["--catalog", str(tmp_path / "catalog.csv"), "--image-size", "64"])
    settings = train_main.data_settings(args)
    splits = build_splits(settings, IMAGENET_NORM, progress=False)
    for ds, split, n in zip((splits.train, splits.val, splits.test), ("train", "val", "test"), (4, 2, 3)):
        assert isinstance(ds, CatalogDataset) and [p.name for p in ds.paths] == [f"{split}_{i}.png" for i in range(n)]
        assert ds.labels == [i % 2 for i in range(n)]
    assert settings.run_dataset_name == f"catalog-{tmp_path.name}"  # never -d's file names


def test_summarize_run_reports_the_values_of_the_logs(tmp_path):
    from summarize_run import summary_markdown

    (tmp_path / "out").mkdir()
    (tmp_path / "fig").mkdir()
    record = {"model": "EfficientNetLite0", "dataset": "fakes_dataset", "val_acc": [70.0, 80.0], "best_val_acc": 80.0,
              "test_acc_at_best_val": 78.5, "epoch_time_s": [10.0, 12.0], "config": {"n_params": 3373570}, "tag": ""}
    (tmp_path / "out" / "fakes_dataset_EfficientNetLite0_Adam.json").write_text(json.dumps([record]))
    (tmp_path / "fig" / "fakes_dataset_EfficientNetLite0_metrics.json").write_text(json.dumps({"auc": 0.8765}))
    (tmp_path / "times.tsv").write_text("train\t22\nplot\t3\n")
    text = summary_markdown(tmp_path / "out", tmp_path / "fig", tmp_path / "times.tsv")
    assert "| EfficientNetLite0 | fakes_dataset | 2 | 80.00 | 78.50 | 0.8765 | 3,373,570 | 22 |" in text
    assert "| **total** | **25** |" in text


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_more_samples():
    from metrics import bootstrap_intervals, compute_metrics

    rng = np.random.default_rng(0)

    def scores(n):
        y = np.arange(n) % 2
        return y, np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)

    small, large = scores(100), scores(2000)
    ci_small, ci_large = bootstrap_intervals(*small, 300), bootstrap_intervals(*large, 300)
    for (y, s), ci in ((small, ci_small), (large, ci_large)):
        m = compute_metrics(y, s)
        assert ci["auc"][0] <= m["auc"] <= ci["auc"][1] and ci["eer"][0] <= m["eer"] <= ci["eer"][1]
    width = lambda ci: ci["auc"][1] - ci["auc"][0]  # noqa: E731
    assert width(ci_large) < width(ci_small) / 2  # about 1 / sqrt(20) as wide
    assert bootstrap_intervals(*small, 300, seed=1) == bootstrap_intervals(*small, 300, seed=1)  # seeded


def test_calibration_error_and_brier_on_hand_made_scores():
    from metrics import brier_score, expected_calibration_error

    y = np.array([1, 1, 1, 0] * 25)  # 75 % fakes
    assert expected_calibration_error(y, np.full(100, 0.75)) == pytest.approx(0.0)  # calibrated
    assert expected_calibration_error(y, np.full(100, 0.95)) == pytest.approx(0.20)  # over-confident by 0.2
    assert brier_score(y, np.full(100, 0.75)) == pytest.approx(0.75 * 0.25**2 + 0.25 * 0.75**2)


def test_temperature_scaling_lowers_the_calibration_error_of_an_overconfident_model():
    from metrics import apply_temperature, expected_calibration_error, fit_temperature, youden_threshold

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    true_logit = (2 * y - 1) * 1.0 + rng.normal(0, 1.5, 4000)  # calibrated logits ...
    overconfident = 1 / (1 + np.exp(-3 * true_logit))  # ... multiplied by 3
    val, test = slice(0, 2000), slice(2000, 4000)
    t = fit_temperature(y[val], overconfident[val])
    assert 2.5 < t < 3.5  # recovers the factor
    before = expected_calibration_error(y[test], overconfident[test])
    after = expected_calibration_error(y[test], apply_temperature(overconfident[test], t))
    assert after < before / 3
    assert youden_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.6, 0.9])) == pytest.approx(0.6)
