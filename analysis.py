"""The analysis scripts' shared front half: their flags, the checkpoint's model with the test split it is scored on, the
scorer, and the CAM helpers.

numerical_analysis.py, saliency_map.py, grad_cam_analysis.py and robustness_analysis.py start here; bonus_main.py,
detect.py and tools/cross_eval.py use the scorer or the CAMs. Living in one module, none of them imports another script.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from cli import (
    UserError,
    add_batch_size_flag,
    add_checkpoint_flag,
    add_data_flags,
    add_device_flag,
    add_output_flags,
    add_progress_flag,
    add_workers_flag,
    positive_int,
    writable_dir,
)
from common import BONUS_CHECKPOINT, DEFAULT_SEED, OPTIMIZERS, run_name
from detector import Detector, load_model_from_checkpoint
from faces_dataset import catalog_run_name, load_dataset
from metrics import equal_error_rate
from models import cam_target_layer, class_probabilities
from normalization import Normalization, to_display
from utils import get_device, make_loader, set_seed


def add_analysis_args(parser: argparse.ArgumentParser, model_names: tuple[str, ...]) -> None:
    """The flags every analysis script shares: the assignment's -m/-cpp/-d plus data, device, seed and output.

    -m is optional: the checkpoint names its model, and a -m that contradicts it is an error.
    """
    parser.add_argument("-m", "--model", choices=model_names, help="model name (checked against the checkpoint)")
    add_checkpoint_flag(parser, help="checkpoint written by train_main.py, e.g. checkpoints/fakes_dataset_SimpleNet_Adam.pt "
                        "(or MesoNet's .h5, or a fused detector's .fused.json)")
    add_data_flags(parser)
    parser.add_argument("--catalog", type=Path, help="evaluate the test rows of a catalog.csv of tools/face_preprocess.py "
                        "instead of -d's test split (numerical_analysis.py then also scores each source video)")
    add_device_flag(parser)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed for sampling images (default: %(default)s)")
    parser.add_argument("--limit", type=positive_int, help="use at most this many test images")
    add_batch_size_flag(parser)
    add_workers_flag(parser)
    add_output_flags(parser, figures="output folder")
    add_progress_flag(parser)


@dataclass(frozen=True)
class AnalysisInputs:
    """What an analysis script works on, resolved from its flags."""

    detector: Detector  # the checkpoint's detector: its module in eval mode on `device`, its size and normalisation
    dataset: Dataset  # the test split (of -d or of --catalog) at the detector's image size and normalisation
    device: torch.device
    dataset_name: str  # -d, or catalog-<folder> for --catalog: names the script's outputs

    @property
    def model(self) -> nn.Module:
        return self.detector.module

    @property
    def prefix(self) -> str:
        """The stem of the script's outputs: the assignment's <dataset>_<model> for the run's own checkpoint
        (<dataset>_<model>_<optimizer>.pt, or the published bonus.pt), else <dataset>_<model>__<checkpoint stem>, so a
        second checkpoint of the same model never replaces the first one's figures and metrics."""
        return output_prefix(self.dataset_name, self.detector)

    @property
    def provenance(self) -> dict[str, str]:
        """What the outputs were made from, written into every figure and metrics file."""
        return provenance(self.detector)


def output_prefix(dataset_name: str, detector: Detector) -> str:
    """See AnalysisInputs.prefix; a variant's own checkpoint (<dataset>_<model>_<opt>_<tag>.pt, the tag its record
    names, e.g. advpgd) gives <dataset>_<model>_<tag>."""
    tag = (detector.record or {}).get("tag") or "" if isinstance(detector.record, dict) else ""
    stem = detector.path.stem if detector.path is not None else ""
    own = {run_name(dataset_name, detector.name, optimizer, tag) for optimizer in OPTIMIZERS}
    if stem in own or (detector.name == "Bonus" and stem == BONUS_CHECKPOINT.stem):
        return run_name(dataset_name, detector.name, tag=tag)
    return f"{run_name(dataset_name, detector.name)}__{stem}"


def provenance(detector: Detector) -> dict[str, str]:
    """The checkpoint a figure or metrics file comes from: its path, SHA-256 and training run id."""
    run_id = (detector.record or {}).get("run_id") if isinstance(detector.record, dict) else None
    return {"Checkpoint": str(detector.path), "Checkpoint SHA-256": detector.sha256 or "", "Run id": run_id or ""}


def load_analysis_inputs(checkpoint: Path, *, dataset: str | None, data_root: Path, catalog: Path | None = None,
                         device: str = "auto", seed: int = DEFAULT_SEED, limit: int | None = None,
                         figures_dir: Path | None = None, expected_model: str | None = None) -> AnalysisInputs:
    """Seed, device, the checkpoint's detector and the test split it is scored on, once `figures_dir` is known
    writable; an `expected_model` (-m) that contradicts the checkpoint, or neither a dataset nor a catalog, is a
    UserError."""
    if figures_dir is not None:  # before minutes of loading and scoring, not after
        writable_dir(figures_dir, "--figures-dir")
    if catalog is None and dataset is None:
        raise UserError("pass -d DATASET (or --catalog CSV) to say which test split to evaluate")
    dataset_name = dataset if catalog is None else catalog_run_name(catalog)
    set_seed(seed)
    torch_device = get_device(device)
    detector = load_model_from_checkpoint(checkpoint, torch_device, expected_model=expected_model)
    split = load_dataset(dataset_name, "test", data_root, detector.image_size, limit, detector.normalization, catalog=catalog)
    return AnalysisInputs(detector, split, torch_device, dataset_name)


def analysis_inputs_from_flags(args: argparse.Namespace) -> AnalysisInputs:
    """load_analysis_inputs with the values of the flags add_analysis_args declared."""
    return load_analysis_inputs(args.checkpoint_path, dataset=args.dataset, data_root=args.data_root, catalog=args.catalog,
                                device=args.device, seed=args.seed, limit=args.limit, figures_dir=args.figures_dir,
                                expected_model=args.model)


@torch.no_grad()
def get_soft_scores_and_true_labels(
    dataset: Dataset, model: nn.Module, batch_size: int = 32, device: torch.device | str = "cpu", progress: bool = True,
    num_workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(softmax of output 0, softmax of output 1, true labels) over the whole dataset, in dataset order (the
    assignment's scorer; the model is left in eval mode, as the assignment's code leaves it)."""
    model.eval()
    first, second, labels = [], [], []
    loader = make_loader(dataset, batch_size, shuffle=False, device=torch.device(device), num_workers=num_workers)
    for images, y in tqdm(loader, desc="scoring", disable=not progress, leave=False):
        probs = class_probabilities(model(images.to(device))).cpu()
        first.append(probs[:, 0])
        second.append(probs[:, 1])
        labels.append(y)
    return torch.cat(first).numpy(), torch.cat(second).numpy(), torch.cat(labels).numpy()


def eer_threshold_on(dataset: Dataset, model: nn.Module, device: torch.device | str, what: str, batch_size: int = 32,
                     progress: bool = True) -> float:
    """The model's EER threshold on P(fake) over a labelled set (a val split, a folder of the user's face crops), for
    a decision threshold fitted to data like the data it will judge; `what` names the set when it holds one class."""
    _, scores, labels = get_soft_scores_and_true_labels(dataset, model, batch_size, device, progress)
    if len(np.unique(labels)) < 2:
        raise UserError(f"{what} holds one class only, so its EER threshold is undefined; it needs real and fake images")
    return equal_error_rate(labels, scores)[1]


# ---- class activation maps (grad_cam_analysis.py, detect.py --cam) ----------------------------------------------------
METHOD_NAMES = ("gradcam", "gradcam++", "xgradcam", "scorecam", "eigencam", "hirescam", "layercam")


def cam_methods() -> dict:
    """CLI name -> pytorch-grad-cam class (imported here: the package takes seconds to import)."""
    import pytorch_grad_cam as pgc

    return {
        "gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM, "scorecam": pgc.ScoreCAM,
        "eigencam": pgc.EigenCAM, "hirescam": pgc.HiResCAM, "layercam": pgc.LayerCAM,
    }


def compute_cams(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, name: str,
                 method: str = "gradcam") -> np.ndarray:
    """CAMs (B,H,W) in [0,1] of `classes` for normalised images (B,3,H,W), at the target layer of model `name`,
    computed in eval mode; the model's mode is restored afterwards, and an error inside the CAM is raised."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    was_training = model.training
    model.eval()
    cam = cam_methods()[method](model=model, target_layers=[cam_target_layer(model, name)])
    try:  # not pytorch-grad-cam's `with`: its __exit__ swallows an IndexError, and the call would return None
        return cam(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    finally:
        cam.activations_and_grads.release()
        model.train(was_training)


def overlay(image: torch.Tensor, cam: np.ndarray, norm: Normalization) -> np.ndarray:
    """The CAM drawn over a normalised (3,H,W) image (undone with the model's `norm`): (H,W,3) uint8 in [0,255]."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(to_display(image, norm), cam, use_rgb=True)
