"""Never a silent wrong answer: phone photos, lying video headers, resumed runs with other settings, one-class splits,
catalog rows that leave their folder, 16-bit portraits, flags out of range."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from test_face_preprocess import FACE, overlap

import detect
import face_detection
import face_preprocess
import numerical_analysis
import train_main
from faces_dataset import CatalogDataset, DatasetError, load_image, load_rgb
from test_detect import checkpoint, media, monkeypatch_module  # noqa: F401  (fixtures)

ORIENTATION = 0x0112


def sideways_phone_photo(path, upright: Image.Image) -> None:
    """A JPEG stored as a phone stores a portrait: pixels turned 90 degrees, EXIF Orientation 6 to show it upright."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    upright.transpose(Image.ROTATE_90).save(path, quality=95, exif=exif)


def test_photos_are_read_upright_as_viewers_show_them(tmp_path):
    upright = Image.fromarray(data.astronaut()).crop((0, 0, 512, 400))
    sideways_phone_photo(tmp_path / "phone.jpg", upright)
    assert Image.open(tmp_path / "phone.jpg").size == (400, 512)  # as stored
    shown = load_rgb(tmp_path / "phone.jpg")
    assert shown.size == (512, 400)
    assert np.abs(np.asarray(shown, dtype=int) - np.asarray(upright, dtype=int)).mean() < 4
    decoded = load_image(tmp_path / "phone.jpg", "torchvision")  # the other decoder turns it the same way
    assert tuple(decoded.shape) == (3, 400, 512)
    assert np.abs(decoded.permute(1, 2, 0).numpy().astype(int) - np.asarray(shown, dtype=int)).mean() < 2


def test_an_exif_rotated_photo_finds_the_face_in_detect_and_face_preprocess(checkpoint, tmp_path):  # noqa: F811
    (tmp_path / "real").mkdir()
    sideways_phone_photo(tmp_path / "real" / "phone.jpg", Image.fromarray(data.astronaut()))
    (result,) = detect.main([str(tmp_path / "real" / "phone.jpg"), "-cpp", str(checkpoint), "--no-progress"])
    assert len(result.faces) == 1 and overlap(result.faces[0].box, FACE) > 0.8
    rows = face_preprocess.main(["--image-dir", str(tmp_path), "--out-dir", str(tmp_path / "crops"), "--no-progress"])
    assert len(rows) == 1 and overlap([int(rows[0][k]) for k in ("x1", "y1", "x2", "y2")], FACE) > 0.8


@pytest.mark.parametrize("header", [0, 10, 400])
def test_a_video_whose_header_lies_is_sampled_over_the_frames_it_holds(media, monkeypatch, capsys, header):  # noqa: F811
    monkeypatch.setattr(face_detection, "video_info", lambda path: (header, 10.0))
    frames = list(face_detection.sample_frames(media / "clip.mp4", 5, "opencv"))  # 20 frames really
    assert [f[0] for f in frames] == [2, 6, 10, 14, 18]
    assert [f[1] for f in frames] == pytest.approx([0.2, 0.6, 1.0, 1.4, 1.8])
    assert f"header says {header} frames, it holds 20" in capsys.readouterr().out


def test_the_16_bit_portrait_is_cropped_in_its_tones_not_white(tmp_path):
    grey = np.asarray(Image.fromarray(data.astronaut()).convert("L"), dtype=np.uint16) * 257
    (tmp_path / "real").mkdir()
    Image.fromarray(grey).save(tmp_path / "real" / "deep.png")
    assert Image.open(tmp_path / "real" / "deep.png").mode.startswith("I")
    face_preprocess.main(["--image-dir", str(tmp_path), "--out-dir", str(tmp_path / "crops"), "--no-progress",
                          "--margin", "0"])
    (crop,) = (tmp_path / "crops" / "real").iterdir()
    pixels = np.asarray(Image.open(crop).convert("L"), dtype=float)
    assert 60 < pixels.mean() < 200 and pixels.std() > 20  # a face, not a white square


TRAIN = ["-d", "fakes_dataset", "-m", "Bonus", "-b", "8", "--image-size", "64", "--no-progress", "--num-workers", "0"]


def test_resume_with_other_settings_refuses_and_says_what_differs(demo_root, tmp_path, capsys):
    argv = TRAIN + ["--data-root", str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path)]
    train_main.main(argv + ["-e", "1"])
    for extra, said in ((["-b", "4"], "batch_size: 8 -> 4"), (["--limit", "12"], "limit: None -> 12"),
                        (["--augment"], "augment: False -> True"), (["--seed", "3"], "seed: 42 -> 3")):
        with pytest.raises(SystemExit) as err:
            train_main.main([a for a in argv if a not in ("-b", "8")] + (["-b", "8"] if "-b" not in extra else [])
                            + extra + ["-e", "2", "--resume"])
        assert err.value.code == 2 and said in capsys.readouterr().err
    record = train_main.main(argv + ["-e", "2", "--resume"])  # the same settings go on
    assert len(record["train_loss"]) == 2


def one_class_copy(demo_root, tmp_path, split: str):
    root = tmp_path / "oneclass"
    shutil.copytree(demo_root / "fakes_dataset", root / "fakes_dataset")
    for f in (root / "fakes_dataset" / split / "fake").iterdir():
        f.unlink()
    return root


def test_select_by_auc_on_a_one_class_val_split_stops_before_training(demo_root, tmp_path, capsys):
    root = one_class_copy(demo_root, tmp_path, "val")
    with pytest.raises(SystemExit) as err:
        train_main.main(TRAIN + ["-e", "1", "--data-root", str(root), "--out-dir", str(tmp_path), "--checkpoint-dir",
                                 str(tmp_path), "--select-by", "auc"])
    assert err.value.code == 2 and "val split holds one class only" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.pt"))


def test_calibrating_on_a_one_class_val_split_refuses(demo_root, tmp_path, capsys):
    argv = TRAIN + ["-e", "1", "--data-root", str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path)]
    train_main.main(argv)
    root = one_class_copy(demo_root, tmp_path, "val")
    for flag in (["--calibrate"], ["--threshold", "val-youden"]):
        with pytest.raises(SystemExit) as err:
            numerical_analysis.main(["-m", "Bonus", "-cpp", str(tmp_path / "fakes_dataset_Bonus_Adam.pt"), "-d",
                                     "fakes_dataset", "--data-root", str(root), "--figures-dir", str(tmp_path / "f"),
                                     "--no-progress", "--bootstrap", "10", *flag])
        assert err.value.code == 2 and "holds only real images; it needs both classes" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--margin", "-0.6"], ["--margin", "nan"], ["--min-prob", "1.5"], ["--min-prob", "nan"]])
def test_detect_checks_its_flags_before_reading_anything(flag, capsys):
    with pytest.raises(SystemExit) as err:
        detect.parse_args(["x.jpg", "-cpp", "c.pt", *flag])
    assert err.value.code == 2 and flag[0] in capsys.readouterr().err


def test_train_interrupted_by_ctrl_c_says_where_it_stopped_and_how_to_resume(demo_root, tmp_path, monkeypatch, capsys):
    from trainer import Trainer

    argv = TRAIN + ["-e", "3", "--data-root", str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path)]
    real = Trainer.train_one_epoch

    def stop_in_the_second_epoch(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "train_one_epoch", stop_in_the_second_epoch)
    with pytest.raises(SystemExit) as err:
        train_main.main(argv)
    message = capsys.readouterr().err
    assert err.value.code == 2 and "Traceback" not in message
    assert "stopped by Ctrl-C during epoch 2; epochs 1-1 are saved in" in message and "--resume" in message
    assert torch.load(tmp_path / "fakes_dataset_Bonus_Adam_last.pt", weights_only=True)["epoch"] == 1


def test_advice_points_the_right_way(tmp_path):
    from checkpoints import load_weights
    from cli import UserError
    from faces_dataset import dataset_dir
    from models import build_model

    (tmp_path / "root.txt").write_text("not a folder")
    with pytest.raises(UserError, match="is a file, not a folder"):
        dataset_dir("fakes_dataset", "train", tmp_path / "root.txt")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with open(tmp_path / "catalog.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "split"], ["a.png", "0", "train"], ["a.png", "1", "train"]])
    with pytest.raises(DatasetError) as err:
        CatalogDataset(tmp_path / "catalog.csv", split="val")
    assert "no source fell into this split" in str(err.value) and "--label-from" not in str(err.value)
    small = build_model("SimpleNet", image_size=64).state_dict()  # fc1 depends on the input size
    with pytest.raises(UserError) as err:
        load_weights(build_model("SimpleNet"), {"model": small}, "bare.pt", "SimpleNet")
    assert "another input size" in str(err.value)
