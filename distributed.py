"""Several processes training one model (torchrun + DistributedDataParallel), and what the Trainer needs from them.

    torchrun --nproc_per_node 2 train_main.py -d fakes_dataset -m SimpleNet          # 2 processes (GPUs, or CPU)
    torchrun --nnodes 2 --nproc_per_node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 train_main.py ...

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; `setup` then joins the process group (NCCL on CUDA, one GPU per local
rank; gloo on CPU). A plain `python train_main.py` has no WORLD_SIZE and stays a single process. -b is per process:
N processes at -b B see the same sample order as one process at -b N*B (ShardSampler deals consecutive samples of the
single-process order to the ranks in turn).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that prints, shows progress bars and writes logs, checkpoints and figures."""
        return self.rank == 0


SINGLE = World()


def world_from_env(env: dict[str, str] | None = None) -> World:
    """The World torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""
    env = os.environ if env is None else env
    size = int(env.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    return World(int(env["RANK"]), size, int(env.get("LOCAL_RANK", env["RANK"])))


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join torchrun's process group (once) when launched by it; returns the world and this rank's device
    (cuda:<local rank> when training on CUDA)."""
    world = world_from_env()
    if not world.distributed:
        return world, device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def sum_across(world: World, *values: float) -> list[float]:
    """Each value summed over all ranks (float64 on the CPU, so gloo and NCCL both take it)."""
    if not world.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def gather_in_order(world: World, indices: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """Every rank's per-sample arrays, concatenated and put back in dataset-index order (what one process would see)."""
    if not world.distributed:
        return list(arrays)
    parts: list[Any] = [None] * world.size
    dist.all_gather_object(parts, (indices, *arrays))
    order = np.argsort(np.concatenate([p[0] for p in parts]), kind="stable")
    return [np.concatenate([p[k] for p in parts])[order] for k in range(1, len(arrays) + 1)]


def sync_buffers(world: World, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank. DDP does so before each training forward,
    but the last training step updates each rank's statistics from its own batch: without this, ranks would evaluate
    slightly different models (and rank 0 saves its own)."""
    if world.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


class ShardSampler(Sampler):
    """This rank's share of another sampler's order: items rank, rank + size, ... of it. The order is padded by wrapping
    around (as torch's DistributedSampler does) so every rank runs the same number of steps; every rank draws the same
    order, since all seed the epoch's generator alike."""

    def __init__(self, sampler: Sampler, world: World, pad: bool = True):
        self.sampler, self.world, self.pad = sampler, world, pad

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return -(-n // self.world.size) if self.pad else len(range(self.world.rank, n, self.world.size))

    def __iter__(self) -> Iterator[Any]:
        items = list(self.sampler)
        if self.pad and items:
            total = len(self) * self.world.size
            items += (items * (total // len(items) + 1))[: total - len(items)]
        return iter(items[self.world.rank:: self.world.size])
