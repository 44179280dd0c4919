"""Evaluate the bonus model as the assignment does: test AUC on fakes_dataset and the number of parameters.

    python train_main.py -d fakes_dataset -m Bonus --lr 0.01 -e 12   # trains it and publishes checkpoints/bonus.pt
    python bonus_main.py                                       # prints AUC and parameter count
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sklearn.metrics import roc_auc_score

from analysis import get_soft_scores_and_true_labels
from bonus_model import BONUS_ADVICE
from cli import add_data_flags, add_device_flag, add_progress_flag, cli_main, positive_int
from common import BONUS_CHECKPOINT
from detector import load_model_from_checkpoint
from faces_dataset import load_dataset
from utils import get_device, get_nof_params


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=BONUS_CHECKPOINT, help="bonus checkpoint (default: %(default)s)")
    add_data_flags(p, dataset=False)
    p.add_argument("--image-size", type=positive_int, help="input side in pixels (default: the size the model was trained at)")
    add_device_flag(p)
    p.add_argument("--limit", type=positive_int, help="use at most this many test images")
    add_progress_flag(p)
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = get_device(args.device)
    detector = load_model_from_checkpoint(args.checkpoint, device, "Bonus", BONUS_ADVICE)  # my_bonus_model() is its module
    model = detector.module
    image_size = args.image_size or detector.image_size
    test_dataset = load_dataset("fakes_dataset", "test", args.data_root, image_size, args.limit, detector.normalization)
    _, fake_scores, labels = get_soft_scores_and_true_labels(test_dataset, model, device=device, progress=not args.no_progress)
    result = {"auc": float(roc_auc_score(labels, fake_scores)), "n_params": get_nof_params(model)}
    print(f"Bonus model: test AUC {result['auc']:.4f} on fakes_dataset, {result['n_params']:,d} parameters")
    return result


if __name__ == "__main__":
    main()
