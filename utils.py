"""Torch and plotting helpers shared by the scripts: the device, seeding, DataLoaders, parameter counts, figures,
sample batches and frozen evaluation. (CLI errors, flag types and shared flags: cli.py; safe file writes: files.py.)"""
from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cli import UserError


def get_device(prefer: str = "auto") -> torch.device:
    """Return the requested device; 'auto' picks cuda > mps > cpu."""
    if prefer == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if prefer.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {prefer} was asked for but CUDA is not available; use --device cpu or auto")
    if prefer == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was asked for but MPS is not available; use --device cpu or auto")
    try:
        return torch.device(prefer)
    except RuntimeError as err:
        raise UserError(f"unknown device {prefer!r} (use auto, cpu, cuda, cuda:N or mps)") from err


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; deterministic=True also makes cuDNN deterministic (slower)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def default_num_workers() -> int:
    """DataLoader workers: none below 4 cores, else one per two cores (at most 8). Measured on 2 cores (Bonus, 224 px,
    ../shared/data): a worker process takes a core from the two compute threads and costs a copy per batch, so the
    Trainer ran at 226 img/s with one worker and 380 without."""
    cores = os.cpu_count() or 1
    return 0 if cores < 4 else min(8, cores // 2)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    device: torch.device,
    num_workers: int | None = None,
    generator: torch.Generator | None = None,
    sampler: torch.utils.data.Sampler | None = None,
    drop_last: bool = False,
    collate_fn: Callable | None = None,
) -> DataLoader:
    """A DataLoader with workers and pin_memory chosen for the device; `generator` makes the shuffle reproducible."""
    workers = default_num_workers() if num_workers is None else num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=generator,
        drop_last=drop_last,
        collate_fn=collate_fn,
    )


def get_nof_params(model: nn.Module) -> int:
    """Number of trainable parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def new_figure(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """plt.subplots on the non-interactive Agg backend (scripts only write files; works headless and on Colab)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig: Any, path: str | Path, provenance: dict[str, str] | None = None) -> Path:
    """Save a matplotlib figure (creating its folder), close it, and say where it went; `provenance` (e.g. the
    checkpoint and its SHA-256) goes into the PNG's text chunks, so a figure says what it was drawn from."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata=provenance or None)
    plt.close(fig)
    print(f"saved {path}")
    return path


def sample_batch(dataset: Dataset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n random samples of a dataset (seeded, so the same images come back every run) as (images, labels)."""
    loader = DataLoader(dataset, batch_size=n, shuffle=True, generator=torch.Generator().manual_seed(seed))
    images, labels = next(iter(loader))
    return images, labels


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients inside; the previous mode and requires_grad flags are restored after."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
