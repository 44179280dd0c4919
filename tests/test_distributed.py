"""torchrun + DDP on CPU (gloo, 2 processes on tiny data), the shard sampler, and the TensorBoard mirror of the log."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import SequentialSampler

import numerical_analysis
import train_main
from checkpoints import read_checkpoint
from conftest import REPO
from detector import load_model_from_checkpoint
from distributed import ShardSampler, World, world_from_env
from faces_dataset import load_dataset
from run_store import TENSORBOARD_TAGS
from trainer import Trainer


def test_shard_sampler_deals_the_single_process_order_to_the_ranks():
    order = list(range(10, 17))  # 7 items over 3 ranks: padded to 9 by wrapping around
    shards = [list(ShardSampler(order, World(rank, 3))) for rank in range(3)]  # type: ignore[arg-type]
    assert shards == [[10, 13, 16], [11, 14, 10], [12, 15, 11]]
    assert all(len(ShardSampler(order, World(r, 3))) == 3 for r in range(3))  # type: ignore[arg-type]
    exact = [list(ShardSampler(SequentialSampler(range(7)), World(rank, 3), pad=False)) for rank in range(3)]
    assert exact == [[0, 3, 6], [1, 4], [2, 5]]  # evaluation: every sample exactly once
    assert [len(ShardSampler(SequentialSampler(range(7)), World(r, 3), pad=False)) for r in range(3)] == [3, 2, 2]
    # two ranks at -b 2 take the 4 consecutive samples one process would take at -b 4
    batches = [list(ShardSampler(list(range(8)), World(rank, 2)))[:2] for rank in range(2)]  # type: ignore[arg-type]
    assert sorted(batches[0] + batches[1]) == [0, 1, 2, 3]


def test_world_comes_from_torchrun_variables():
    assert world_from_env({}) == World(0, 1, 0) and not world_from_env({}).distributed
    world = world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (world.rank, world.size, world.local_rank, world.main, world.distributed) == (3, 4, 1, False, True)


def _reduce_on_rank(rank: int, init_file: str, results) -> None:
    """One of two gloo processes: sums of a per-rank accumulator, and scores gathered back into dataset order."""
    import torch.distributed as dist

    from distributed import gather_in_order
    from trainer import MetricAccumulator

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    world = World(rank, 2)
    acc = MetricAccumulator()
    acc.loss_sum, acc.correct, acc.count = (1.0, 3, 4) if rank == 0 else (2.0, 1, 3)
    total = acc.reduced(world)
    indices = np.arange(rank, 7, 2)  # rank 0 scored samples 0, 2, 4, 6; rank 1 samples 1, 3, 5
    (scores,) = gather_in_order(world, indices, indices * 10.0)
    model, data = _frozen_toy()  # lr 0: the epoch's loss is a fixed function of the samples, whichever rank saw them
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), nn.CrossEntropyLoss(), 2, data, data, data,
                      num_workers=0, progress=False, world=world)
    train_loss, train_acc = trainer.train_one_epoch()
    results.put((rank, total.loss_sum, total.correct, total.count, total.accuracy, scores.tolist(), train_loss, train_acc))
    dist.destroy_process_group()


def _frozen_toy() -> tuple[nn.Module, torch.utils.data.TensorDataset]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    x = torch.randn(8, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    return model, torch.utils.data.TensorDataset(x, torch.tensor([0, 1] * 4))


def test_sums_and_scores_cover_every_rank(tmp_path):
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_reduce_on_rank, args=(str(tmp_path / "init"), queue), nprocs=2)
    results = sorted(queue.get() for _ in range(2))
    model, data = _frozen_toy()
    with torch.no_grad():
        logits = model(data.tensors[0])
    whole_loss = nn.functional.cross_entropy(logits, data.tensors[1]).item()
    whole_acc = 100 * (logits.argmax(1) == data.tensors[1]).float().mean().item()
    assert [r[0] for r in results] == [0, 1]
    for _rank, loss_sum, correct, count, accuracy, scores, train_loss, train_acc in results:
        assert (loss_sum, correct, count) == (3.0, 4, 7) and accuracy == pytest.approx(100 * 4 / 7)
        assert scores == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]  # every sample once, in dataset order
        assert train_loss == pytest.approx(whole_loss, rel=1e-6) and train_acc == pytest.approx(whole_acc)


def torchrun(demo_root, out, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "train_main.py"), "-d", "fakes_dataset", "-m", "Bonus", "-b", "4", "--image-size", "32",
           "--data-root", str(demo_root), "--out-dir", str(out), "--checkpoint-dir", str(out), "--no-progress",
           "--num-workers", "0", "--lr", "0.01", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)


def test_ddp_on_two_cpu_processes_logs_whole_split_metrics_and_resumes(demo_root, tmp_path):
    first = torchrun(demo_root, tmp_path, "-e", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.count("epoch 1/1:") == 1  # rank 0 alone prints
    assert "x 2 processes (-b 4 each)" in first.stdout
    log = json.loads((tmp_path / "fakes_dataset_Bonus_Adam.json").read_text())
    assert len(log) == 1 and log[0]["config"]["world_size"] == 2
    ckpt = read_checkpoint(tmp_path / "fakes_dataset_Bonus_Adam_last.pt")
    assert not any(k.startswith("module.") for k in ckpt["model"])  # loads into the bare model

    # the logged metrics cover the whole split: a single-process evaluation of the same weights gives them
    loaded = load_model_from_checkpoint(tmp_path / "fakes_dataset_Bonus_Adam_last.pt")
    model = loaded.module
    val = load_dataset("fakes_dataset", "val", demo_root, 32, norm=loaded.normalization)
    test = load_dataset("fakes_dataset", "test", demo_root, 32, norm=loaded.normalization)
    trainer = Trainer(model, torch.optim.Adam(model.parameters()), nn.CrossEntropyLoss(), 4, val, val, test,
                      num_workers=0, progress=False)
    for split, dataset in (("val", val), ("test", test)):
        single = trainer.evaluate(dataset)
        assert log[0][f"{split}_acc"][-1] == pytest.approx(single.accuracy)
        assert log[0][f"{split}_loss"][-1] == pytest.approx(single.loss, rel=1e-5)
        assert log[0][f"{split}_auc"][-1] == pytest.approx(single.auc)
    result = numerical_analysis.main(["-cpp", str(tmp_path / "fakes_dataset_Bonus_Adam.pt"), "-d", "fakes_dataset",
                                      "--data-root", str(demo_root), "--figures-dir", str(tmp_path / "figs"),
                                      "--bootstrap", "10", "--no-progress"])
    assert 0 <= result["auc"] <= 1

    second = torchrun(demo_root, tmp_path, "-e", "2", "--resume")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming fakes_dataset_Bonus_Adam after epoch 1 of 2" in second.stdout and "epoch 2/2:" in second.stdout
    log = json.loads((tmp_path / "fakes_dataset_Bonus_Adam.json").read_text())
    assert len(log) == 1 and len(log[0]["train_loss"]) == 2
    assert read_checkpoint(tmp_path / "fakes_dataset_Bonus_Adam_last.pt")["epoch"] == 2


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_mirrors_the_json_log(demo_root, tmp_path):
    args = ["-d", "fakes_dataset", "-m", "Bonus", "-e", "2", "-b", "8", "--image-size", "32", "--data-root",
            str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path), "--no-progress",
            "--num-workers", "0", "--tensorboard", str(tmp_path / "tb")]
    record = train_main.main(args)
    found = scalars(tmp_path / "tb")
    expected = {tag for key, tag in TENSORBOARD_TAGS.items() if key in record}
    assert set(found) == expected and "auc/val" in found and "lr" in found
    for key, tag in TENSORBOARD_TAGS.items():
        if key in record:
            assert [step for step, _ in found[tag]] == [1, 2]
            np.testing.assert_allclose([v for _, v in found[tag]], record[key], rtol=1e-6)
    last = tmp_path / "fakes_dataset_Bonus_Adam_last.pt"
    after_two = last.read_bytes()
    train_main.main(args[:5] + ["3"] + args[6:] + ["--resume"])  # resume continues the curves at step 3
    assert [step for step, _ in scalars(tmp_path / "tb")["loss/train"]] == [1, 2, 3]
    last.write_bytes(after_two)  # as if epoch 3 had been logged but its checkpoint lost: resuming again must not
    train_main.main(args[:5] + ["3"] + args[6:] + ["--resume"])  # leave two points at step 3
    assert [step for step, _ in scalars(tmp_path / "tb")["loss/train"]] == [1, 2, 3]


def test_tensorboard_missing_is_one_sentence_before_training(demo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    with pytest.raises(SystemExit) as err:
        train_main.main(["-d", "fakes_dataset", "-m", "Bonus", "-e", "1", "--image-size", "32", "--data-root",
                         str(demo_root), "--out-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path), "--tensorboard"])
    assert err.value.code == 2 and "pip install tensorboard" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))  # nothing trained, nothing logged


def test_tensorboard_default_folder_is_under_the_work_dir(tmp_path):
    import argparse

    from common import WORK_DIR

    default = train_main.tensorboard_dir(argparse.Namespace(tensorboard=train_main.TENSORBOARD_DEFAULT), "fakes_x")
    assert default == WORK_DIR / "runs" / "fakes_x"  # beside out/ and checkpoints/, wherever the command is run from
    assert train_main.tensorboard_dir(argparse.Namespace(tensorboard=str(tmp_path)), "fakes_x") == tmp_path
    assert train_main.tensorboard_dir(argparse.Namespace(tensorboard=None), "fakes_x") is None
