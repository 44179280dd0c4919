"""Image-specific class saliency (Simonyan et al., 2013, arXiv:1312.6034): which pixels move the true-class score.

    python saliency_map.py -m SimpleNet -cpp checkpoints/fakes_dataset_SimpleNet_Adam.pt -d fakes_dataset
    python saliency_map.py -m XceptionBased -cpp checkpoints/synthetic_dataset_XceptionBased_Adam.pt -d synthetic_dataset

Writes figures/<dataset>_<model>_saliency_maps_and_images_pairs.png (test images above their saliency maps) and
figures/<dataset>_<model>_mean_saliency_maps.png (the mean map over real and over fake test images).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from analysis import add_analysis_args, analysis_inputs_from_flags
from cli import cli_main, positive_int
from common import CLASS_NAMES
from models import MODEL_NAMES
from normalization import to_display
from utils import frozen_eval, make_loader, new_figure, sample_batch, save_figure


def compute_gradient_saliency_maps(samples: torch.Tensor, true_labels: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Saliency (B,H,W): max over colour channels of |d score_true_class / d pixel| for samples (B,3,H,W).

    The model is evaluated in eval mode; its mode, requires_grad flags and parameter .grad are left untouched.
    """
    with frozen_eval(model):
        x = samples.detach().clone().requires_grad_(True)
        scores = model(x).gather(1, true_labels.view(-1, 1).to(x.device)).sum()
        (grad,) = torch.autograd.grad(scores, x)
    return grad.abs().amax(dim=1)


def mean_saliency_per_class(model: nn.Module, dataset, batch_size: int, device: torch.device, progress: bool = True,
                            num_workers: int | None = None) -> dict[int, np.ndarray]:
    """Mean saliency map (H,W) of the real (0) and fake (1) images of a dataset."""
    sums: dict[int, torch.Tensor] = {}
    counts = {0: 0, 1: 0}
    loader = make_loader(dataset, batch_size, False, device, num_workers)
    for images, labels in tqdm(loader, desc="saliency", leave=False, disable=not progress):
        maps = compute_gradient_saliency_maps(images.to(device), labels.to(device), model).cpu()
        for c in (0, 1):
            sel = maps[labels == c]
            if len(sel):
                sums[c] = sums.get(c, 0) + sel.sum(dim=0)
                counts[c] += len(sel)
    return {c: (sums[c] / counts[c]).numpy() for c in sums}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_analysis_args(p, MODEL_NAMES)
    p.add_argument("--n-pairs", type=positive_int, default=8, help="image/saliency pairs in the grid (default: %(default)s)")
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> list:
    args = parse_args(argv)
    inputs = analysis_inputs_from_flags(args)
    model, test_dataset, device = inputs.model, inputs.dataset, inputs.device
    norm, model_name = inputs.detector.normalization, inputs.detector.name
    prefix = args.figures_dir / inputs.prefix

    images, labels = sample_batch(test_dataset, min(args.n_pairs, len(test_dataset)), args.seed)
    maps = compute_gradient_saliency_maps(images.to(device), labels.to(device), model).cpu()
    with torch.no_grad():
        predicted = model(images.to(device)).argmax(1).cpu()
    n = len(images)
    fig, axes = new_figure(2, n, figsize=(2.1 * n, 4.6), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(to_display(images[i], norm))
        axes[0, i].set_title(f"true {CLASS_NAMES[labels[i]]}\npred {CLASS_NAMES[predicted[i]]}", fontsize=8)
        axes[1, i].imshow(maps[i].numpy(), cmap="hot")
        for ax in axes[:, i]:
            ax.axis("off")
    fig.suptitle(f"{model_name} on {inputs.dataset_name}: images and their saliency maps (|grad| of the true-class score)")
    pairs = save_figure(fig, f"{prefix}_saliency_maps_and_images_pairs.png", inputs.provenance)

    means = mean_saliency_per_class(model, test_dataset, args.batch_size, device, not args.no_progress, args.num_workers)
    if len(means) == 1:
        (only,) = means
        print(f"note: the {inputs.dataset_name} test split holds {CLASS_NAMES[only]} images only; the mean saliency "
              "figure shows that class alone")
    fig, axes = new_figure(1, len(means), figsize=(4.2 * len(means), 4.4), squeeze=False)
    for ax, (c, m) in zip(axes[0], sorted(means.items())):
        shown = ax.imshow(m, cmap="hot")
        ax.set_title(f"mean saliency: {CLASS_NAMES[c]} test images")
        ax.axis("off")
        fig.colorbar(shown, ax=ax, fraction=0.046)
    mean_path = save_figure(fig, f"{prefix}_mean_saliency_maps.png", inputs.provenance)
    return [pairs, mean_path]


if __name__ == "__main__":
    main()
