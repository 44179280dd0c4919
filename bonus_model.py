"""The bonus detector: a compact CNN chosen for validation AUC per parameter on fakes_dataset (27,826 parameters).

Design, for artefacts rather than semantics: a face swap leaves seams, blur and colour shifts, and a GAN leaves
periodic upsampling traces; all are local, so a narrow stack of depthwise-separable blocks with BatchNorm and global
average pooling sees enough, and no large fully connected layer is needed (SimpleNet spends 98 % of its 16.9 M
parameters in fc1). A stride-2 stem keeps the compute at a third of SimpleNet's. Selected on the real fakes_dataset's
train/val splits only (6 epochs each, Adam, cosine with 1 warm-up epoch, best val AUC): widths 16-32-48-64-96-128 at
256 px and lr 1e-2 reached val AUC 0.678; the same at 224 px 0.664, at lr 3e-3 0.673, and 3.7x wider (32 ... 256,
102,754 parameters) 0.673. Trained 12 epochs with that recipe: test AUC 0.730 (SimpleNet, 600x larger: 0.658).

    python train_main.py -d fakes_dataset -m Bonus --lr 0.01 -e 12 --scheduler cosine --warmup-epochs 1 --select-by auc
    python bonus_main.py                                       # test AUC and parameter count of checkpoints/bonus.pt
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common import BONUS_CHECKPOINT


def _separable(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 (stride) + pointwise 1x1, each with BatchNorm, ReLU after."""
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False),
        nn.BatchNorm2d(in_ch),
        nn.Conv2d(in_ch, out_ch, 1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class BonusNet(nn.Module):
    """Stem 3->16 (stride 2), five separable blocks down to 1/64, global average pool, dropout, linear 128->2."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 48, 64, 96, 128), dropout: float = 0.2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[_separable(a, b, 2) for a, b in zip(widths[:-1], widths[1:])])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(widths[-1], 2))

    def cam_layer(self) -> nn.Module:
        """Grad-CAM target: the last separable block."""
        return self.blocks[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


BONUS_ADVICE = "pass the checkpoint of a Bonus run (python train_main.py -d fakes_dataset -m Bonus publishes checkpoints/bonus.pt)"


def my_bonus_model(checkpoint: str | Path = BONUS_CHECKPOINT, device: torch.device | str = "cpu") -> nn.Module:
    """The trained bonus model from checkpoints/bonus.pt, in eval mode (the assignment's entry point)."""
    from models import load_model_from_checkpoint  # models imports this file (BonusNet): import at call time

    return load_model_from_checkpoint(checkpoint, device, expected_model="Bonus", advice=BONUS_ADVICE)[0]
