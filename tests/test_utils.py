from __future__ import annotations

import json
import os

import pytest
import torch

from cli import UserError, comma_choices
from faces_dataset import dataset_labels, evenly_spaced_subset
from files import atomic_write_json
from normalization import denormalize, normalize
from run_store import read_json_list
from utils import frozen_eval, get_device


class Labelled(torch.utils.data.Dataset):
    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.zeros(1), self.labels[i]


def test_evenly_spaced_subset_keeps_the_class_ratio():
    ds = Labelled([0] * 40 + [1] * 60)
    sub = evenly_spaced_subset(ds, 10)
    assert len(sub) == 10 and dataset_labels(sub).count(1) == 6
    assert evenly_spaced_subset(ds, 500) is ds
    with pytest.raises(UserError):
        evenly_spaced_subset(ds, 0)


def test_normalize_round_trip_and_range():
    x = torch.rand(2, 3, 4, 4)
    n = normalize(x)
    assert n.min() >= -1 and n.max() <= 1
    assert torch.allclose(denormalize(n), x, atol=1e-6)


def test_get_device():
    assert get_device("cpu").type == "cpu"
    assert get_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            get_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        get_device("tpu9")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "log.json"
    atomic_write_json(path, [{"a": 1}])
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only 0600
    with pytest.raises(TypeError):
        atomic_write_json(path, [{"a": object()}])  # not serialisable: fails half-way
    assert json.loads(path.read_text()) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["log.json"]


def test_read_json_list_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_json_list(tmp_path / "none.json")
    (tmp_path / "obj.json").write_text('{"model": "x"}')
    with pytest.raises(UserError, match="not a list of run records"):
        read_json_list(tmp_path / "obj.json")


def test_frozen_eval_restores_mode_and_flags():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    model[0].bias.requires_grad_(False)
    model.train()
    with frozen_eval(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.training and model[0].weight.requires_grad and not model[0].bias.requires_grad


def test_comma_choices_keeps_the_given_order_drops_repeats_and_refuses_unknown_or_empty_lists():
    import argparse

    parse = comma_choices(("jpeg", "blur", "noise"))
    assert parse("noise, jpeg,noise,") == ["noise", "jpeg"]
    assert parse("blur") == ["blur"]
    for bad in ("", " , ", "jpeg,Blur", "jpg"):
        with pytest.raises(argparse.ArgumentTypeError, match="choose from jpeg,blur,noise"):
            parse(bad)
