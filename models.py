"""The detectors: SimpleNet, the Xception backbone with an MLP head, ResNet50, the compact bonus model; checkpoint loading.

    python models.py            # prints every model's parameter count (no weights needed)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from common import IMAGE_SIZE
from utils import UserError, get_device, get_nof_params, load_dataset, resolve_pretrained_weights, set_seed
from xception import FEATURE_DIM, build_xception_backbone

RESNET50_FILES = ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth")


class SimpleNet(nn.Module):
    """The assignment's network: three 7x7 conv + ReLU + 2x2 max-pool blocks, then 1024-256-2 fully connected layers.

    At 256x256 the flattened map is 24*26*26 and the model has 16,901,762 parameters (almost all in fc1);
    `image_size` adapts fc1 to other input sizes (tests use 64x64).
    """

    def __init__(self, image_size: int = IMAGE_SIZE):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 7)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 7)
        self.conv3 = nn.Conv2d(16, 24, 7)
        side = image_size
        for _ in range(3):
            side = (side - 6) // 2
        if side < 1:
            raise ValueError(f"SimpleNet needs images of at least 46 pixels, got {image_size}")
        self.flat_features = 24 * side * side
        self.fc1 = nn.Linear(self.flat_features, 1024)
        self.fc2 = nn.Linear(1024, 256)
        self.fc3 = nn.Linear(256, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(image)))
        x = self.pool(F.relu(self.conv2(x)))
        x = self.pool(F.relu(self.conv3(x)))
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def mlp_head() -> nn.Sequential:
    """The assignment's head: 2048 -> 1000 -> ReLU -> 256 -> ReLU -> 64 -> ReLU -> 2."""
    return nn.Sequential(
        nn.Linear(FEATURE_DIM, 1000), nn.ReLU(), nn.Linear(1000, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 2)
    )


def _freeze_all_but(model: nn.Module, trainable_prefixes: tuple[str, ...]) -> None:
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(trainable_prefixes)


def get_xception_based_model(pretrained: bool = True, weights: str | Path | None = None, freeze_backbone: bool = False) -> nn.Module:
    """ImageNet Xception with its `fc` replaced by the MLP head (23,128,786 parameters)."""
    model = build_xception_backbone(pretrained=pretrained, weights=weights)
    model.fc = mlp_head()
    if freeze_backbone:  # train the exit flow's last block, its convs and the head only
        _freeze_all_but(model, ("block12.", "conv3.", "bn3.", "conv4.", "bn4.", "fc."))
    return model


def mlp_head_extra_params() -> int:
    """Parameters the MLP head adds over Xception's original 2048x1000 fc (272,834)."""
    return get_nof_params(mlp_head()) - get_nof_params(nn.Linear(FEATURE_DIM, 1000))


def get_resnet50_model(pretrained: bool = True, weights: str | Path | None = None, freeze_backbone: bool = False) -> nn.Module:
    """torchvision ResNet50 (ImageNet weights found like Xception's) with `fc` -> 2 outputs."""
    model = resnet50(weights=None)
    if pretrained:
        path = resolve_pretrained_weights("ResNet50", RESNET50_FILES, ResNet50_Weights.IMAGENET1K_V2.url, weights)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    model.fc = nn.Linear(model.fc.in_features, 2)
    if freeze_backbone:
        _freeze_all_but(model, ("layer4.", "fc."))
    return model


def build_model(name: str, pretrained: bool = True, image_size: int = IMAGE_SIZE, **kwargs: Any) -> nn.Module:
    """Build a model by its CLI name; `pretrained`, `weights` and `freeze_backbone` apply to the ImageNet backbones."""
    from bonus_model import BonusNet  # local import: bonus_model imports this module's helpers

    if name == "SimpleNet":
        return SimpleNet(image_size=image_size)
    if name == "XceptionBased":
        return get_xception_based_model(pretrained=pretrained, **kwargs)
    if name == "ResNet50":
        return get_resnet50_model(pretrained=pretrained, **kwargs)
    if name == "Bonus":
        return BonusNet()
    raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


MODEL_NAMES = ("SimpleNet", "XceptionBased", "ResNet50", "Bonus")
PRETRAINED_MODELS = ("XceptionBased", "ResNet50")


def cam_target_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM looks at: the last convolutional block, whose maps still keep a spatial layout."""
    if isinstance(model, SimpleNet):
        return model.conv3
    if hasattr(model, "conv4") and hasattr(model, "block12"):  # Xception family: the exit flow's last conv
        return model.conv4
    if hasattr(model, "layer4"):  # ResNet
        return model.layer4[-1]
    if hasattr(model, "cam_layer"):
        return model.cam_layer()
    raise TypeError(f"no Grad-CAM target layer is known for {type(model).__name__}")


def load_model_from_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", expected_model: str | None = None
) -> tuple[nn.Module, dict]:
    """Rebuild a model from a checkpoint of train_main.py (or a bare {'model': state_dict} of the assignment).

    Raises a UserError when the file is missing, unreadable, or holds another architecture than `expected_model`.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; train it first with train_main.py (see README)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # torch raises many types for a truncated or foreign file
        raise UserError(f"cannot read checkpoint {path} ({type(err).__name__}: {err}); is it a torch checkpoint?") from err
    if isinstance(ckpt, dict) and "model" not in ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        ckpt = {"model": ckpt}  # a bare state dict
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UserError(f"checkpoint {path} holds no model state (expected a dict with a 'model' entry)")
    name = ckpt.get("model_name", expected_model)
    if name is None:
        raise UserError(f"checkpoint {path} does not say which model it holds; pass -m MODEL")
    if expected_model is not None and name != expected_model:
        raise UserError(f"checkpoint {path} holds a {name} model, not {expected_model}; pass -m {name} or another checkpoint")
    kwargs = dict(ckpt.get("model_kwargs", {}))
    kwargs["pretrained"] = False  # the checkpoint carries the weights
    model = build_model(name, **kwargs)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise UserError(f"checkpoint {path} does not fit the {name} architecture ({first}); pass the matching -m") from err
    return model.to(device).eval(), ckpt


def checkpoint_image_size(ckpt: dict) -> int:
    """The input size a loaded checkpoint was trained at (the assignment's 256 for bare state dicts)."""
    return int(ckpt.get("model_kwargs", {}).get("image_size", IMAGE_SIZE))


def load_analysis_inputs(args: Any) -> tuple[nn.Module, torch.utils.data.Dataset, torch.device]:
    """For the analysis scripts: seed, device, the checkpoint's model (eval mode) and the test split at its image size."""
    set_seed(args.seed)
    device = get_device(args.device)
    model, ckpt = load_model_from_checkpoint(args.checkpoint_path, device, expected_model=args.model)
    dataset = load_dataset(args.dataset, "test", args.data_root, checkpoint_image_size(ckpt), args.limit)
    return model, dataset, device


def main() -> None:
    """Print parameter counts, for the report's questions on model size."""
    for name in MODEL_NAMES:
        print(f"{name:14s} {get_nof_params(build_model(name, pretrained=False)):>12,d} parameters")
    print(f"{'Xception':14s} {get_nof_params(build_xception_backbone(pretrained=False)):>12,d} parameters (1000-class fc)")
    print(f"the MLP head adds {mlp_head_extra_params():,d} parameters over Xception's fc")


if __name__ == "__main__":
    main()
