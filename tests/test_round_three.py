"""Issue #29's wrong answers, each as a user met it: framing taken from a dataset's name, one face in two splits, NaN
flags, a NaN in a JSON file, a full disk while saving, fakes self-blended as real faces, mixed-up reports."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli import UserError
from conftest import REPO
from files import atomic_write_json


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


# ---- a full disk -------------------------------------------------------------------------------------------------------
def make_trainer(tmp_path):
    import torch
    from torch import nn

    from conftest import TinyNet, separable_toy_set
    from trainer import Trainer

    torch.manual_seed(0)
    model = TinyNet()
    return Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), nn.CrossEntropyLoss(), 8, separable_toy_set(16),
                   separable_toy_set(8), separable_toy_set(8), num_workers=0, out_dir=tmp_path, checkpoint_dir=tmp_path,
                   progress=False)


def test_a_full_disk_while_saving_a_checkpoint_says_so_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    from checkpoints import read_checkpoint
    from cli import UserError
    from trainer import LoggingParameters

    lp = LoggingParameters("TinyNet", "toy", "Adam")
    trainer = make_trainer(tmp_path)
    trainer.run(1, lp)
    last = tmp_path / "toy_TinyNet_Adam_last.pt"
    before = last.read_bytes()
    real_write = Path.write_bytes

    def full(self, data):  # the disk fills up while the checkpoint's bytes are written
        real_write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(UserError, match=r"^no space left on device while saving .*toy_TinyNet_Adam(_last)?\.pt; the "
                                        r"previous checkpoint is kept$"):
        trainer.run(2, lp, resume=True)
    monkeypatch.undo()
    assert last.read_bytes() == before and read_checkpoint(last)["epoch"] == 1  # whole, and still the epoch before
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written temp file left


def test_an_epoch_does_not_start_when_its_checkpoint_would_not_fit(tmp_path, monkeypatch):
    import shutil

    from trainer import LoggingParameters

    trainer = make_trainer(tmp_path)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=10_000))
    started = []
    monkeypatch.setattr(trainer, "train_one_epoch", lambda: started.append(1) or (0.0, 0.0))
    with pytest.raises(UserError, match=r"not enough free space in .* to save the checkpoint of epoch 1: it needs about "
                                        r"1 MB, 0 MB are free; free space or pass another --checkpoint-dir"):
        trainer.run(1, LoggingParameters("TinyNet", "toy", "Adam"))
    assert started == []


# ---- face_preprocess: its own outputs are never sources; a resume keeps its settings -----------------------------------
@pytest.fixture()
def photos(tmp_path):
    from PIL import Image
    from skimage import data

    folder = tmp_path / "photos"
    (folder / "real").mkdir(parents=True)
    for k in range(3):
        Image.fromarray(np.roll(data.astronaut(), 9 * k, axis=1)).save(folder / "real" / f"p{k}.jpg")
    (folder / "real" / "._p0.jpg").write_bytes(b"\0\5\26\7AppleDouble")  # macOS junk beside a photo
    return folder


def catalog_rows(folder):
    import csv

    with open(folder / "catalog.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_second_run_into_the_source_folder_does_not_crop_its_own_crops(photos, capsys):
    import face_preprocess

    argv = ["--image-dir", str(photos), "--out-dir", str(photos), "--no-progress", "--split", "0.4", "0.3", "0.3"]
    first = face_preprocess.main(argv)
    assert len(first) == 3 and {r["source"] for r in first} == {"real/p0.jpg", "real/p1.jpg", "real/p2.jpg"}
    face_preprocess.main(argv)  # what resuming an interrupted run does
    rows = catalog_rows(photos)
    assert len(rows) == 3 and {r["source"] for r in rows} == {"real/p0.jpg", "real/p1.jpg", "real/p2.jpg"}
    assert "resuming: 3 of 3 sources" in capsys.readouterr().out  # the crops and the ._ file were never sources


def test_resuming_with_other_split_fractions_is_refused(photos, tmp_path, capsys):
    import face_preprocess

    out = tmp_path / "crops"
    face_preprocess.main(["--image-dir", str(photos), "--out-dir", str(out), "--no-progress"])
    with pytest.raises(SystemExit) as exit_info:
        face_preprocess.main(["--image-dir", str(photos), "--out-dir", str(out), "--no-progress", "--split", "0.5", "0.25",
                              "0.25"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--split [0.7, 0.15, 0.15] -> [0.5, 0.25, 0.25]" in err
    assert json.loads((out / "face_preprocess.json").read_text())["margin"] == 0.3


# ---- framing comes from the data the run read, never from a dataset's name ---------------------------------------------
def test_framing_is_the_crops_record_not_the_datasets_name(demo_root, tmp_path):
    """Crops cut by face_preprocess --layout assignment --dataset fakes_dataset at margin +0.30: the checkpoint says
    +0.30 from the crops' record, not fakes_dataset's -0.15 (the DFDC crops that name usually means)."""
    import shutil

    import train_main
    from checkpoints import read_checkpoint

    root = tmp_path / "mine"
    shutil.copytree(demo_root / "fakes_dataset", root / "fakes_dataset")
    (root / "face_preprocess.json").write_text(json.dumps({"margin": 0.3, "dataset": "fakes_dataset", "size": 64}))
    train_main.main(["-d", "fakes_dataset", "-m", "Bonus", "-e", "1", "-b", "8", "--image-size", "64", "--data-root",
                     str(root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path), "--no-progress",
                     "--num-workers", "0"])
    framing = read_checkpoint(tmp_path / "fakes_dataset_Bonus_Adam.pt")["framing"]
    assert framing["margin"] == 0.3 and "face_preprocess.json" in framing["source"]


def test_framing_is_measured_on_the_images_when_no_record_says_it(tmp_path):
    """Crops of a real photo cut at known margins measure as those margins (MTCNN box, median over the images); a crop
    tighter than the face measures tighter than the box (MTCNN then boxes the part of the face it sees)."""
    from PIL import Image
    from skimage import data

    from face_detection import FaceDetector, crop_face, measure_framing

    photo = Image.fromarray(data.astronaut())
    face = FaceDetector("cpu").detect([photo])[0][0]
    for margin in (-0.1, 0.1, 0.3):
        folder = tmp_path / f"m{margin}"
        folder.mkdir()
        paths = []
        for k, size in enumerate((224, 256, 299)):
            paths.append(folder / f"{k}.png")
            crop_face(photo, face, margin, size).save(paths[-1])
        measured = measure_framing(paths, str(folder), "cpu")
        assert measured.source.startswith(f"measured on {folder}")
        assert measured.margin < 0 if margin < 0 else measured.margin == pytest.approx(margin, abs=0.06)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), (120, 90, 60)).save(blank)
    assert measure_framing([blank], "blank", "cpu").margin is None


# ---- --real-faces reads only real faces and says when they hold no face ------------------------------------------------
def test_real_faces_of_a_labelled_folder_are_only_its_real_ones(demo_root, tmp_path):
    import shutil

    from faces_dataset import DatasetError
    from normalization import ASSIGNMENT_NORM
    from splits import DataSettings, build_splits

    labelled = tmp_path / "labelled"
    shutil.copytree(demo_root / "fakes_dataset" / "train", labelled)
    settings = DataSettings("fakes_dataset", demo_root, image_size=64, fakes="self-blend", real_faces=labelled)
    splits = build_splits(settings, ASSIGNMENT_NORM, progress=False)
    assert splits.train.paths and all(p.parent.name == "real" for p in splits.train.paths)
    assert len(splits.train.paths) == len(list((labelled / "real").iterdir()))
    shutil.rmtree(labelled / "real")
    with pytest.raises(DatasetError, match="holds fake/ faces but no real/ folder"):
        build_splits(settings, ASSIGNMENT_NORM, progress=False)


def test_real_faces_without_a_face_are_named_before_training(demo_root, tmp_path):
    from PIL import Image

    from normalization import ASSIGNMENT_NORM
    from splits import DataSettings, build_splits

    squares = tmp_path / "squares"
    squares.mkdir()
    for k, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200), (128, 128, 128)]):
        Image.new("RGB", (64, 64), colour).save(squares / f"{k}.png")
    settings = DataSettings("fakes_dataset", demo_root, image_size=64, fakes="self-blend", real_faces=squares)
    notes = build_splits(settings, ASSIGNMENT_NORM, progress=False).notes
    assert any(note.startswith(f"dlib found no face in 4 of the 4 real faces of {squares}") for note in notes)


# ---- a cut catalog line, a truncated image: said before any epoch, all at once -----------------------------------------
def test_unreadable_files_of_any_split_are_listed_together_before_training(demo_root, tmp_path):
    import shutil

    from faces_dataset import DatasetError
    from normalization import ASSIGNMENT_NORM
    from splits import DataSettings, build_splits

    root = tmp_path / "root"
    shutil.copytree(demo_root / "fakes_dataset", root / "fakes_dataset")
    val_image = sorted((root / "fakes_dataset" / "val" / "fake").iterdir())[0]
    val_image.write_bytes(val_image.read_bytes()[:200])  # a download cut short
    (root / "fakes_dataset" / "test" / "real" / "notes.png").write_text("not an image")
    (root / "fakes_dataset" / "train" / "real" / "._0.png").write_bytes(b"\0\5\26\7 AppleDouble")  # skipped, not listed
    with pytest.raises(DatasetError) as err:
        build_splits(DataSettings("fakes_dataset", root, image_size=64), ASSIGNMENT_NORM, progress=False)
    message = str(err.value)
    assert message.startswith("2 image file(s) cannot be read") and val_image.name in message and "notes.png" in message
    assert "._0.png" not in message


def test_a_catalog_cut_mid_line_is_refused_with_its_line_number(tmp_path):
    from faces_dataset import CatalogDataset, DatasetError

    catalog = tmp_path / "catalog.csv"
    catalog.write_text("path,label,split\na.png,0,train\nb.png,1,tr")
    with pytest.raises(DatasetError, match=r"line 3 is cut short"):
        CatalogDataset(catalog, split="train")


# ---- one run's numbers beside that run only; a second checkpoint's outputs beside the first's ---------------------------
def test_a_second_checkpoint_does_not_replace_the_first_ones_figures_and_names_itself(demo_root, tmp_path):
    import shutil

    from PIL import Image

    import numerical_analysis
    import train_main

    train_main.main(["-d", "fakes_dataset", "-m", "Bonus", "-e", "1", "-b", "8", "--image-size", "64", "--data-root",
                     str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path), "--no-progress",
                     "--num-workers", "0"])
    first = tmp_path / "fakes_dataset_Bonus_Adam.pt"
    second = tmp_path / "experiment.pt"
    shutil.copyfile(first, second)
    figures = tmp_path / "figures"
    common = ["-d", "fakes_dataset", "--data-root", str(demo_root), "--figures-dir", str(figures), "--bootstrap", "10",
              "--no-progress"]
    numerical_analysis.main(["-cpp", str(first), *common])
    mine = json.loads((figures / "fakes_dataset_Bonus_metrics.json").read_text())
    numerical_analysis.main(["-cpp", str(second), *common])
    assert json.loads((figures / "fakes_dataset_Bonus_metrics.json").read_text()) == mine  # untouched
    theirs = json.loads((figures / "fakes_dataset_Bonus__experiment_metrics.json").read_text())
    assert theirs["checkpoint"] == str(second) and mine["checkpoint"] == str(first)
    assert mine["run_id"] == json.loads((tmp_path / "fakes_dataset_Bonus_Adam.json").read_text())[-1]["run_id"]
    roc = Image.open(figures / "fakes_dataset_Bonus__experiment_roc_curve.png")
    assert roc.text["Checkpoint"] == str(second) and len(roc.text["Checkpoint SHA-256"]) == 64


def test_the_report_shows_a_metrics_file_only_beside_the_run_it_belongs_to(tmp_path):
    from make_report import build_report

    out, figures = tmp_path / "out", tmp_path / "figures"
    out.mkdir()
    figures.mkdir()
    record = {"model": "SimpleNet", "dataset": "fakes_dataset", "val_acc": [60.0], "best_epoch": 1, "best_val_acc": 60.0,
              "test_acc_at_best_val": 61.0, "run_id": "run-A", "config": {"n_params": 1}}
    (out / "fakes_dataset_SimpleNet_Adam.json").write_text(json.dumps([record]))
    metrics = {"auc": 0.91234, "eer": 0.1, "average_precision": 0.9, "auc_group_a_real_score": 0.08766, "accuracy": 0.9,
               "accuracy_at_val_threshold": 0.9, "val_threshold": 0.5, "ece": 0.01, "run_id": "run-B",
               "checkpoint": "checkpoints/other.pt"}
    (figures / "fakes_dataset_SimpleNet_metrics.json").write_text(json.dumps(metrics))
    page, _ = build_report(out, figures, out)
    assert "0.9123" not in page and "Not this run" in page and "checkpoints/other.pt (run id run-B)" in page
    (figures / "fakes_dataset_SimpleNet_metrics.json").write_text(json.dumps({**metrics, "run_id": "run-A"}))
    page, _ = build_report(out, figures, out)
    assert "0.9123" in page and "Not this run" not in page


# ---- the confusing cases: one sentence and the right exit code ---------------------------------------------------------
def test_a_plain_pickle_is_named_as_such_and_never_loaded(tmp_path):
    import pickle

    from checkpoints import read_checkpoint

    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"model": {"w": [1.0]}}))
    with pytest.raises(UserError) as err:
        read_checkpoint(path)
    assert str(err.value) == (f"{path} is not a checkpoint written by this suite (a plain pickle); it is never loaded, "
                              "since loading a pickle can run code")


def test_detect_names_a_dashed_file_a_disguised_jpeg_and_the_kinds_it_skips(tmp_path, capsys, monkeypatch):
    from PIL import Image

    import detect

    Image.new("RGB", (32, 32)).save(tmp_path / "-me.png")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        detect.parse_args(["-me.png"])
    assert exit_info.value.code == 2 and "put the files after --, e.g. detect.py [options] -- -me.png" in capsys.readouterr().err
    folder = tmp_path / "media"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "clip.mp4", format="JPEG")  # a JPEG named like a video
    Image.new("RGB", (32, 32)).save(folder / "anim.gif")
    found, problems = detect.expand_inputs([str(folder)])
    assert found == [folder / "clip.mp4"] and any("1 file(s) of kinds the suite does not read (.gif)" in p for p in problems)
    from face_detection import sample_frames

    with pytest.raises(OSError, match=r"it is a JPEG image named like a video; rename it to its own extension \(\.jpeg\)"):
        next(sample_frames(folder / "clip.mp4", 4))


def test_the_report_calls_a_corrupt_file_corrupt_and_a_read_only_folder_one_sentence(tmp_path, capsys, monkeypatch):
    import cli
    import make_report

    out, figures = tmp_path / "out", tmp_path / "figures"
    out.mkdir()
    figures.mkdir()
    (out / "fakes_dataset_SimpleNet_Adam.json").write_text('[{"model": "SimpleNet", "val_acc": [')
    (figures / "fakes_dataset_SimpleNet_metrics.json").write_text("{not json")
    page, _ = make_report.build_report(out, figures, out)
    assert "<b>Corrupt:</b> fakes_dataset_SimpleNet_Adam.json exists" in page
    assert "<b>Corrupt:</b> ../figures/fakes_dataset_SimpleNet_metrics.json exists" in page
    def read_only(*_args, **_kwargs):  # what a read-only folder answers (root writes anywhere, so it is simulated)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli.tempfile, "NamedTemporaryFile", read_only)
    with pytest.raises(SystemExit) as exit_info:
        make_report.main(["--out-dir", str(out), "--figures-dir", str(figures)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "is not writable (Permission denied)" in err and "Traceback" not in err


def test_a_missing_browser_says_nothing_was_written(tmp_path, monkeypatch, capsys):
    import make_report

    (tmp_path / "out").mkdir()
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-browser"))
    monkeypatch.setattr(make_report.shutil, "which", lambda _: None)
    with pytest.raises(SystemExit):
        make_report.main(["--out-dir", str(tmp_path / "out"), "--figures-dir", str(tmp_path), "--pdf"])
    err = capsys.readouterr().err
    assert "nothing was written" in err and "written already" not in err and not (tmp_path / "out" / "report.html").exists()


def test_an_overlay_without_a_drawable_curve_adds_no_legend_entry(tmp_path, monkeypatch, capsys):
    import robustness_analysis

    figures = []
    monkeypatch.setattr(robustness_analysis, "save_figure", lambda fig, path, provenance=None: figures.append(fig))
    result = {"tag": "", "attacks": {"pgd": [{"eps_255": 0, "accuracy": 90.0, "auc": 0.9},
                                             {"eps_255": 8, "accuracy": 10.0, "auc": 0.2}]}}
    blank = {"tag": "advpgd", "checkpoint": "adv.pt", "attacks": {"pgd": [{"eps_255": 0, "accuracy": None, "auc": None}]}}
    robustness_analysis.plot_curves(result, [blank], "t", tmp_path / "x.png")
    labels = [t.get_text() for ax in figures[0].axes for t in (ax.get_legend().get_texts() if ax.get_legend() else [])]
    assert labels == ["PGD (plain)", "PGD (plain)"] and "the overlay adv.pt holds no attack curve" in capsys.readouterr().out


def test_output_names_keep_a_variants_tag_and_set_other_checkpoints_apart(tmp_path):
    from analysis import output_prefix
    from detector import Detector
    from face_detection import Framing
    from metrics import Threshold
    from normalization import ASSIGNMENT_NORM

    def made(path, record):
        return Detector(None, "SimpleNet", 64, ASSIGNMENT_NORM, Framing(None, ""), Threshold(0.5, ""), Path(path), None, record)

    assert output_prefix("fakes_dataset", made("c/fakes_dataset_SimpleNet_Adam.pt", {"tag": ""})) == "fakes_dataset_SimpleNet"
    assert output_prefix("fakes_dataset", made("c/fakes_dataset_SimpleNet_SGD_advpgd.pt", {"tag": "advpgd"})) == \
        "fakes_dataset_SimpleNet_advpgd"
    assert output_prefix("synthetic_dataset", made("c/fakes_dataset_SimpleNet_Adam.pt", {"tag": ""})) == \
        "synthetic_dataset_SimpleNet__fakes_dataset_SimpleNet_Adam"  # another dataset's run
    assert output_prefix("fakes_dataset", made("c/copy.pt", None)) == "fakes_dataset_SimpleNet__copy"
