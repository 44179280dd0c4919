"""Timing helpers the benchmark tools share (tools/bench_train.py, bench_attacks.py, bench_report.py): a timed call
that waits for CUDA, a fresh model with a random batch and one training step on it (compute only, no data), and the
Trainer's throughput against a bare training loop over the same data."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from faces_dataset import DEFAULT_DECODER, load_dataset
from models import build_untrained
from trainer import Trainer
from utils import make_loader, set_seed


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call takes (CUDA work is synchronised before and after)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def random_batch_setup(model_name: str, batch_size: int, image_size: int, device: torch.device):
    """(model, x, y, train_step): a fresh model, a random [0,1] batch, and one clean SGD step on it (compute only)."""
    model = build_untrained(model_name, image_size).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    x = torch.rand(batch_size, 3, image_size, image_size, device=device)
    y = torch.randint(0, 2, (batch_size,), device=device)

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return model, x, y, train_step


def bare_epoch(model: nn.Module, loader, optimizer, device: torch.device) -> None:
    """The reference: a plain training loop over the loader."""
    model.train()
    criterion = nn.CrossEntropyLoss()
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        criterion(model(images), labels).backward()
        optimizer.step()


def compare(model_name: str, data_root: Path, limit: int, batch_size: int, image_size: int, rounds: int,
            device: torch.device, num_workers: int | None = None, decoder: str = DEFAULT_DECODER) -> dict:
    """Median images/second of the bare loop and of the Trainer over alternating rounds, and their ratio."""
    set_seed(0)
    dataset = load_dataset("fakes_dataset", "train", data_root, image_size, limit, decoder=decoder)
    model = build_untrained(model_name, image_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    trainer = Trainer(model, optimizer, nn.CrossEntropyLoss(), batch_size, dataset, dataset, dataset, device=device,
                      num_workers=num_workers, progress=True)
    loader = make_loader(dataset, batch_size, True, device, num_workers)
    bare_epoch(model, loader, optimizer, device)  # warm-up: allocator, workers, kernels
    trainer.train_one_epoch()
    bare, tool = [], []
    for _ in range(rounds):
        bare.append(len(dataset) / timed(lambda: bare_epoch(model, loader, optimizer, device)))
        tool.append(len(dataset) / timed(trainer.train_one_epoch))
    result = {"model": model_name, "images": len(dataset), "batch_size": batch_size, "image_size": image_size,
              "device": str(device), "workers": loader.num_workers, "decoder": decoder, "bare_img_s": statistics.median(bare),
              "trainer_img_s": statistics.median(tool)}
    result["ratio"] = result["trainer_img_s"] / result["bare_img_s"]
    return result
