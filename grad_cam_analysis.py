"""Grad-CAM (Selvaraju et al., 2017, arXiv:1610.02391) of a trained detector, with the pytorch-grad-cam package.

    python grad_cam_analysis.py -m SimpleNet -cpp checkpoints/fakes_dataset_SimpleNet_Adam.pt -d fakes_dataset
    python grad_cam_analysis.py -m XceptionBased -cpp checkpoints/synthetic_dataset_XceptionBased_Adam.pt -d synthetic_dataset
    python grad_cam_analysis.py ... --method gradcam++        # or scorecam, xgradcam, eigencam, hirescam, layercam

Target layer per model (models.cam_target_layer): SimpleNet conv3, XceptionBased conv4 (exit flow), ResNet50 layer4,
Bonus its last separable block. Writes figures/<dataset>_<model>_Real_Image_grad_cam.png and ..._Fake_Image_grad_cam.png
(other methods replace "grad_cam" by the method's name): sampled test images of that class, each above its CAM overlay.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from analysis import METHOD_NAMES, add_analysis_args, analysis_inputs_from_flags, compute_cams, overlay
from cli import UserError, cli_main, positive_int
from common import CLASS_NAMES
from faces_dataset import dataset_labels
from models import MODEL_NAMES, p_fake
from normalization import ASSIGNMENT_NORM, Normalization, to_display
from utils import new_figure, save_figure


def get_grad_cam_visualization(test_dataset: Dataset, model: nn.Module, method: str = "gradcam",
                               generator: torch.Generator | None = None, name: str = "SimpleNet",
                               norm: Normalization = ASSIGNMENT_NORM) -> tuple[np.ndarray, torch.Tensor]:
    """Grad-CAM of one random test image for its true class: (visualization (H,W,3) uint8 in [0,255], label of shape
    (1,)). `name` and `norm` say which model it is and how its inputs are scaled (default: the assignment's SimpleNet)."""
    loader = DataLoader(test_dataset, batch_size=1, shuffle=True, generator=generator)
    image, true_label = next(iter(loader))
    device = next(model.parameters()).device
    cam = compute_cams(model, image.to(device), true_label, name, method)[0]
    return overlay(image[0], cam, norm), true_label


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_analysis_args(p, MODEL_NAMES)
    p.add_argument("--method", choices=METHOD_NAMES, default="gradcam", help="CAM method (default: %(default)s)")
    p.add_argument("--n", type=positive_int, default=4, help="images per figure (default: %(default)s)")
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> list:
    args = parse_args(argv)
    inputs = analysis_inputs_from_flags(args)
    model, test_dataset, device = inputs.model, inputs.dataset, inputs.device
    norm, model_name = inputs.detector.normalization, inputs.detector.name
    labels = np.asarray(dataset_labels(test_dataset))
    rng = np.random.default_rng(args.seed)
    suffix = "grad_cam" if args.method == "gradcam" else args.method.replace("++", "_plus_plus")
    written = []
    for c, cls in enumerate(CLASS_NAMES):
        pool = np.flatnonzero(labels == c)
        if len(pool) == 0:
            raise UserError(f"the {inputs.dataset_name} test split holds no {cls} images")
        chosen = rng.choice(pool, size=min(args.n, len(pool)), replace=False)
        images = torch.stack([test_dataset[int(i)][0] for i in chosen])
        with torch.no_grad():
            probs = p_fake(model(images.to(device))).cpu()
        cams = compute_cams(model, images.to(device), torch.full((len(chosen),), c), model_name, args.method)
        fig, axes = new_figure(2, len(chosen), figsize=(2.6 * len(chosen), 5.4), squeeze=False)
        for k in range(len(chosen)):
            axes[0, k].imshow(to_display(images[k], norm))
            axes[0, k].set_title(f"P(fake) = {probs[k]:.2f}", fontsize=8)
            axes[1, k].imshow(overlay(images[k], cams[k], norm))
            for ax in axes[:, k]:
                ax.axis("off")
        fig.suptitle(f"{args.method} of {model_name} on {inputs.dataset_name}: {cls} test images (target class: {cls})")
        written.append(save_figure(fig, args.figures_dir / f"{inputs.prefix}_{cls.capitalize()}_Image_{suffix}.png",
                                   inputs.provenance))
    return written


if __name__ == "__main__":
    main()
