"""The bonus detector: a compact CNN (models.BonusNet, 27,826 parameters) chosen for validation AUC per parameter on
fakes_dataset, and the assignment's entry point my_bonus_model().

Selected on the real fakes_dataset's train/val splits only (6 epochs each, Adam, cosine with 1 warm-up epoch, best val
AUC): widths 16-32-48-64-96-128 at 256 px and lr 1e-2 reached val AUC 0.678; the same at 224 px 0.664, at lr 3e-3
0.673, and 3.7x wider (32 ... 256, 102,754 parameters) 0.673. Trained 12 epochs with that recipe: test AUC 0.730
(SimpleNet, 600x larger: 0.658). The architecture and why it looks as it does: models.BonusNet.

    python train_main.py -d fakes_dataset -m Bonus --lr 0.01 -e 12 --scheduler cosine --warmup-epochs 1 --select-by auc
    python bonus_main.py                                       # test AUC and parameter count of checkpoints/bonus.pt
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common import BONUS_CHECKPOINT
from detector import load_model_from_checkpoint
from models import BonusNet

__all__ = ["BONUS_ADVICE", "BonusNet", "my_bonus_model"]

BONUS_ADVICE = "pass the checkpoint of a Bonus run (python train_main.py -d fakes_dataset -m Bonus publishes checkpoints/bonus.pt)"


def my_bonus_model(checkpoint: str | Path = BONUS_CHECKPOINT, device: torch.device | str = "cpu") -> nn.Module:
    """The trained bonus model from checkpoints/bonus.pt, in eval mode (the assignment's entry point)."""
    return load_model_from_checkpoint(checkpoint, device, expected_model="Bonus", advice=BONUS_ADVICE).module
