"""Bad input and faults: one sentence and exit 2, never a traceback, never silent wrong data, never code from a file."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from checkpoints import read_checkpoint, save_checkpoint
from cli import UserError, one_line
from conftest import REPO
from faces_dataset import DatasetError, FacesDataset, load_rgb
from files import atomic_write_json
from models import build_model


def run(script: str, *argv: str, timeout: int = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "FMD_OFFLINE": "1", **(env or {})})


def assert_one_line_error(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


class Payload:
    """Unpickling this runs os.system: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def crafted(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "model_name": "SimpleNet", "payload": Payload(marker)}, path)
    return path, marker


def test_crafted_checkpoint_runs_no_code_anywhere(crafted, demo_root, tmp_path):
    path, marker = crafted
    proc = run("numerical_analysis.py", "-cpp", str(path), "-d", "fakes_dataset", "--data-root", str(demo_root),
               "--figures-dir", str(tmp_path / "f"))
    assert_one_line_error(proc, "holds Python objects besides tensors and plain values, so it is not loaded")
    argv = ["-d", "fakes_dataset", "--data-root", str(demo_root), "--image-size", "64", "-e", "1", "--limit", "4",
            "--out-dir", str(tmp_path / "o"), "--checkpoint-dir", str(tmp_path / "c"), "--num-workers", "0"]
    assert_one_line_error(run("train_main.py", *argv, "--init-from", str(path)), "so it is not loaded")
    (tmp_path / "c").mkdir(exist_ok=True)
    (tmp_path / "c" / "fakes_dataset_SimpleNet_Adam_last.pt").write_bytes(path.read_bytes())
    assert_one_line_error(run("train_main.py", *argv, "-e", "2", "--resume"), "so it is not loaded")
    assert_one_line_error(run("bonus_main.py", "--checkpoint", str(path), "--data-root", str(demo_root)), "not loaded")
    assert not marker.exists()


def test_our_checkpoints_load_safely_and_truncated_ones_are_one_sentence(tmp_path):
    model = build_model("SimpleNet", image_size=64)
    path = tmp_path / "c.pt"
    save_checkpoint({"model": model.state_dict(), "meta": {"v": np.float64(0.5), "t": torch.__version__}}, path)
    ckpt = torch.load(path, weights_only=True)  # the contract: plain values only
    assert type(ckpt["meta"]["v"]) is float and type(ckpt["meta"]["t"]) is str
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="truncated or not a torch checkpoint"):
        read_checkpoint(path)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "text.pt")


def test_sixteen_bit_greyscale_png_keeps_its_values(tmp_path):
    gradient = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16).reshape(16, 16)  # 0 .. 65535
    Image.fromarray(gradient).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "I;16"
    rgb = np.asarray(load_rgb(tmp_path / "g.png"))
    assert rgb.shape == (16, 16, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])
    assert np.array_equal(rgb[..., 0].ravel(), np.arange(256))  # 257 * k / 65535 * 255 = k: every grey level kept


def test_decompression_bomb_is_one_sentence(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64x64 > 2 * 100: Pillow refuses, as for 189 megapixels
    with pytest.raises(DatasetError, match="too large to decode safely"):
        load_rgb(tmp_path / "big.png")


def test_a_corrupt_image_in_a_worker_is_the_same_one_line(tmp_path, demo_root):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(demo_root, data)
    victim = sorted((data / "fakes_dataset" / "train" / "fake").iterdir())[0]
    victim.write_bytes(b"garbage")
    argv = ["-d", "fakes_dataset", "--data-root", str(data), "--image-size", "64", "-e", "1", "--out-dir",
            str(tmp_path / "o"), "--checkpoint-dir", str(tmp_path / "c"), "--no-progress"]
    with_workers = run("train_main.py", *argv, "--num-workers", "1")
    without = run("train_main.py", *argv, "--num-workers", "0")
    assert_one_line_error(with_workers, f"1 image file(s) cannot be read: {victim} (not a readable image")  # before training
    assert with_workers.stderr.strip().splitlines()[-1] == without.stderr.strip().splitlines()[-1]
    assert len(with_workers.stderr.strip().splitlines()) == 1


def test_one_line_of_a_worker_reraise():
    text = "Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n  File x\n" \
           "faces_dataset.DatasetError: cannot read image a.png (broken); the file is corrupt"
    assert one_line(UserError(text)) == "cannot read image a.png (broken); the file is corrupt"


def test_bad_flags_of_the_analysis_scripts(demo_root, tmp_path):
    ckpt = tmp_path / "c.pt"
    save_checkpoint({"model": build_model("SimpleNet", image_size=64).state_dict(), "model_name": "SimpleNet",
                     "model_kwargs": {"image_size": 64}}, ckpt)
    common = ["-cpp", str(ckpt), "-d", "fakes_dataset", "--data-root", str(demo_root)]
    assert_one_line_error(run("numerical_analysis.py", *common, "--batch-size", "0"), "must be a positive integer, got 0")
    assert_one_line_error(run("grad_cam_analysis.py", *common, "--n", "0"), "argument --n: must be a positive integer")
    assert_one_line_error(run("saliency_map.py", *common, "--n-pairs", "0"), "argument --n-pairs: must be a positive")
    assert_one_line_error(run("robustness_analysis.py", *common, "--steps", "0"), "argument --steps: must be a positive")
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_one_line_error(run("numerical_analysis.py", *common, "--figures-dir", str(afile)), "is a file, not a folder")
    assert_one_line_error(run("numerical_analysis.py", *common, "--figures-dir", "/proc/fmd/figures"), "is not writable")
    assert_one_line_error(run("numerical_analysis.py", *common, "-m", "Bonus"), "holds a SimpleNet model, not Bonus")
    assert_one_line_error(run("robustness_analysis.py", *common, "--overlay", str(tmp_path / "none.json")),
                          "run robustness_analysis.py on that checkpoint first")
    assert_one_line_error(run("bonus_main.py", "--checkpoint", str(ckpt), "--data-root", str(demo_root)),
                          "holds a SimpleNet model, not Bonus; pass the checkpoint of a Bonus run")


def test_bad_files_for_train_main_and_the_plots(demo_root, tmp_path):
    base = ["-d", "fakes_dataset", "--data-root", str(demo_root), "--image-size", "64", "-e", "1", "--limit", "4",
            "--num-workers", "0"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_one_line_error(run("train_main.py", *base, "--out-dir", str(afile), "--checkpoint-dir", str(tmp_path)),
                          "--out-dir " + str(afile) + " is a file, not a folder")
    assert_one_line_error(run("train_main.py", *base, "--out-dir", str(tmp_path), "--checkpoint-dir", "/proc/fmd/c"),
                          "--checkpoint-dir /proc/fmd/c is not writable")
    for content, message in ((b"just text", "cannot read Xception weights"),
                             (None, "is not an ImageNet Xception state dict")):
        weights = tmp_path / "w.pth"
        if content is None:
            torch.save({"conv1.weight": torch.zeros(1)}, weights)
        else:
            weights.write_bytes(content)
        proc = run("train_main.py", *base, "-m", "XceptionBased", "--weights", str(weights), "--out-dir", str(tmp_path),
                   "--checkpoint-dir", str(tmp_path))
        assert_one_line_error(proc, message)
    log = tmp_path / "out.json"
    log.write_text("[1, 2, 3]")
    assert_one_line_error(run("plot_accuracy_and_loss.py", "-j", str(log)), "is not a list of run records")
    torch.save({"a": torch.zeros(3)}, tmp_path / "x.pt")
    assert_one_line_error(run("plot_accuracy_and_loss.py", "-j", str(tmp_path / "x.pt")), "is not a JSON file")


def test_plot_takes_names_from_the_log_and_refuses_a_contradiction(tmp_path, capsys):
    import plot_accuracy_and_loss

    record = {"model": "Bonus", "dataset": "synthetic_dataset", "tag": "",
              **{f"{s}_{m}": [1.0, 2.0] for s in ("train", "val", "test") for m in ("loss", "acc")}}
    (tmp_path / "log.json").write_text(json.dumps([record]))
    figs = plot_accuracy_and_loss.main(["-j", str(tmp_path / "log.json"), "--figures-dir", str(tmp_path)])
    assert [f.name for f in figs] == ["synthetic_dataset_Bonus_losses_plot.png", "synthetic_dataset_Bonus_accuracies_plot.png"]
    with pytest.raises(SystemExit):
        plot_accuracy_and_loss.main(["-j", str(tmp_path / "log.json"), "-m", "SimpleNet", "--figures-dir", str(tmp_path)])
    assert "is a log of model Bonus, not SimpleNet" in capsys.readouterr().err


def test_a_full_disk_keeps_the_old_file_and_says_so(tmp_path, monkeypatch):
    path = tmp_path / "log.json"
    atomic_write_json(path, [{"a": 1}])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", full)
    with pytest.raises(UserError, match="no space left on device while saving .*log.json; the previous file is kept"):
        atomic_write_json(path, [{"a": 2}])
    monkeypatch.undo()
    assert json.loads(path.read_text()) == [{"a": 1}] and [p.name for p in tmp_path.iterdir()] == ["log.json"]


def test_stale_temp_files_of_a_killed_save_are_cleaned(tmp_path):
    from conftest import TinyNet, separable_toy_set
    from trainer import LoggingParameters, Trainer

    ckpt = tmp_path / "c"
    ckpt.mkdir()
    stale = ckpt / ".toy_TinyNet_Adam_last.pt.abc123.tmp"
    stale.write_bytes(b"\0" * 1000)
    model = TinyNet()
    Trainer(model, torch.optim.Adam(model.parameters()), torch.nn.CrossEntropyLoss(), 8, separable_toy_set(16),
            separable_toy_set(8), separable_toy_set(8), num_workers=0, out_dir=tmp_path, checkpoint_dir=ckpt,
            progress=False).run(1, LoggingParameters("TinyNet", "toy", "Adam"))
    assert not stale.exists() and not list(ckpt.glob("*.tmp"))


def test_a_train_split_without_a_class_is_refused(tmp_path):
    for split in ("train", "val", "test"):
        for cls in ("real", "fake"):
            folder = tmp_path / "fakes_dataset" / split / cls
            folder.mkdir(parents=True)
            if not (split == "train" and cls == "real"):
                for i in range(2):
                    Image.new("RGB", (64, 64), (i * 50, 0, 0)).save(folder / f"{i}.png")
    proc = run("train_main.py", "--data-root", str(tmp_path), "--image-size", "64", "-e", "1", "--out-dir", str(tmp_path),
               "--checkpoint-dir", str(tmp_path))
    assert_one_line_error(proc, "the fakes_dataset train split holds no real images")


def test_face_preprocess_stops_when_it_cannot_write(tmp_path, monkeypatch, capsys):
    from skimage import data

    import face_preprocess

    photos = tmp_path / "photos" / "real"
    photos.mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(photos / "a.png")
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, message in ((afile, "is a file, not a folder"), (Path("/proc/fmd"), "is not writable")):
        with pytest.raises(SystemExit) as err:
            face_preprocess.main(["--image-dir", str(tmp_path / "photos"), "--out-dir", str(out), "--no-progress"])
        assert err.value.code == 2 and message in capsys.readouterr().err
    monkeypatch.undo()

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    with pytest.raises(SystemExit) as err:  # every source would be "skipped" before: now the run stops
        face_preprocess.main(["--image-dir", str(tmp_path / "photos"), "--out-dir", str(tmp_path / "o"), "--no-progress"])
    assert err.value.code == 2 and "No space left on device); free space or pick another --out-dir" in capsys.readouterr().err
    proc = run("tools/face_preprocess.py", "--image-dir", str(tmp_path / "photos"), "--out-dir", str(tmp_path / "o2"),
               "--fps", "0")
    assert_one_line_error(proc, "argument --fps: must be a finite number above 0, got 0")


def test_relative_paths_resolve_under_the_work_dir(tmp_path):
    (tmp_path / "out").mkdir()
    record = {"model": "SimpleNet", "dataset": "fakes_dataset",
              **{f"{s}_{m}": [1.0] for s in ("train", "val", "test") for m in ("loss", "acc")}}
    (tmp_path / "out" / "fakes_dataset_SimpleNet_Adam.json").write_text(json.dumps([record]))
    proc = run("plot_accuracy_and_loss.py", "-m", "SimpleNet", "-j", "out/fakes_dataset_SimpleNet_Adam.json", "-d",
               "fakes_dataset", env={"FMD_WORK_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "figures" / "fakes_dataset_SimpleNet_losses_plot.png").is_file()


def test_dataset_listing_is_unchanged_by_the_move(demo_root):
    ds = FacesDataset(demo_root / "fakes_dataset" / "train")
    assert ds.labels == sorted(ds.labels)  # reals first, then fakes
