"""The loaders a run trains and evaluates with: a reproducible order, and a seed per sample.

The training loader draws its order and one seed per sample from the epoch's generator in the main process
(SeededSampler), and each sample is loaded under its own seed (SeededDataset), so shuffles and random transforms are
the same whatever the number of DataLoader workers and after --resume. Under torchrun every rank takes its share of
that order (distributed.ShardSampler); evaluation scores samples rank, rank + size, ... in dataset order.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler, WeightedRandomSampler

from distributed import ShardSampler, World
from faces_dataset import dataset_labels
from utils import make_loader


def class_balance_weights(labels: list[int]) -> list[float]:
    """Per-sample weights that make both classes equally likely to be drawn (1 / count of its class)."""
    counts = {c: labels.count(c) for c in set(labels)}
    return [1.0 / counts[y] for y in labels]


class SeededSampler(Sampler):
    """Wraps a sampler so each index comes with a seed drawn in the main process from the epoch's generator: random
    transforms then draw the same numbers whatever the number of DataLoader workers (see SeededDataset)."""

    def __init__(self, sampler: Sampler, generator: torch.Generator):
        self.sampler, self.generator = sampler, generator

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.sampler:
            yield int(index), int(torch.randint(2**62, (1,), generator=self.generator))

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


class SeededDataset(Dataset):
    """Loads item (index, seed) with python, numpy and torch seeded by `seed` inside a saved-and-restored RNG state, so
    the process's own random streams (dropout, attacks) are left as they were."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.default_generator.manual_seed(seed)  # the CPU generator only: torch.manual_seed also seeds every
            # accelerator's, 60 us a sample (a tenth of a cheap model's training step); transforms run on the CPU
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


def train_loader(dataset: Dataset, batch_size: int, generator: torch.Generator, device: torch.device, world: World,
                 num_workers: int | None, balanced: bool) -> DataLoader:
    """The training loader: its order (shuffled, or drawn with inverse class-frequency weights when `balanced`) and
    each sample's seed come from `generator`, which the Trainer reseeds every epoch. Pair datasets (self_blend.py)
    give two images an item, so half as many items make a batch; a last batch of one image is dropped (BatchNorm
    cannot train on it)."""
    if balanced:
        weights = class_balance_weights(dataset_labels(dataset))
        order: Sampler = WeightedRandomSampler(weights, len(weights), replacement=True, generator=generator)
    else:
        order = RandomSampler(dataset, generator=generator)  # type: ignore[arg-type]
    sampler = ShardSampler(SeededSampler(order, generator), world)
    per_item = getattr(dataset, "images_per_item", 1)
    items = max(1, batch_size // per_item)
    drop_last = per_item == 1 and len(sampler) % items == 1 and len(sampler) > 1
    # the loader's own generator only seeds its workers, which no longer matters: every sample carries its seed; it
    # must not be the epoch's, which a single-process loader would draw from once more per epoch
    return make_loader(SeededDataset(dataset), items, True, device, num_workers, torch.Generator(), sampler, drop_last,
                       getattr(dataset, "collate", None))


def eval_loader(dataset: Dataset, batch_size: int, device: torch.device, world: World,
                num_workers: int | None) -> DataLoader:
    """The evaluation loader: dataset order, each rank scoring its share (all of it when not distributed)."""
    order = ShardSampler(SequentialSampler(dataset), world, pad=False)  # type: ignore[arg-type]
    return make_loader(dataset, batch_size, False, device, num_workers, sampler=order)
