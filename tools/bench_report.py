"""Performance report: training / inference images per second per model, data loading, Trainer overhead.

    python tools/bench_report.py                      # batch 32 at 256x256 on the current device -> out/bench.json
    python tools/bench_report.py --models SimpleNet Bonus --steps 2

Model throughput uses a random batch (compute only, the median of --steps timed steps after one warm-up). Data
loading reads FacesDataset images (decode + the model's eval transform) through the DataLoader for each decoder
(Pillow, torchvision.io), with the suite's worker count and with workers=0. The Trainer's overhead is
tools/bench_train.py's ratio against a bare loop over the same data and decoder.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from benchmarking import compare, random_batch_setup, timed
from cli import add_data_flags, add_device_flag
from common import DEFAULT_BATCH_SIZE, IMAGE_SIZE, OUT_DIR
from faces_dataset import DECODERS, load_dataset
from files import atomic_write_json
from utils import default_num_workers, get_device, get_nof_params, make_loader


def model_throughput(name: str, batch_size: int, image_size: int, steps: int, device: torch.device) -> dict:
    """Training and inference images/second of one model on random batches."""
    model, x, _, train_step = random_batch_setup(name, batch_size, image_size, device)

    def infer_step() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    result = {"params": get_nof_params(model)}
    for key, fn in (("train_img_s", train_step), ("infer_img_s", infer_step)):
        fn()
        result[key] = batch_size / statistics.median(timed(fn) for _ in range(steps))
    return result


def loading_throughput(data_root: Path, batch_size: int, image_size: int, limit: int, device: torch.device,
                       rounds: int = 3) -> dict:
    """Images/second FacesDataset delivers through the DataLoader per decoder, with the default workers and with none
    (the best of `rounds` passes, so the page cache is warm for every decoder alike)."""
    result = {}
    for decoder in DECODERS:
        dataset = load_dataset("fakes_dataset", "train", data_root, image_size, limit, decoder=decoder)
        for workers in sorted({0, default_num_workers()}):
            loader = make_loader(dataset, batch_size, False, device, workers)
            best = min(timed(lambda: [None for _ in loader]) for _ in range(rounds))  # noqa: B023
            result[f"{decoder}_workers_{workers}_img_s"] = len(dataset) / best
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["SimpleNet", "XceptionBased", "Bonus"])
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    p.add_argument("--steps", type=int, default=3, help="timed steps per model (default: %(default)s)")
    add_data_flags(p, dataset=False, root_help="needs fakes_dataset/train")
    p.add_argument("--limit", type=int, default=128, help="images for the loading and overhead runs (default: %(default)s)")
    add_device_flag(p)
    p.add_argument("--out", type=Path, default=OUT_DIR / "bench.json")
    args = p.parse_args(argv)
    device = get_device(args.device)
    report = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "batch_size": args.batch_size, "image_size": args.image_size, "models": {}}
    for name in args.models:
        report["models"][name] = model_throughput(name, args.batch_size, args.image_size, args.steps, device)
        m = report["models"][name]
        print(f"{name:14s} {m['params']:>12,d} params  train {m['train_img_s']:8.1f} img/s  infer {m['infer_img_s']:8.1f} img/s")
    report["loading"] = loading_throughput(args.data_root, args.batch_size, args.image_size, args.limit, device)
    print("data loading: " + ", ".join(f"{k.replace('_img_s', '')} {v:.0f} img/s" for k, v in report["loading"].items()))
    report["trainer_overhead"] = compare("SimpleNet", args.data_root, args.limit, args.batch_size, args.image_size, 2, device)
    print(f"Trainer vs bare loop (SimpleNet): ratio {report['trainer_overhead']['ratio']:.3f} (target >= 0.9)")
    atomic_write_json(args.out, report)
    print(f"saved {args.out}")
    print(json.dumps({"device": report["device"], "threads": report["threads"]}))
    return report


if __name__ == "__main__":
    main()
