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
from pathlib import Path

import torch
from torch import nn

from benchmarking import compare, timed
from cli import add_data_flags, add_device_flag, add_workers_flag
from common import DEFAULT_BATCH_SIZE, IMAGE_SIZE
from faces_dataset import DECODERS, DEFAULT_DECODER, get_transforms, load_dataset, split_paths
from landmarks import folder_landmarks
from models import MODEL_NAMES, build_untrained
from self_blend import SelfBlendPairs
from trainer import Trainer
from utils import get_device, set_seed


def compare_self_blend(model_name: str, data_root: Path, limit: int, batch_size: int, image_size: int, rounds: int,
                       device: torch.device, num_workers: int | None = None) -> dict:
    """Median Trainer images/second on the dataset's own train images and on self-blended pairs of its real faces
    (same model, alternating rounds): what --fakes self-blend costs."""
    set_seed(0)
    dataset = load_dataset("fakes_dataset", "train", data_root, image_size, limit)
    reals = split_paths(load_dataset("fakes_dataset", "train", data_root, image_size), 0)[: max(1, limit // 2)]
    pairs = SelfBlendPairs(reals, folder_landmarks(reals), get_transforms(False, image_size))
    model = build_untrained(model_name, image_size).to(device)
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
    add_data_flags(p, dataset=False, root_help="needs fakes_dataset/train")
    p.add_argument("--limit", type=int, default=128, help="training images per epoch (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    p.add_argument("--rounds", type=int, default=2, help="timed epochs of each loop (default: %(default)s)")
    add_workers_flag(p)
    p.add_argument("--decoder", choices=DECODERS, default=DEFAULT_DECODER, help="JPEG decoder (default: %(default)s)")
    add_device_flag(p)
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
