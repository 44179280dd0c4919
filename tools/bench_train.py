"""Benchmark: training images/second of Trainer.train_one_epoch against a bare PyTorch loop, same data, same run.

    python tools/bench_train.py                       # SimpleNet, 256x256, batch 32, 128 demo images, 2 rounds
    python tools/bench_train.py --model Bonus --limit 256 --rounds 3
    python tools/bench_train.py --model EfficientNetLite0 --image-size 224 --self-blend --data-root ../shared/data

The bare loop is what anyone would write: the same DataLoader settings, forward, loss, backward, step, nothing else.
Rounds alternate (bare, trainer, bare, trainer, ...) after one warm-up epoch of each, and the median of each is
compared. Target: ratio >= 0.9 (the Trainer's progress bar, metrics and seeding cost < 10 %).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import DATA_ROOT, DEFAULT_BATCH_SIZE, IMAGE_SIZE  # noqa: E402
from faces_dataset import DECODERS, DEFAULT_DECODER, get_transforms, load_dataset, split_paths  # noqa: E402
from landmarks import folder_landmarks  # noqa: E402
from models import MODEL_NAMES, build_model  # noqa: E402
from self_blend import SelfBlendPairs  # noqa: E402
from trainer import Trainer  # noqa: E402
from utils import get_device, make_loader, set_seed  # noqa: E402


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
    model = build_model(model_name, pretrained=False, image_size=image_size).to(device)
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
    model = build_model(model_name, pretrained=False, image_size=image_size).to(device)
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


def compare_self_blend(model_name: str, data_root: Path, limit: int, batch_size: int, image_size: int, rounds: int,
                       device: torch.device, num_workers: int | None = None) -> dict:
    """Median Trainer images/second on the dataset's own train images and on self-blended pairs of its real faces
    (same model, alternating rounds): what --fakes self-blend costs."""
    set_seed(0)
    dataset = load_dataset("fakes_dataset", "train", data_root, image_size, limit)
    reals = split_paths(load_dataset("fakes_dataset", "train", data_root, image_size), 0)[: max(1, limit // 2)]
    pairs = SelfBlendPairs(reals, folder_landmarks(reals), get_transforms(False, image_size))
    model = build_model(model_name, pretrained=False, image_size=image_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    trainers = {name: Trainer(model, optimizer, nn.CrossEntropyLoss(), batch_size, data, dataset, dataset, device=device,
                              num_workers=num_workers, progress=True) for name, data in (("dataset", dataset), ("self-blend", pairs))}
    images = {"dataset": len(dataset), "self-blend": 2 * len(pairs)}
    for trainer in trainers.values():
        trainer.train_one_epoch()  # warm-up
    speeds: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            speeds[name].append(images[name] / timed(trainer.train_one_epoch))
    result = {"model": model_name, "image_size": image_size, "batch_size": batch_size, "device": str(device),
              **{f"{name}_img_s": statistics.median(v) for name, v in speeds.items()}}
    result["ratio"] = result["self-blend_img_s"] / result["dataset_img_s"]
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODEL_NAMES, default="SimpleNet")
    p.add_argument("--data-root", type=Path, default=DATA_ROOT, help="needs fakes_dataset/train (default: %(default)s)")
    p.add_argument("--limit", type=int, default=128, help="training images per epoch (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    p.add_argument("--rounds", type=int, default=2, help="timed epochs of each loop (default: %(default)s)")
    p.add_argument("--num-workers", type=int, help="DataLoader workers (default: the suite's choice)")
    p.add_argument("--decoder", choices=DECODERS, default=DEFAULT_DECODER, help="JPEG decoder (default: %(default)s)")
    p.add_argument("--device", default="auto")
    p.add_argument("--self-blend", action="store_true", help="compare the Trainer on the dataset's images with the "
                   "Trainer on self-blended pairs of its real faces (--fakes self-blend) instead")
    args = p.parse_args(argv)
    if args.self_blend:
        r = compare_self_blend(args.model, args.data_root, args.limit, args.batch_size, args.image_size, args.rounds,
                               get_device(args.device), args.num_workers)
        print(f"{r['model']} {r['image_size']}px batch {r['batch_size']} on {r['device']}: dataset images "
              f"{r['dataset_img_s']:.1f} img/s, self-blended pairs {r['self-blend_img_s']:.1f} img/s, ratio {r['ratio']:.3f} "
              "(target > 0.5: self-blending must not halve throughput)")
        return r
    r = compare(args.model, args.data_root, args.limit, args.batch_size, args.image_size, args.rounds,
                get_device(args.device), args.num_workers, args.decoder)
    print(f"{r['model']} {r['image_size']}px batch {r['batch_size']} on {r['device']} ({r['workers']} workers, {r['decoder']}, "
          f"{r['images']} images): bare loop {r['bare_img_s']:.1f} img/s, Trainer {r['trainer_img_s']:.1f} img/s, "
          f"ratio {r['ratio']:.3f} (target >= 0.9)")
    return r


if __name__ == "__main__":
    main()
