"""Definitions at their edges, each with a hand-computed case that a plausible wrong version of the line gets wrong:
thresholds (at, zero), the face order and the crop clamp, the EER threshold's axis, ECE's bin weights, bootstrap draws,
per-video rules, the corruption ladder, the schedule after warm-up, the shuffle, the loss guard, the saved threshold,
greyscale JPEGs, PGD's random start, and where val-youden is fitted."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import detect
from attacks import Corruption, pgd_attack
from checkpoints import read_checkpoint
from cli import UserError
from conftest import TinyNet, separable_toy_set
from face_detection import FaceDetector, square_box
from faces_dataset import load_image
from metrics import (
    Threshold,
    bootstrap_intervals,
    confident_strategy,
    equal_error_rate,
    expected_calibration_error,
)
from test_detect import checkpoint, media, monkeypatch_module  # noqa: F401  (fixtures)
from trainer import LoggingParameters, Schedule, Trainer, lr_factor

LP = LoggingParameters("TinyNet", "toy", "Adam")


# ---- detect.py ------------------------------------------------------------------------------------------------------
def test_the_verdict_is_fake_at_exactly_the_threshold_and_a_threshold_of_zero_is_used(media, checkpoint, tmp_path):  # noqa: F811
    pixels = np.asarray(Image.open(media / "astronaut.png").convert("RGB"), dtype=float)
    pixels[..., 0] *= 0.6  # less red: the constructed detector's P(fake) falls below 1
    photo = str(tmp_path / "tinted.png")
    Image.fromarray(pixels.astype(np.uint8)).save(photo)
    (first,) = detect.main([photo, "-cpp", str(checkpoint), "--no-progress"])
    assert 0.5 < first.score < 1
    (at,) = detect.main([photo, "-cpp", str(checkpoint), "--no-progress", "--threshold", repr(float(first.score))])
    assert at.verdict == "fake"  # "at or above"
    above = float(np.nextafter(first.score, 1))
    (over,) = detect.main([photo, "-cpp", str(checkpoint), "--no-progress", "--threshold", repr(above)])
    assert over.verdict == "real"
    detect.main([photo, "-cpp", str(checkpoint), "--no-progress", "--threshold", "0", "--out", str(tmp_path / "r.json")])
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["threshold"] == 0.0 and saved["threshold_source"] == "--threshold"  # not the checkpoint's 0.42
    assert saved["files"][0]["verdict"] == "fake"


def test_the_cam_beside_a_face_explains_the_fake_class(media, checkpoint, tmp_path, monkeypatch):  # noqa: F811
    asked = []
    real = detect.compute_cams

    def spy(model, images, classes, *args, **kwargs):
        asked.append(classes.tolist())
        return real(model, images, classes, *args, **kwargs)

    monkeypatch.setattr(detect, "compute_cams", spy)  # the CAM helper detect.py imports from analysis.py
    detect.main([str(media / "astronaut.png"), "-cpp", str(checkpoint), "--no-progress", "--annotate",
                 str(tmp_path / "a"), "--cam"])
    assert asked == [[1]]


def stub_detector(boxes, probs, min_prob=0.9) -> FaceDetector:
    detector = FaceDetector.__new__(FaceDetector)
    detector.min_prob, detector.max_side = min_prob, 10_000

    class Mtcnn:
        def detect(self, images):
            return [np.array(boxes, dtype=np.float32)], [np.array(probs, dtype=np.float32)]

    detector.mtcnn = Mtcnn()
    return detector


def test_faces_come_most_confident_first_and_a_face_at_min_prob_is_kept():
    boxes = [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]]
    (faces,) = stub_detector(boxes, [0.91, 0.99, 0.9, 0.5]).detect([Image.new("RGB", (100, 100))])
    assert [f.prob for f in faces] == pytest.approx([0.99, 0.91, 0.9])
    assert [f.box[0] for f in faces] == [20, 0, 40]


def test_the_square_crop_is_clamped_inside_a_landscape_frame():
    # at the right edge: side 60 * (1 + 2 * 0.3) = 96 around (620, 130), pushed left to end at 640
    assert square_box(np.array([600, 100, 640, 160]), 0.3, 640, 360) == (544, 82, 640, 178)
    # near the bottom: side 100 * 3 = 300 around (50, 330), pushed right to 0 and up to end at 360
    assert square_box(np.array([0, 300, 100, 360]), 1.0, 640, 360) == (0, 60, 300, 360)
    # taller than the frame: side 100 * 4 = 400 shrinks to the frame's height, 360
    assert square_box(np.array([0, 300, 100, 360]), 1.5, 640, 360) == (0, 0, 360, 360)


# ---- metrics.py -----------------------------------------------------------------------------------------------------
def test_the_eer_threshold_makes_false_positives_and_misses_equal():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [1200, 800])
    scores = np.clip(np.r_[rng.normal(0.35, 0.15, 1200), rng.normal(0.6, 0.15, 800)], 0, 1)
    eer, threshold = equal_error_rate(labels, scores)
    fpr = np.mean(scores[labels == 0] >= threshold)
    fnr = np.mean(scores[labels == 1] < threshold)
    assert fpr == pytest.approx(eer, abs=0.005) and fnr == pytest.approx(eer, abs=0.005)


def test_ece_weighs_each_bin_by_its_samples():
    scores = np.r_[np.full(10, 0.1), np.full(30, 0.9)]
    labels = np.r_[np.repeat([1, 0], [1, 9]), np.repeat([1, 0], [24, 6])]  # 10 % and 80 % fakes
    # bin of 0.1: |0.1 - 0.1| = 0 (10 samples); bin of 0.9: |0.8 - 0.9| = 0.1 (30 samples) -> 30/40 * 0.1
    assert expected_calibration_error(labels, scores) == pytest.approx(0.075)


@pytest.mark.parametrize("order", ["crucial real first", "crucial real last"])
def test_the_bootstrap_can_draw_the_first_and_the_last_sample(order):
    labels, scores = np.array([0, 0, 1, 1]), np.array([0.5, 0.9, 0.6, 0.7])
    if order == "crucial real last":
        labels, scores = labels[::-1].copy(), scores[::-1].copy()
    # only the real at 0.5 ranks below the fakes: a resample whose reals are all that one has AUC 1, any other AUC < 1
    ci = bootstrap_intervals(labels, scores, 400, seed=0)
    assert ci["auc"][1] == 1.0 and ci["auc"][0] == 0.0


def test_each_video_gets_the_rule_asked_for():
    from numerical_analysis import per_video_metrics

    frames = {"A": [0.9] * 12 + [0.1] * 8, "B": [0.55] * 20, "C": [0.1] * 19 + [0.6]}  # A fake, B and C real
    sources = [v for v, s in frames.items() for _ in s]
    labels = np.array([1 if v == "A" else 0 for v in sources])
    scores = np.array([x for s in frames.values() for x in s])
    result = per_video_metrics(sources, labels, scores, 0.6)["by_aggregate"]
    # mean: A 0.58 (called real at 0.6), B 0.55, C 0.125 -> 2 of 3 right; confident: A 0.9, B 0.55, C 0.1 -> all right
    assert result["mean"]["accuracy"] == pytest.approx(2 / 3) and result["confident"]["accuracy"] == 1.0
    assert result["mean"]["auc"] == result["confident"]["auc"] == 1.0


def test_the_confident_rule_at_its_edges():
    assert confident_strategy(np.r_[[0.9] * 11, [0.1] * 9]) == pytest.approx(0.54)  # 11 is not more than 11
    assert confident_strategy(np.r_[[0.9] * 12, [0.1] * 18]) == pytest.approx(0.42)  # 12 of 30 is not over 40 %
    assert confident_strategy(np.r_[[0.9] * 13, [0.1] * 17]) == pytest.approx(0.9)
    assert confident_strategy(np.r_[[0.1] * 18, [0.5] * 2]) == pytest.approx(0.14)  # 90 % real is not over 90 %
    assert confident_strategy(np.r_[[0.1] * 19, [0.5]]) == pytest.approx(0.1)


# ---- corruptions, schedule, shuffle, loss guard, saved threshold ---------------------------------------------------
def test_the_mildest_blur_blurs():
    checker = Image.fromarray(((np.indices((32, 32)).sum(0) % 2) * 255).astype(np.uint8)).convert("RGB")
    blurred = np.asarray(Corruption("blur", 0.5)(checker), dtype=float)
    assert np.abs(blurred - np.asarray(checker, dtype=float)).mean() > 20


def test_the_step_schedule_counts_its_steps_from_the_end_of_the_warm_up():
    schedule = Schedule("step", warmup_epochs=2, step_size=2, gamma=0.1)
    assert [lr_factor(e, 6, schedule) for e in range(6)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 0.1, 0.1])


class Recording(torch.utils.data.Dataset):
    """A toy split that notes the order in which its items are read."""

    def __init__(self):
        self.data, self.seen = separable_toy_set(24), []

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        self.seen.append(index)
        return self.data[index]


def test_each_epoch_has_its_own_shuffle_and_a_rerun_repeats_it(tmp_path):
    def orders():
        data = Recording()
        torch.manual_seed(0)
        model = TinyNet()
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), nn.CrossEntropyLoss(), 8, data, separable_toy_set(8),
                separable_toy_set(8), num_workers=0, out_dir=tmp_path, checkpoint_dir=tmp_path, progress=False).run(2, LP)
        return data.seen[:24], data.seen[24:48]

    first, second = orders()
    assert sorted(first) == sorted(second) == list(range(24)) and first != second
    assert orders() == (first, second)


def test_an_infinite_loss_stops_training(tmp_path):
    model = TinyNet()

    def infinite(outputs, labels):
        return nn.functional.cross_entropy(outputs, labels) + float("inf")

    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), infinite, 8, separable_toy_set(16),
                      separable_toy_set(8), separable_toy_set(8), num_workers=0, out_dir=tmp_path, checkpoint_dir=tmp_path,
                      progress=False)
    with pytest.raises(UserError, match="the loss is inf at epoch 1, batch 1"):
        trainer.run(1, LP)


def test_the_saved_threshold_is_chosen_on_the_validation_reals_and_zero_survives(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    val = separable_toy_set(40, seed=1)
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=0.05), nn.CrossEntropyLoss(), 8, separable_toy_set(32),
                      val, separable_toy_set(20, seed=2), num_workers=0, out_dir=tmp_path, checkpoint_dir=tmp_path,
                      progress=False)
    record = trainer.run(1, LP)
    saved = read_checkpoint(tmp_path / "toy_TinyNet_Adam.pt")
    model.load_state_dict(saved["model"])
    model.eval()
    with torch.no_grad():
        scores = torch.softmax(model(torch.stack([x for x, _ in val])), 1)[:, 1].numpy()
    labels = np.array([int(y) for _, y in val])
    reals = np.sort(scores[labels == 0])[::-1]  # 20 reals: 5 % allows 1 false alarm, so the 2nd highest stays below
    expected = (reals[1] + reals[0]) / 2
    entry = saved["threshold"]
    assert entry["value"] == pytest.approx(expected, abs=1e-6) == record["threshold"]
    assert np.sum(reals >= entry["value"]) == 1 and entry["rule"] == "real-far:0.05"
    assert entry["band"][0] == pytest.approx((reals[2] + reals[1]) / 2, abs=1e-6)  # 10 %: two reals may reach it
    assert entry["band"][1] == pytest.approx(reals[0], abs=1e-6) and entry["band"][1] > reals[0] - 1e-7  # 2.5 %: none
    assert entry["eer_threshold"] == pytest.approx(equal_error_rate(labels, scores)[1], abs=1e-6)
    assert Threshold.from_entry({"value": 0.0, "source": "validation EER"}) == Threshold(0.0, "validation EER")


# ---- decoding, attacks, analysis --------------------------------------------------------------------------------------
def test_the_torchvision_decoder_gives_three_channels_for_a_greyscale_jpeg(tmp_path):
    grey = Image.fromarray((np.indices((24, 40)).sum(0) * 5 % 256).astype(np.uint8), mode="L")
    grey.save(tmp_path / "grey.jpg", quality=95)
    decoded = load_image(tmp_path / "grey.jpg", "torchvision")
    assert tuple(decoded.shape) == (3, 24, 40)
    pil = np.asarray(load_image(tmp_path / "grey.jpg", "pil"), dtype=int)
    assert np.abs(decoded.permute(1, 2, 0).numpy().astype(int) - pil).max() <= 1


def test_pgd_starts_anywhere_in_the_ball_on_both_sides():
    x = torch.full((4, 3, 16, 16), 0.5)
    start = pgd_attack(TinyNet(), x, torch.zeros(4, dtype=torch.long), eps=0.1, steps=0,
                       generator=torch.Generator().manual_seed(0)) - x
    assert start.min() < -0.09 and start.max() > 0.09 and abs(float(start.mean())) < 0.005


def test_val_youden_is_chosen_on_the_validation_scores(demo_root, tmp_path, monkeypatch):
    import numerical_analysis
    import train_main
    from detector import load_model_from_checkpoint
    from faces_dataset import load_dataset

    train_main.main(["-d", "fakes_dataset", "-m", "Bonus", "-e", "1", "-b", "8", "--image-size", "64", "--data-root",
                     str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path), "--no-progress",
                     "--num-workers", "0"])
    seen = []
    monkeypatch.setattr(numerical_analysis, "youden_threshold", lambda y, s: seen.append((y, s)) or 0.5)
    result = numerical_analysis.main(["-cpp", str(tmp_path / "fakes_dataset_Bonus_Adam.pt"), "-d", "fakes_dataset",
                                      "--data-root", str(demo_root), "--figures-dir", str(tmp_path / "f"), "--no-progress",
                                      "--bootstrap", "10", "--threshold", "val-youden"])
    loaded = load_model_from_checkpoint(tmp_path / "fakes_dataset_Bonus_Adam.pt", "cpu")
    model = loaded.module
    val = load_dataset("fakes_dataset", "val", demo_root, 64, None, loaded.normalization)
    _, val_scores, val_labels = numerical_analysis.get_soft_scores_and_true_labels(val, model, progress=False)
    ((labels, scores),) = seen
    assert np.array_equal(labels, val_labels) and np.allclose(scores, val_scores)
    assert result["val_threshold"] == 0.5 and result["val_threshold_source"] == "validation Youden J"


def test_random_crops_are_windows_of_the_image_at_its_size_and_evaluation_sees_it_whole():
    from faces_dataset import get_transforms
    from normalization import Normalization

    plain = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    pixels = (np.arange(64 * 64 * 3).reshape(64, 64, 3) % 251).astype(np.uint8)
    image = Image.fromarray(pixels)
    torch.manual_seed(0)
    for _ in range(5):
        out = (get_transforms(True, 64, plain, crop=48)(image) * 255).round().byte().permute(1, 2, 0).numpy()
        assert out.shape == (48, 48, 3)
        windows = [pixels[t:t + 48, left:left + 48] for t in range(17) for left in range(17)]
        assert any(np.array_equal(out, w) or np.array_equal(out, w[:, ::-1]) for w in windows)  # cut out, not resampled
    assert tuple(get_transforms(False, 64, plain, crop=48)(image).shape) == (3, 64, 64)


def test_the_cnndetection_recipe_is_wang_et_als_blur_and_jpeg_each_half_the_time():
    from torchvision.transforms import v2

    from faces_dataset import get_transforms

    steps = get_transforms(True, 32, augment="cnndetection").transforms
    applied = [(s.p, s.transforms[0]) for s in steps if isinstance(s, v2.RandomApply)]
    assert [type(t).__name__ for _, t in applied] == ["GaussianBlur", "JPEG"] and [p for p, _ in applied] == [0.5, 0.5]
    (_, blur), (_, jpeg) = applied
    assert blur.sigma[0] < 0.01 and blur.sigma[1] == 3.0 and blur.kernel_size[0] >= 6 * 3 + 1  # sigma 0-3, kernel fits it
    assert list(jpeg.quality) == [30, 100]
    assert not any(isinstance(s, v2.ColorJitter) for s in steps)
