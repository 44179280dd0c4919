"""Shared fixtures: tiny demo data made by our own generator, offline weight lookups, the repo on sys.path."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def offline_weights(tmp_path_factory, monkeypatch):
    """Never download and never read the user's cache: weight lookups see an empty temp hub dir."""
    monkeypatch.setenv("FMD_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.delenv("FMD_WEIGHTS_DIR", raising=False)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """Both demo datasets at 64x64: 16 train / 8 val / 8 test images per dataset, 60 % fakes."""
    from make_demo_dataset import generate

    root = tmp_path_factory.mktemp("demo")
    generate(root, 64, {"train": 16, "val": 8, "test": 8}, 0.6, seed=3, progress=False)
    return root


class TinyNet(nn.Module):
    """A 2-output conv net small enough to train in a second."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def separable_toy_set(n: int = 64, size: int = 16, seed: int = 0) -> torch.utils.data.TensorDataset:
    """Class 1 images carry a bright square, class 0 images do not: linearly separable in normalised space."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 0.4 - 0.6  # normalised inputs around -0.4
    y = torch.arange(n) % 2
    x[y == 1, :, 4:12, 4:12] += 1.0
    return torch.utils.data.TensorDataset(x, y)


def make_split(root: Path, n_real: int = 2, n_fake: int = 3, size: int = 8) -> Path:
    """A split folder with n_real and n_fake tiny PNGs (real_0.png, fake_0.png, ...) in real/ and fake/."""
    from PIL import Image

    for cls, n in (("real", n_real), ("fake", n_fake)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (size, size), (i * 40, 0, 0)).save(root / cls / f"{cls}_{i}.png")
    return root
