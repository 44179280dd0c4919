"""Plot a grid of real and fake samples of both datasets (the assignment's sample figure).

    python plot_samples_of_faces_dataset.py                      # -> figures/datasets_samples.png
    python plot_samples_of_faces_dataset.py --data-root /content/drive/MyDrive/Assignment4_datasets --n 6

Rows: for each dataset, its real samples then its fake samples (from the train split, evenly spaced).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cli import add_data_flags, add_output_flags, add_progress_flag, cli_main, positive_int, writable_dir
from common import CLASS_NAMES, DATASETS
from faces_dataset import FacesDataset, dataset_dir
from utils import new_figure, save_figure


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_flags(p, dataset=False)
    p.add_argument("--split", choices=("train", "val", "test"), default="train", help="split to sample (default: train)")
    p.add_argument("--n", type=positive_int, default=4, help="samples per row (default: %(default)s)")
    add_output_flags(p, figures="output folder")
    add_progress_flag(p)  # accepted for symmetry with the other scripts (no bars here)
    return p.parse_args(argv)


def pick_indices(labels: list[int], label: int, n: int) -> list[int]:
    """Up to n indices of samples with `label`, evenly spaced over that class."""
    idx = [i for i, y in enumerate(labels) if y == label]
    if len(idx) <= n:
        return idx
    return [idx[int(round(k))] for k in np.linspace(0, len(idx) - 1, n)]


def grid_rows(datasets: dict[str, FacesDataset], n: int) -> list[tuple[str, int, list[int]]]:
    """The figure's rows: for each dataset its reals then its fakes, as (dataset name, label, sample indices)."""
    return [(name, label, pick_indices(ds.labels, label, n)) for name, ds in datasets.items() for label in (0, 1)]


@cli_main
def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    writable_dir(args.figures_dir, "--figures-dir")
    datasets = {name: FacesDataset(dataset_dir(name, args.split, args.data_root)) for name in DATASETS}
    rows = grid_rows(datasets, args.n)
    fig, axes = new_figure(len(rows), args.n, figsize=(2.2 * args.n, 2.4 * len(rows)), squeeze=False)
    for row_axes, (name, label, indices) in zip(axes, rows):
        for ax in row_axes:
            ax.axis("off")
        for ax, i in zip(row_axes, indices):
            image, _ = datasets[name][i]
            ax.imshow(image)
            ax.set_title(f"{name}\n{CLASS_NAMES[label]}", fontsize=8)
    fig.suptitle(f"Samples of both datasets ({args.split} split; label 0 = real, 1 = fake)")
    return save_figure(fig, args.figures_dir / "datasets_samples.png")


if __name__ == "__main__":
    main()
