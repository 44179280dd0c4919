"""Scheduler, checkpoint selection, augmentation, class balance, and the Trainer's guarantees (eval mode, no_grad,
exact resume, a last batch of one, divergence, concurrent logs)."""
from __future__ import annotations

import json
import math
import multiprocessing
import subprocess
import sys

import pytest
import torch
from torch import nn

from bonus_model import BonusNet
from checkpoints import read_checkpoint
from cli import UserError
from conftest import REPO, TinyNet, separable_toy_set
from faces_dataset import dataset_labels, load_dataset
from loaders import class_balance_weights
from trainer import LoggingParameters, Schedule, Trainer, is_better, lr_factor

LP = LoggingParameters("TinyNet", "toy", "Adam", {"lr": 0.05})


def make(tmp_path, model=None, train=None, batch_size=10, **kwargs):
    """A Trainer on the separable toy set; `model` is a module or a class (built after seeding, for equal weights)."""
    torch.manual_seed(0)
    model = (model or TinyNet)() if model is None or isinstance(model, type) else model
    return Trainer(model, torch.optim.Adam(model.parameters(), lr=0.05), nn.CrossEntropyLoss(), batch_size,
                   train or separable_toy_set(64), separable_toy_set(20, seed=1), separable_toy_set(20, seed=2),
                   num_workers=0, out_dir=tmp_path / "out", checkpoint_dir=tmp_path / "ckpt", progress=False, **kwargs)


def test_lr_factor_warmup_cosine_and_step():
    cosine = Schedule("cosine", warmup_epochs=1)
    factors = [lr_factor(e, 5, cosine) for e in range(5)]
    assert factors[0] == pytest.approx(0.5)  # warm-up: (0 + 1) / (1 + 1)
    assert factors[1] == pytest.approx(1.0)  # cosine starts at the top ...
    assert factors[2] == pytest.approx(0.5 * (1 + math.cos(math.pi * 1 / 4)))
    assert factors[1] > factors[2] > factors[3] > factors[4] > 0  # ... and decays
    step = Schedule("step", step_size=2, gamma=0.1)
    assert [lr_factor(e, 6, step) for e in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert [lr_factor(e, 3, Schedule()) for e in range(3)] == [1.0, 1.0, 1.0]


def test_trainer_applies_the_schedule_and_logs_it(tmp_path):
    record = make(tmp_path, schedule=Schedule("step", step_size=1, gamma=0.5)).run(3, LP)
    assert record["lr"] == pytest.approx([0.05, 0.025, 0.0125])


def test_is_better_by_metric():
    assert is_better("acc", 80.0, 70.0) and not is_better("acc", 70.0, 80.0)
    assert is_better("loss", 0.2, 0.3) and not is_better("loss", 0.3, 0.2)
    assert is_better("auc", 0.9, None) and not is_better("auc", None, 0.5)


@pytest.mark.parametrize("select_by", ["acc", "auc", "loss"])
def test_best_checkpoint_is_the_selected_epoch_not_the_last(tmp_path, select_by):
    trainer = make(tmp_path, select_by=select_by)
    record = trainer.run(5, LP)
    values = record[{"acc": "val_acc", "auc": "val_auc", "loss": "val_loss"}[select_by]]
    pick = min if select_by == "loss" else max
    best_epoch = values.index(pick(values)) + 1  # the first epoch that reached the best value
    assert record["best_epoch"] == best_epoch
    ckpt = read_checkpoint(tmp_path / "ckpt" / "toy_TinyNet_Adam.pt")
    assert ckpt["epoch"] == best_epoch and ckpt["record"]["best_epoch"] == best_epoch
    assert read_checkpoint(tmp_path / "ckpt" / "toy_TinyNet_Adam_last.pt")["epoch"] == 5
    assert record["test_acc_at_best_val"] == record["test_acc"][best_epoch - 1]
    assert 0 <= ckpt["threshold"]["value"] <= 1 and ckpt["threshold"]["rule"] == "real-far:0.05"


def test_auc_selection_differs_from_accuracy_when_they_disagree(tmp_path):
    """Epoch 2 ranks perfectly (AUC 1) but thresholds badly (acc 50 %); epoch 1 has the better accuracy."""

    class Scripted(nn.Module):  # outputs depend on the epoch through a buffer the test sets
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))
            self.register_buffer("epoch", torch.zeros(()))

        def forward(self, x):
            y = (x[:, 0, 4:12, 4:12].mean(dim=(1, 2)) > 0).float()  # the true label of separable_toy_set
            if self.epoch == 0:  # right on 3 of 4 samples, poor ranking
                score = torch.where(torch.arange(len(y)) % 4 == 0, 1 - y, y)
            else:  # perfect ranking, everything called fake
                score = 0.6 + 0.3 * y
            score = score.clamp(0.05, 0.95) + 0 * self.w
            return torch.stack([1 - score, score], 1).log()

    for select_by, expected in (("acc", 1), ("auc", 2)):
        model = Scripted()
        trainer = make(tmp_path / select_by, model=model, select_by=select_by)
        original = trainer.train_one_epoch

        def train_one_epoch(model=model, original=original, trainer=trainer):
            result = original()
            model.epoch.fill_(trainer.epoch)
            return result

        trainer.train_one_epoch = train_one_epoch
        assert trainer.run(2, LP)["best_epoch"] == expected


def test_validation_leaves_batchnorm_statistics_alone_and_needs_no_grad(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    trainer = make(tmp_path, model=model)
    before = model[1].running_mean.clone()
    grad_enabled = []
    model.register_forward_hook(lambda m, i, o: grad_enabled.append(o.requires_grad))
    trainer.validate()
    assert torch.equal(model[1].running_mean, before)  # eval mode: no statistics update
    assert grad_enabled and not any(grad_enabled)  # under no_grad: outputs do not require grad


def test_a_last_batch_of_one_is_dropped_and_batchnorm_trains(tmp_path):
    """13 images with -b 12 leave a last batch of one, which BatchNorm cannot train on (the bonus model at 64 px)."""
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(13, 3, 64, 64, generator=g), torch.arange(13) % 2)
    trainer = make(tmp_path, model=BonusNet(), train=data, batch_size=12)
    trainer.validation_dataset = trainer.test_dataset = data
    record = trainer.run(1, LoggingParameters("Bonus", "toy", "Adam"))
    assert math.isfinite(record["train_loss"][0])


def test_a_diverging_run_stops_with_the_epoch_and_batch(tmp_path):
    model = TinyNet()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=float("inf")), nn.CrossEntropyLoss(), 10,
                      separable_toy_set(64), separable_toy_set(20), separable_toy_set(20), num_workers=0,
                      out_dir=tmp_path / "out", checkpoint_dir=tmp_path / "ckpt", progress=False)
    with pytest.raises(UserError, match=r"the loss is nan at epoch 1, batch 2; lower --lr"):
        trainer.run(2, LP)
    assert not (tmp_path / "ckpt" / "toy_TinyNet_Adam.pt").exists()  # no "best" checkpoint of a diverged model


class DropoutNet(TinyNet):
    def forward(self, x):
        return self.fc(nn.functional.dropout(torch.relu(self.conv(x)).mean(dim=(2, 3)), 0.5, self.training))


def test_resumed_run_equals_the_uninterrupted_one_to_the_bit(tmp_path):
    straight = make(tmp_path / "a", model=DropoutNet).run(4, LP)
    make(tmp_path / "b", model=DropoutNet).run(2, LP)
    torch.manual_seed(123)  # whatever the process did in between
    resumed = make(tmp_path / "b", model=DropoutNet).run(4, LP, resume=True)
    assert resumed["train_loss"] == straight["train_loss"] and resumed["val_loss"] == straight["val_loss"]


def test_class_balance():
    assert class_balance_weights([0, 1, 1, 1]) == [1.0, 1 / 3, 1 / 3, 1 / 3]
    data = torch.utils.data.TensorDataset(torch.zeros(40, 1), torch.tensor([0] * 8 + [1] * 32))
    data.labels = [0] * 8 + [1] * 32
    trainer = make(__import__("pathlib").Path("/tmp"), balanced_sampler=True)
    trainer._shuffle.manual_seed(0)
    drawn = torch.cat([y for _, y in trainer._loader(data, shuffle=True)] * 1)
    assert len(drawn) == 40 and 0.3 < (drawn == 0).float().mean() < 0.7  # about half reals, from 20 % in the data


def test_augmentation_keeps_labels_and_shapes_and_changes_pixels(demo_root):
    plain = load_dataset("fakes_dataset", "train", demo_root, 48, augment=False)
    augmented = load_dataset("fakes_dataset", "train", demo_root, 48, augment=True)
    assert dataset_labels(plain) == dataset_labels(augmented)
    torch.manual_seed(0)
    changed = 0
    for i in range(len(plain)):
        a, ya = augmented[i]
        p, yp = plain[i]
        assert a.shape == p.shape == (3, 48, 48) and a.dtype == torch.float32 and ya == yp
        changed += not torch.allclose(a, p, atol=1e-3) and not torch.allclose(a, p.flip(-1), atol=1e-3)
    assert changed >= len(plain) // 3  # JPEG / blur / jitter touched many samples beyond the flip
    from torchvision.transforms import v2

    inner = {type(t.transforms[0]) for t in augmented.transform.transforms if isinstance(t, v2.RandomApply)}
    assert inner == {v2.JPEG, v2.GaussianBlur, v2.ColorJitter}  # the whole recipe, each applied at random
    assert load_dataset("fakes_dataset", "val", demo_root, 48, augment=True)[0][0].equal(
        load_dataset("fakes_dataset", "val", demo_root, 48)[0][0])  # never on val/test


def _write_records(path: str, worker: int, n: int) -> None:
    import sys

    sys.path.insert(0, str(REPO))

    from run_store import RunStore
    from trainer import LoggingParameters

    store = RunStore(path, path, LoggingParameters("M", "d", "o").run_name)
    for i in range(n):
        store.write_record({"run_id": f"{worker}-{i}"})


def test_concurrent_writers_lose_no_record(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_records, args=(str(tmp_path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    records = json.loads((tmp_path / "d_M_o.json").read_text())
    assert sorted(r["run_id"] for r in records) == sorted(f"{w}-{i}" for w in range(4) for i in range(40))


def test_train_main_records_the_new_options(demo_root, tmp_path):
    import train_main

    record = train_main.main(["-d", "fakes_dataset", "-m", "SimpleNet", "-e", "2", "-b", "8", "--image-size", "64",
                              "--data-root", str(demo_root), "--out-dir", str(tmp_path / "o"), "--checkpoint-dir",
                              str(tmp_path / "c"), "--no-progress", "--num-workers", "0", "--scheduler", "cosine",
                              "--select-by", "auc", "--augment", "--balance", "weights"])
    config = record["config"]
    assert (config["scheduler"], config["select_by"], config["augment"], config["balance"]) == ("cosine", "auc", True, "weights")
    assert config["class_weights"] == pytest.approx([16 / (2 * 6), 16 / (2 * 10)])  # 6 reals, 10 fakes of 16
    assert record["lr"] == pytest.approx([0.001, 0.0005])


def test_resume_refuses_another_image_size(demo_root, tmp_path):
    argv = ["-d", "fakes_dataset", "-m", "SimpleNet", "-e", "1", "-b", "8", "--data-root", str(demo_root), "--out-dir",
            str(tmp_path), "--checkpoint-dir", str(tmp_path), "--no-progress", "--num-workers", "0"]
    import train_main

    train_main.main(argv + ["--image-size", "64"])
    proc = subprocess.run([sys.executable, "train_main.py", *argv, "-e", "2", "--image-size", "56", "--resume"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "was trained at --image-size 64, not 56" in proc.stderr and "Traceback" not in proc.stderr


class NoisyToy(torch.utils.data.Dataset):
    """The separable toy set with a random per-sample perturbation, like an augmenting transform."""

    def __init__(self):
        self.data = separable_toy_set(40)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        x, y = self.data[i]
        return x + 0.3 * torch.randn_like(x), y


@pytest.mark.parametrize("workers", [1, 2])
def test_results_do_not_depend_on_the_number_of_workers(tmp_path, workers):
    def run(n):
        torch.manual_seed(0)
        model = DropoutNet()
        trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=0.05), nn.CrossEntropyLoss(), 8, NoisyToy(),
                          separable_toy_set(16, seed=1), separable_toy_set(16, seed=2), num_workers=n,
                          out_dir=tmp_path / str(n), checkpoint_dir=tmp_path / str(n), progress=False)
        return trainer.run(2, LP)["train_loss"]

    assert run(workers) == run(0)


def test_backbone_lr_scale_groups_the_head_apart():
    from models import MODEL_SPECS, build_model
    from train_main import lr_groups, make_optimizer

    model = build_model("EfficientNetLite0", pretrained=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert [len(g["params"]) for g in lr_groups(model, MODEL_SPECS["EfficientNetLite0"].head, 1.0)] == [len(trainable)]
    head, backbone = lr_groups(model, MODEL_SPECS["EfficientNetLite0"].head, 0.1)
    assert head["params"] == [model.classifier.weight, model.classifier.bias]
    assert len(backbone["params"]) == len(trainable) - 2 and backbone["params"][0] is model.conv_stem.weight
    optimizer = make_optimizer("SGD", [head, backbone], 0.01, 0.9, 0.0)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.001])
    frozen = build_model("EfficientNetLite0", pretrained=False, freeze_backbone=True)
    groups = lr_groups(frozen, MODEL_SPECS["EfficientNetLite0"].head, 0.1)
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for g in groups for p in g["params"])  # frozen ones stay out of the optimizer


def test_backbone_lr_scale_survives_the_schedule_and_resume(demo_root, tmp_path):
    import train_main

    argv = ["-d", "synthetic_dataset", "-m", "EfficientNetLite0", "--no-pretrained", "--image-size", "32", "-b", "8",
            "--lr", "0.01", "--scheduler", "step", "--gamma", "0.5", "--backbone-lr-scale", "0.1", "--data-root",
            str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path), "--no-progress",
            "--num-workers", "0"]
    assert train_main.main(argv + ["-e", "1"])["config"]["backbone_lr_scale"] == 0.1
    record = train_main.main(argv + ["-e", "2", "--resume"])
    assert record["lr"] == pytest.approx([0.01, 0.005])  # the head's lr, as before
    groups = read_checkpoint(tmp_path / "synthetic_dataset_EfficientNetLite0_Adam_last.pt")["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([0.005, 0.0005])  # epoch 2: both halved, the ratio kept
    assert "lr_scale" not in record["optimizer"]["params"]
    proc = subprocess.run([sys.executable, "train_main.py", "-m", "SimpleNet", "--backbone-lr-scale", "0.1"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--backbone-lr-scale applies to" in proc.stderr
