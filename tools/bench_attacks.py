"""Benchmark: the cost of an FGSM / PGD-k attack on one batch, relative to one clean training step.

    python tools/bench_attacks.py                          # SimpleNet, batch 32, 256x256, k = 10
    python tools/bench_attacks.py --model Bonus --steps 3 --image-size 128

A PGD-k attack is k forward/backward passes w.r.t. the input, and one PGD-k adversarial-training step k + 1 passes.
A pass to the input is not quite a training step: it skips the weight gradients and the update but must back-propagate
through the first layer to the image, which training never does (for SimpleNet's 7x7 conv at 256x256 that makes it
about 1.2 clean steps). Prints each cost as a multiple of a clean step and PGD-k in input-gradient passes: the attack
adds nothing beyond its passes when that stays near k.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from attacks import NormalizedModel, _input_gradient, fgsm_attack, pgd_attack
from benchmarking import random_batch_setup, timed
from cli import add_device_flag
from common import DEFAULT_BATCH_SIZE, IMAGE_SIZE
from models import MODEL_NAMES
from utils import frozen_eval, get_device, set_seed


def measure(model_name: str, batch_size: int, image_size: int, steps: int, repeats: int, device: torch.device) -> dict:
    """Median seconds of a clean training step, an FGSM and a PGD-k attack on one random batch."""
    set_seed(0)
    model, x, y, train_step = random_batch_setup(model_name, batch_size, image_size, device)
    net = NormalizedModel(model)

    def input_grad_pass() -> None:  # what one attack step cannot avoid: forward + backward to the input
        with frozen_eval(model):
            _input_gradient(net, x, y)

    runs = {"clean_step": train_step, "input_grad": input_grad_pass, "fgsm": lambda: fgsm_attack(model, x, y),
            f"pgd{steps}": lambda: pgd_attack(model, x, y, steps=steps)}
    for fn in runs.values():
        fn()  # warm-up
    seconds = {name: statistics.median(timed(fn) for _ in range(repeats)) for name, fn in runs.items()}
    result = {"model": model_name, "batch_size": batch_size, "image_size": image_size, "device": str(device),
              "pgd_steps": steps, "seconds": seconds}
    result["relative_to_clean_step"] = {k: v / seconds["clean_step"] for k, v in seconds.items()}
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODEL_NAMES, default="SimpleNet")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    p.add_argument("--steps", type=int, default=10, help="PGD steps k (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3)
    add_device_flag(p)
    args = p.parse_args(argv)
    r = measure(args.model, args.batch_size, args.image_size, args.steps, args.repeats, get_device(args.device))
    print(f"{r['model']} batch {r['batch_size']} {r['image_size']}px on {r['device']}:")
    for name, sec in r["seconds"].items():
        print(f"  {name:11s} {sec:8.3f} s  = {r['relative_to_clean_step'][name]:5.2f} clean steps")
    k, rel = args.steps, r["relative_to_clean_step"]
    print(f"  PGD-{k} = {rel[f'pgd{k}'] / rel['input_grad']:.2f} input-gradient passes (floor: {k}); an adversarial "
          f"training step ~ {1 + rel[f'pgd{k}']:.2f} clean steps (target: about k + 1 = {k + 1} passes)")
    return r


if __name__ == "__main__":
    main()
