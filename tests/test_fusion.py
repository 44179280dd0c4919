"""Thresholds chosen on real faces, the uncertain band, and fused detectors (fusion.py), on hand-computed cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checkpoints import save_checkpoint
from cli import UserError
from conftest import make_split
from detector import file_sha256, load_model_from_checkpoint
from fusion import FUSED_SUFFIX, MemberScale, fit_logistic, fused_logits, write_fused_spec
from metrics import Threshold, per_source_far_threshold, real_face_threshold, real_far_threshold
from models import build_model
from normalization import IMAGENET_NORM, Normalization, normalize

SCORES = [0.9, 0.8, 0.8, 0.7, 0.1]  # five real faces, two of them tied


@pytest.mark.parametrize("far, expected, flagged", [
    (0.2, 0.85, 1),  # one false alarm allowed: the 2nd highest (0.8) stays below, midway to 0.9
    (0.4, 0.85, 1),  # two allowed, but the 2nd and 3rd are tied at 0.8: a tie is never split, so only one is flagged
    (0.6, 0.75, 3),  # three allowed: the 4th (0.7) stays below
    (0.199, float(np.nextafter(0.9, 1)), 0),  # floor(0.995) = 0 allowed (rounding would allow one): just above the top
    (0.0, float(np.nextafter(0.9, 1)), 0),  # none allowed, no higher score: just above the highest
    (1.0, 0.1, 5),  # all allowed: the lowest score flags every face
])
def test_the_false_alarm_threshold_on_ties_and_edges(far, expected, flagged):
    threshold = real_far_threshold(SCORES, far)
    assert threshold == pytest.approx(expected, abs=1e-12)
    assert sum(s >= threshold for s in SCORES) == flagged <= math.floor(far * len(SCORES) + 1e-9)


def test_the_false_alarm_count_survives_binary_fractions_and_sources_are_each_held_to_it():
    scores = np.linspace(0, 1, 100)
    # 0.29 * 100 is 28.999999999999996 in binary: 29 false alarms are allowed, not 28
    assert np.sum(scores >= real_far_threshold(scores, 0.29)) == 29
    quiet, loud = [0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]
    # the threshold holds on each source: the louder source decides (a pooled 25 % would flag two of loud's four)
    assert per_source_far_threshold([quiet, loud], 0.25) == pytest.approx(0.75)
    assert real_far_threshold(quiet + loud, 0.25) == pytest.approx(0.65)
    with pytest.raises(ValueError):
        real_far_threshold([], 0.05)


def test_the_uncertain_band_edges():
    t = Threshold(0.5, "test", (0.4, 0.6))
    assert [t.verdict(s) for s in (0.6, 0.5999, 0.5, 0.4, 0.3999)] == ["fake", "uncertain", "uncertain", "uncertain", "real"]
    assert [t.binary(s) for s in (0.5, 0.4999)] == ["fake", "real"]
    assert Threshold(0.5, "no band").verdict(0.5) == "fake" and Threshold(0.5, "no band").verdict(0.49) == "real"
    with pytest.raises(ValueError):
        Threshold(0.7, "band below it", (0.4, 0.6))
    # the band of a real-face threshold: twice and half the false-alarm rate (20 faces: 2, 1 and 0 reach its points)
    reals = np.arange(20) / 20
    chosen = real_face_threshold([reals], 0.05)
    assert [int(np.sum(reals >= x)) for x in (chosen.band[0], chosen.value, chosen.band[1])] == [2, 1, 0]
    assert Threshold.from_entry(chosen.to_entry()) == chosen
    assert "no real face" in Threshold.from_entry({"value": None, "warning": "no real face"}).source


@pytest.fixture()
def members(tmp_path):
    """Two SimpleNet members at 64 and 56 px with different normalisations, saved as checkpoints."""
    torch.manual_seed(0)
    paths = []
    for k, (size, norm) in enumerate(((64, Normalization()), (56, IMAGENET_NORM))):
        model = build_model("SimpleNet", image_size=size)
        path = tmp_path / f"m{k}.pt"
        save_checkpoint({"model": model.state_dict(), "model_name": "SimpleNet", "model_kwargs": {"image_size": size},
                         "normalization": norm.to_dict()}, path)
        paths.append(path)
    return paths


def write_spec(path, members, scales, rule, threshold=None):
    write_fused_spec(path, {"members": [{"file": m.name, "sha256": file_sha256(m), "scale": s.to_dict()}
                                        for m, s in zip(members, scales)],
                            "rule": rule, "threshold": threshold, "framing": {"margin": 0.1, "source": "test"}})


@pytest.mark.parametrize("rule", [{"kind": "logistic", "weights": [0.7, -1.3], "bias": 0.25}, {"kind": "max"},
                                  {"kind": "mean"}])
def test_a_fused_score_equals_the_hand_computation_of_its_two_members(tmp_path, members, rule):
    scales = [MemberScale(0.1, 2.0), MemberScale(-0.3, 0.5)]
    spec = tmp_path / f"pair{FUSED_SUFFIX}"
    write_spec(spec, members, scales, rule, {"value": 0.6, "source": "test", "band": [0.5, 0.7]})
    fused = load_model_from_checkpoint(spec)
    assert (fused.name, fused.image_size, fused.framing.margin, fused.threshold.band) == ("Fused", 64, 0.1, (0.5, 0.7))
    x = torch.rand(3, 3, 64, 64)  # [0, 1] pixels at the larger member's size
    z = []
    for path, size, scale in zip(members, (64, 56), scales):
        member = load_model_from_checkpoint(path)
        view = x if size == 64 else F.interpolate(x, size=(56, 56), mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            logits = member.module(normalize(view, member.normalization))
        z.append(((logits[:, 1] - logits[:, 0]) - scale.mean) / scale.std)
    z = torch.stack(z, 1)
    by_hand = {"logistic": 0.25 + 0.7 * z[:, 0] - 1.3 * z[:, 1], "max": torch.maximum(z[:, 0], z[:, 1]),
               "mean": (z[:, 0] + z[:, 1]) / 2}[rule["kind"]]
    with torch.no_grad():
        logits, per_member = fused.module.scores(x)
    assert torch.allclose(torch.softmax(logits, 1)[:, 1], torch.sigmoid(by_hand), atol=1e-5)
    raw = z * torch.tensor([2.0, 0.5]) + torch.tensor([0.1, -0.3])  # each member's own logit, unstandardised
    assert torch.allclose(per_member, torch.sigmoid(raw), atol=1e-5)  # what the CSV shows beside the fused score


def test_a_fused_file_refuses_a_member_whose_bytes_changed_or_that_is_missing(tmp_path, members):
    spec = tmp_path / f"pair{FUSED_SUFFIX}"
    write_spec(spec, members, [MemberScale(0, 1)] * 2, {"kind": "max"})
    load_model_from_checkpoint(spec)
    model = build_model("SimpleNet", image_size=56)  # other weights under the same name
    save_checkpoint({"model": model.state_dict(), "model_name": "SimpleNet", "model_kwargs": {"image_size": 56}}, members[1])
    with pytest.raises(UserError, match=r"its member m1\.pt has changed \(SHA-256"):
        load_model_from_checkpoint(spec)
    members[1].unlink()
    with pytest.raises(UserError, match="its member m1.pt is missing"):
        load_model_from_checkpoint(spec)
    data = json.loads(spec.read_text())
    data["members"][0]["file"] = "../elsewhere/m0.pt"
    spec.write_text(json.dumps(data))
    with pytest.raises(UserError, match="relative to the fused file"):
        load_model_from_checkpoint(spec)
    with pytest.raises(UserError, match="not one SimpleNet"):
        load_model_from_checkpoint(spec, expected_model="SimpleNet")


def test_the_logistic_rule_weighs_each_dataset_alike_and_learns_the_expert():
    """Member 0 separates dataset A, member 1 dataset B (each at chance on the other): fitted on both at once, both
    weights are positive and comparable although A has ten times B's faces; the fused logit ranks both datasets."""
    rng = np.random.default_rng(0)
    n_a, n_b = 1000, 100
    y_a, y_b = rng.integers(0, 2, n_a), rng.integers(0, 2, n_b)
    z = np.concatenate([np.stack([3 * y_a + rng.normal(size=n_a), rng.normal(size=n_a)], 1),
                        np.stack([rng.normal(size=n_b), 3 * y_b + rng.normal(size=n_b)], 1)])
    labels, groups = np.concatenate([y_a, y_b]), np.array([0] * n_a + [1] * n_b)
    rule = fit_logistic(z, labels, groups)
    w0, w1 = rule["weights"]
    assert w0 > 0 and w1 > 0 and 0.5 < w0 / w1 < 2
    from sklearn.metrics import roc_auc_score

    fused = fused_logits(z, rule)
    assert roc_auc_score(y_b, fused[n_a:]) > 0.9 and roc_auc_score(y_a, fused[:n_a]) > 0.9


def test_fuse_detectors_fits_on_val_only_and_detect_shows_each_member(demo_root, tmp_path, capsys):
    """Two members trained on the demo datasets, fused by the tool: its threshold is what at most 5 % of each dataset's
    val reals reach (recomputed here from the fused scores), the test splits are never read, and detect.py's CSV keeps
    each member's score beside the fused one."""
    import csv

    import detect
    import fuse_detectors
    import train_main
    from analysis import get_soft_scores_and_true_labels
    from faces_dataset import load_dataset

    for dataset in ("fakes_dataset", "synthetic_dataset"):
        train_main.main(["-d", dataset, "-m", "Bonus", "-e", "1", "-b", "8", "--image-size", "64", "--data-root",
                         str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path), "--no-progress",
                         "--num-workers", "0"])
    out = tmp_path / "shipped" / "pair.fused.json"
    test_dirs = [demo_root / d / "test" for d in ("fakes_dataset", "synthetic_dataset")]
    for folder in test_dirs:  # the test splits are never read: hide them
        folder.rename(folder.with_name("hidden"))
    try:
        spec = fuse_detectors.main(["--members", str(tmp_path / "fakes_dataset_Bonus_Adam.pt"),
                                    str(tmp_path / "synthetic_dataset_Bonus_Adam.pt"), "--data-root", str(demo_root),
                                    "--rule", "logistic", "--out", str(out), "--copy-members", "--no-progress"])
    finally:
        for folder in test_dirs:
            folder.with_name("hidden").rename(folder)
    fused = load_model_from_checkpoint(out)
    per_dataset_reals = []
    for dataset in ("fakes_dataset", "synthetic_dataset"):
        val = load_dataset(dataset, "val", demo_root, fused.image_size, norm=fused.normalization)
        _, scores, labels = get_soft_scores_and_true_labels(val, fused.module, 8, "cpu", False)
        per_dataset_reals.append(scores[labels == 0])
    assert fused.threshold.value == pytest.approx(real_face_threshold(per_dataset_reals, 0.05).value, abs=1e-5)
    assert spec["fitted_on"]["splits"] == ["fakes_dataset/val", "synthetic_dataset/val"]
    with pytest.raises(SystemExit):
        fuse_detectors.main(["--members", str(tmp_path / "fakes_dataset_Bonus_Adam.pt"), "--data-root", str(demo_root),
                             "--out", str(out)])
    assert "is never written over" in capsys.readouterr().err
    photo = sorted((demo_root / "fakes_dataset" / "test" / "real").iterdir())[0]
    detect.main([str(photo), "-cpp", str(out), "--no-progress", "--min-prob", "0.5", "--out", str(tmp_path / "r.csv"),
                 "--fp32"])
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    face = next(r for r in rows if r["row"] == "face")
    assert {"p_fake[fakes_dataset_Bonus_Adam.pt]", "p_fake[synthetic_dataset_Bonus_Adam.pt]"} <= set(face)
    assert 0 <= float(face["p_fake[synthetic_dataset_Bonus_Adam.pt]"]) <= 1


def test_cross_evals_verdict_shares_on_a_hand_computed_case():
    from metrics import verdict_shares

    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.5, 0.7, 0.6, 0.9])
    shares = verdict_shares(labels, scores, Threshold(0.55, "t", (0.45, 0.65)))
    # reals at or above 0.55: 0.7 of three; in [0.45, 0.65): 0.5 and 0.6; decided 0.1 (right), 0.7 (wrong), 0.9 (right)
    assert shares == {"false_alarms": pytest.approx(1 / 3), "uncertain": pytest.approx(2 / 5),
                      "accuracy_decided": pytest.approx(2 / 3)}
    assert verdict_shares(labels, scores, Threshold(0.55, "no band"))["uncertain"] is None


def test_cross_eval_real_far_threshold_is_chosen_on_both_datasets_val_reals(demo_root, tmp_path):
    import cross_eval
    import train_main
    from analysis import get_soft_scores_and_true_labels
    from faces_dataset import load_dataset

    train_main.main(["-d", "fakes_dataset", "-m", "Bonus", "-e", "1", "-b", "8", "--image-size", "64", "--data-root",
                     str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path), "--no-progress",
                     "--num-workers", "0"])
    ckpt = tmp_path / "fakes_dataset_Bonus_Adam.pt"
    rows = cross_eval.main(["--checkpoints", str(ckpt), "--data-roots", str(demo_root), "--out-dir", str(tmp_path),
                            "--figures-dir", str(tmp_path), "--no-progress", "--bootstrap", "10", "--threshold", "real-far"])
    detector = load_model_from_checkpoint(ckpt)
    reals = []
    for dataset in ("fakes_dataset", "synthetic_dataset"):
        val = load_dataset(dataset, "val", demo_root, 64, norm=detector.normalization)
        _, scores, labels = get_soft_scores_and_true_labels(val, detector.module, progress=False)
        reals.append(scores[labels == 0])
    expected = real_face_threshold(reals, 0.05)
    assert [r["threshold"] for r in rows] == pytest.approx([expected.value] * 2, abs=1e-6)
    assert rows[0]["uncertain_band"] == pytest.approx(list(expected.band), abs=1e-6)
    assert all(r["false_alarms"] is not None and 0 <= r["false_alarms"] <= 1 for r in rows)


def _layout(root, counts):
    """<root>/<dataset>/{train,val,test}/ with counts[dataset] = (reals, fakes) tiny images each, and a macOS junk file."""
    for name, (reals, fakes) in counts.items():
        for split in ("train", "val", "test"):
            for folder in make_split(root / name / split, reals, fakes).iterdir():
                (folder / "._real_0.png").write_bytes(b"\0\5\26\7")  # AppleDouble junk: never a row


def test_joined_datasets_keep_their_splits_and_repeat_only_train(tmp_path):
    from join_datasets import main as join

    from faces_dataset import CatalogDataset

    root = tmp_path / "data"
    _layout(root, {"fakes_dataset": (2, 3), "synthetic_dataset": (1, 1)})
    out = tmp_path / "joint" / "catalog.csv"
    join(["--data-root", str(root), "--repeat", "synthetic_dataset=3", "--out", str(out)])
    train, val = CatalogDataset(out, split="train"), CatalogDataset(out, split="val")
    assert len(train) == 5 + 3 * 2 and train.labels.count(1) == 3 + 3 * 1  # synthetic's train rows three times
    assert len(val) == 5 + 2 and val.labels.count(1) == 3 + 1  # val never repeated
    assert len(set(map(str, val.paths))) == len(val) and all(p.is_absolute() for p in val.paths)
    assert "synthetic_dataset/val/fake/fake_0.png" in val.sources
    assert not any(p.name.startswith(".") for p in train.paths)
    assert set(train.paths).isdisjoint(val.paths)  # nothing moves between splits


@pytest.mark.parametrize("argv, words", [
    (["--repeat", "synthetic_dataset=0"], "positive"),
    (["--datasets", "fakes_dataset", "--repeat", "synthetic_dataset=2"], "does not join"),
    (["--out", "EXISTS"], "never written over"),
    (["--datasets", "synthetic_dataset"], "holds no image"),
])
def test_joining_datasets_refuses_in_one_sentence(tmp_path, capsys, argv, words):
    from join_datasets import main as join

    root = tmp_path / "data"
    _layout(root, {"fakes_dataset": (1, 1), "synthetic_dataset": (1, 0)})
    existing = tmp_path / "catalog.csv"
    existing.write_text("mine\n")
    argv = [existing.as_posix() if a == "EXISTS" else a for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "new" / "catalog.csv")]
    with pytest.raises(SystemExit) as stop:
        join(["--data-root", str(root), *argv])
    assert stop.value.code == 2 and words in capsys.readouterr().err
    assert existing.read_text() == "mine\n" and not (tmp_path / "new").exists()


def test_framing_cost_reads_the_split_it_is_asked_for_and_names_its_output_after_it(tmp_path, monkeypatch):
    """A margin is chosen on val (framing_cost --split val), never on test: the val run reads val's faces only."""
    import framing_cost
    from PIL import Image

    from face_detection import Face

    class Box:  # MTCNN stand-in: one face, a 4 x 4 box in the middle of every 8 x 8 image
        def __init__(self, device):
            pass

        def detect(self, images):
            return [[Face(np.array([2.0, 2.0, 6.0, 6.0]), 1.0)] for _ in images]

    monkeypatch.setattr(framing_cost, "FaceDetector", Box)
    root = tmp_path / "data"
    _layout(root, {"fakes_dataset": (2, 3)})
    Image.new("RGB", (8, 8)).save(root / "fakes_dataset" / "test" / "real" / "extra.png")  # test holds one face more
    common = ["-d", "fakes_dataset", "--data-root", str(root), "--out-dir", str(tmp_path / "out")]
    val = framing_cost.main([*common, "--split", "val"])
    test = framing_cost.main(common)
    assert (val["split"], val["images"], test["split"], test["images"]) == ("val", 5, "test", 6)
    assert val["framing_margin_median"] == pytest.approx((8 / 4 - 1) / 2)
    assert json.loads((tmp_path / "out" / "framing_fakes_dataset_val.json").read_text())["images"] == 5
    assert json.loads((tmp_path / "out" / "framing_fakes_dataset.json").read_text())["images"] == 6


@pytest.mark.parametrize("name, text", [("README.md", "# my notes\n"), ("card.json", '{"mine": 1}'), ("card.json", "not json")])
def test_a_card_never_writes_over_a_users_readme_or_json(tmp_path, capsys, name, text):
    import detector_card

    (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as stop:
        detector_card.main([str(tmp_path / "mine.pt"), "--data-root", str(tmp_path)])  # refused before anything is read
    assert stop.value.code == 2 and "never written over" in capsys.readouterr().err
    assert (tmp_path / name).read_text() == text
    (tmp_path / "README.md").write_text(detector_card.CARD_HEADING + "old.fused.json\n")  # a card's own files: rewritten
    (tmp_path / "card.json").write_text(json.dumps({"reference_scores": {}}))
    detector_card.refuse_foreign_files(tmp_path)
