"""The single owners: one run name, one P(fake), one checkpoint loader (also for --init-from and the bonus model), CAM
helpers that leave the model as they found it and fail loudly, analysis inputs that leave the caller's args alone."""
from __future__ import annotations

import hashlib
import math

import pytest
import torch
from torch import nn

import detector
import models
import train_main
from analysis import compute_cams
from bonus_model import BonusNet, my_bonus_model
from checkpoints import save_checkpoint
from cli import UserError
from common import run_name
from detector import load_model_from_checkpoint
from face_detection import Framing
from metrics import Threshold
from models import build_model, p_fake
from normalization import Normalization


class Blob(nn.Module):
    """Two outputs from one conv layer (the CAM target), with a dropout that tells train from eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(3, 2, 3, padding=1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(torch.relu(self.conv3(x)).mean(dim=(2, 3)))

    def cam_layer(self) -> nn.Module:
        return self.conv3


def test_run_name_is_the_one_rule_for_logs_checkpoints_and_figures():
    assert run_name("fakes_dataset", "SimpleNet", "Adam") == "fakes_dataset_SimpleNet_Adam"
    assert run_name("fakes_dataset", "SimpleNet", "Adam", "advpgd") == "fakes_dataset_SimpleNet_Adam_advpgd"
    assert run_name("fakes_dataset", "SimpleNet") == "fakes_dataset_SimpleNet"  # a figure prefix: no optimizer
    assert run_name("fakes_dataset", "Bonus", tag="advpgd") == "fakes_dataset_Bonus_advpgd"
    assert run_name("catalog-clips", "EfficientNetLite0", "Adam", "") == "catalog-clips_EfficientNetLite0_Adam"


def test_p_fake_is_softmax_output_one_in_float32():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(4.0), 0.0]], dtype=torch.float16)
    scores = p_fake(logits)
    assert scores.dtype == torch.float32
    assert torch.allclose(scores, torch.tensor([0.75, 0.2]), atol=1e-3)  # 3/(1+3); 1/(4+1): column 1, not 0


@pytest.mark.parametrize("training", [True, False])
def test_cams_leave_the_model_in_the_mode_they_found_it(training):
    model = Blob().train(training)
    cams = compute_cams(model, torch.rand(2, 3, 8, 8), torch.tensor([1, 0]), "SimpleNet")
    assert cams.shape == (2, 8, 8) and model.training is training


def test_a_failing_cam_raises_instead_of_returning_none():
    model = Blob().train()
    with pytest.raises(IndexError):  # class 5 of a 2-output model: pytorch-grad-cam's context manager would swallow it
        compute_cams(model, torch.rand(1, 3, 8, 8), torch.tensor([5]), "SimpleNet")
    assert model.training  # restored on the way out too


def test_a_loaded_detector_carries_every_fact_and_a_built_model_none(tmp_path):
    net = build_model("SimpleNet", image_size=64)
    path = tmp_path / "simple.pt"
    custom = Normalization((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    save_checkpoint({"model": net.state_dict(), "model_name": "SimpleNet", "model_kwargs": {"image_size": 64},
                     "normalization": custom.to_dict(), "framing": {"margin": 0.21, "source": "measured on 32 train images"},
                     "threshold": {"value": 0.37, "source": "at most 5 % of val reals", "band": [0.3, 0.4]}}, path)
    loaded = load_model_from_checkpoint(path)
    assert (loaded.name, loaded.image_size, loaded.normalization, loaded.module.training) == ("SimpleNet", 64, custom, False)
    assert loaded.framing == Framing(0.21, "measured on 32 train images")
    assert loaded.threshold == Threshold(0.37, "at most 5 % of val reals", (0.3, 0.4))
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and loaded.path == path
    # nothing is patched onto the module: a freshly built model has no facts to be mistaken for a detector's
    facts = ("image_size", "normalization", "decision_threshold", "model_name", "framing", "threshold")
    assert not any(hasattr(m, fact) for m in (net, loaded.module) for fact in facts)
    # a checkpoint without framing or threshold says so instead of hiding a default
    save_checkpoint({"model": net.state_dict(), "model_name": "SimpleNet", "model_kwargs": {"image_size": 64}}, path)
    bare = load_model_from_checkpoint(path)
    assert bare.framing.margin is None and "does not say" in bare.framing.source
    assert bare.threshold.value == 0.5 and "stores no threshold" in bare.threshold.source
    # the bonus model's entry point goes through the same loader and gives its module; another model is refused
    bonus = build_model("Bonus")
    save_checkpoint({"model": bonus.state_dict(), "model_name": "Bonus", "model_kwargs": {"image_size": 96}},
                    tmp_path / "bonus.pt")
    assert isinstance(my_bonus_model(tmp_path / "bonus.pt"), BonusNet)
    with pytest.raises(UserError, match="holds a SimpleNet model, not Bonus; pass the checkpoint of a Bonus run"):
        my_bonus_model(path)


def test_init_from_loads_into_the_model_without_building_another(tmp_path, monkeypatch):
    source = build_model("SimpleNet", image_size=64)
    path = tmp_path / "simple.pt"
    save_checkpoint({"model": source.state_dict(), "model_name": "SimpleNet", "model_kwargs": {"image_size": 64}}, path)
    target = build_model("SimpleNet", image_size=64).train()

    def no_second_model(*_args, **_kwargs):
        raise AssertionError("a second model was built")

    monkeypatch.setattr(models, "build_model", no_second_model)
    monkeypatch.setattr(detector, "build_untrained", no_second_model)
    train_main.init_weights(target, path, "SimpleNet")
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
    assert target.training  # loaded as it is: the trainer sets the mode


def test_trainer_settings_are_one_typed_config(tmp_path):
    from conftest import TinyNet, separable_toy_set
    from trainer import Trainer, TrainerConfig

    model = TinyNet()
    args = (model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), 8, separable_toy_set(8),
            separable_toy_set(8), separable_toy_set(8))
    trainer = Trainer(*args, TrainerConfig(out_dir=tmp_path / "o", seed=7, select_by="auc"))
    assert trainer.config.out_dir == tmp_path / "o" and (trainer.config.seed, trainer.config.select_by) == (7, "auc")
    assert Trainer(*args, out_dir=str(tmp_path / "o")).config.out_dir == tmp_path / "o"  # folders become Paths
    assert Trainer(*args, seed=7).config == TrainerConfig(seed=7)  # its fields as keywords: the same config
    with pytest.raises(TypeError):
        Trainer(*args, TrainerConfig(), seed=7)
    with pytest.raises(TypeError):
        Trainer(*args, sede=7)  # a misspelt setting is an error, not ignored


def test_a_log_is_judged_by_one_policy_for_readers_and_the_trainer(tmp_path):
    from run_store import RunStore, read_json_list
    from trainer import LoggingParameters

    log = tmp_path / "fakes_dataset_SimpleNet_Adam.json"
    for text in ('[1, 2]', '{"model": "x"}', '[{"a": 1}, 3]'):  # JSON, but no list of run records
        log.write_text(text)
        with pytest.raises(UserError, match="not a list of run records"):
            read_json_list(log)
        RunStore(tmp_path, tmp_path, LoggingParameters("SimpleNet", "fakes_dataset", "Adam").run_name).write_record(
            {"run_id": "r1"})
        assert read_json_list(log) == [{"run_id": "r1"}]  # the trainer kept it aside and started a new log
        kept = sorted(tmp_path.glob("*.corrupt-*"))
        assert kept and kept[-1].read_text() == text
        for path in kept:
            path.unlink()


def test_the_summary_and_the_report_read_logs_and_step_times_by_one_rule(tmp_path):
    import json

    import make_report
    from summarize_run import summary_markdown

    out = tmp_path / "out"
    out.mkdir()
    record = {"model": "SimpleNet", "dataset": "fakes_dataset", "val_acc": [60.0], "best_val_acc": 60.0,
              "test_acc_at_best_val": 58.0, "epoch_time_s": [7.0], "config": {"n_params": 5}, "tag": ""}
    (out / "fakes_dataset_SimpleNet_Adam.json").write_text(json.dumps([record]))
    (out / "fakes_dataset_Bonus_Adam.json").write_text("[1, 2]")  # JSON, but no log: skipped by both
    (out / "cross_eval.json").write_text('[{"checkpoint": "a.pt"}]')  # records, but of no training run
    (out / "run_me_times.tsv").write_text("train\t22\n\n40\nplot (did not succeed)\t3\nhalf-writ")
    summary = summary_markdown(out, tmp_path, out / "run_me_times.tsv")
    assert "| SimpleNet | fakes_dataset | 1 |" in summary and "Bonus" not in summary
    assert "| plot (did not succeed) | 3 |" in summary and "| **total** | **25** |" in summary and "half" not in summary
    assert "|  | 40 |" not in summary
    page = make_report.times_chapter(make_report.Run(out, tmp_path, tmp_path))
    assert "<td>plot (did not succeed)</td><td>3</td>" in page and "<b>25</b>" in page and "half" not in page


def test_file_lock_waits_or_refuses_at_once(tmp_path):
    import threading
    import time

    from files import file_lock

    lock, events = tmp_path / "x.lock", []

    def second_writer() -> None:
        with file_lock(lock):  # waits for the first one instead of failing
            events.append("second in")

    with file_lock(lock):
        with pytest.raises(BlockingIOError), file_lock(lock, wait=False):
            pass
        thread = threading.Thread(target=second_writer)
        thread.start()
        time.sleep(0.3)
        events.append("first out")
    thread.join(5)
    assert events == ["first out", "second in"]


def test_one_eer_threshold_for_val_splits_and_the_users_folders(tmp_path):
    from analysis import eer_threshold_on
    from metrics import equal_error_rate

    class Score(nn.Module):  # P(fake) = sigmoid(the image's mean), so the toy set below gets known scores
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([torch.zeros_like(m), m], dim=1)

    x = torch.tensor([-2.0, -1.0, 0.8, -0.3, 1.0, 3.0]).view(6, 1, 1, 1).expand(6, 3, 2, 2).contiguous()
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    data = torch.utils.data.TensorDataset(x, y)
    scores = torch.sigmoid(torch.tensor([-2.0, -1.0, 0.8, -0.3, 1.0, 3.0])).numpy()
    assert eer_threshold_on(data, Score(), "cpu", "toy", progress=False) == pytest.approx(
        equal_error_rate(y.numpy(), scores)[1])
    one_class = torch.utils.data.TensorDataset(x, torch.zeros(6, dtype=torch.long))
    with pytest.raises(UserError, match="^--threshold val-eer:mine holds one class only"):
        eer_threshold_on(one_class, Score(), "cpu", "--threshold val-eer:mine", progress=False)


def test_run_lock_reports_only_a_held_lock_as_already_running(tmp_path):
    from files import run_lock

    with pytest.raises(BlockingIOError, match="the run's own"):  # an error inside the run passes through as it is
        with run_lock(tmp_path / "x.lock", "a run named x", "wait"):
            raise BlockingIOError("the run's own")
    with run_lock(tmp_path / "x.lock", "a run named x", "wait"):
        with pytest.raises(UserError, match="a run named x is already running"):
            with run_lock(tmp_path / "x.lock", "a run named x", "wait"):
                pass
