from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cli import UserError
from conftest import TinyNet, separable_toy_set
from trainer import HISTORY_KEYS, LoggingParameters, MetricAccumulator, Trainer


def test_accumulator_averages_over_samples_not_batches():
    acc = MetricAccumulator()
    logits_right = torch.tensor([[0.0, 1.0]] * 4)
    acc.update(1.0, logits_right, torch.ones(4, dtype=torch.long))  # a full batch of 4, loss 1, all right
    acc.update(4.0, torch.tensor([[1.0, 0.0]]), torch.ones(1, dtype=torch.long))  # last batch of 1, loss 4, wrong
    assert acc.avg_loss == pytest.approx((4 * 1.0 + 1 * 4.0) / 5)  # 1.6, not the batch mean 2.5
    assert acc.accuracy == pytest.approx(80.0)


def make_trainer(tmp_path, seed=0, epochs_data=64, batch_size=10):
    torch.manual_seed(seed)
    model = TinyNet()
    data = separable_toy_set(epochs_data)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    return Trainer(model, opt, nn.CrossEntropyLoss(), batch_size, data, separable_toy_set(20, seed=1),
                   separable_toy_set(20, seed=2), num_workers=0, seed=seed, out_dir=tmp_path / "out",
                   checkpoint_dir=tmp_path / "ckpt", progress=False, model_kwargs={})


LP = LoggingParameters("TinyNet", "toy", "Adam", {"lr": 0.05})


def test_tiny_model_learns_separable_toy_set(tmp_path):
    trainer = make_trainer(tmp_path)
    record = trainer.run(6, LP)
    assert record["val_acc"][-1] > 95 and record["test_acc"][-1] > 95
    assert record["train_loss"][-1] < record["train_loss"][0]


def test_json_log_format_and_append(tmp_path):
    make_trainer(tmp_path).run(2, LP)
    make_trainer(tmp_path).run(3, LP)
    records = json.loads((tmp_path / "out" / "toy_TinyNet_Adam.json").read_text())
    assert len(records) == 2  # one record per run
    first = records[0]
    assert first["model"] == "TinyNet" and first["dataset"] == "toy"
    assert first["optimizer"] == {"name": "Adam", "params": {"lr": 0.05}}
    assert all(len(first[k]) == 2 for k in HISTORY_KEYS) and all(len(records[1][k]) == 3 for k in HISTORY_KEYS)
    assert all(0 <= v <= 100 for v in first["val_acc"])
    assert first["best_val_acc"] == max(first["val_acc"])
    assert first["test_acc_at_best_val"] == first["test_acc"][first["val_acc"].index(max(first["val_acc"]))]


def test_checkpoint_round_trip_and_resume(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.run(2, LP)
    ckpt = torch.load(tmp_path / "ckpt" / "toy_TinyNet_Adam_last.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["model_name"] == "TinyNet" and "optimizer" in ckpt
    fresh = TinyNet()
    fresh.load_state_dict(ckpt["model"])
    x = torch.randn(3, 3, 16, 16)
    trainer.model.eval()
    assert torch.equal(fresh(x), trainer.model(x))

    resumed = make_trainer(tmp_path, seed=0)
    record = resumed.run(4, LP, resume=True)
    assert resumed.epoch == 4 and len(record["train_loss"]) == 4
    records = json.loads((tmp_path / "out" / "toy_TinyNet_Adam.json").read_text())
    assert len(records) == 1  # the resumed run replaced its own record instead of adding one

    # resuming gives the same result as running straight through (same seed, same shuffles)
    straight = make_trainer(tmp_path / "straight", seed=0).run(4, LP)
    assert straight["train_loss"] == pytest.approx(record["train_loss"], rel=1e-4)


def test_resume_without_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        make_trainer(tmp_path).run(2, LP, resume=True)


def test_corrupt_log_is_moved_aside_not_lost(tmp_path):
    log = tmp_path / "out" / "toy_TinyNet_Adam.json"
    log.parent.mkdir(parents=True)
    log.write_text("{ half a file")
    make_trainer(tmp_path).run(1, LP)
    assert len(json.loads(log.read_text())) == 1
    backups = list(log.parent.glob("toy_TinyNet_Adam.json.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_text() == "{ half a file"
    assert not list(log.parent.glob("*.tmp")) and not list((tmp_path / "ckpt").glob("*.tmp"))
