"""The detectors and their registry: SimpleNet, XceptionBased, ResNet50, EfficientNet-Lite0/2, MesoNet, the bonus model.

    python models.py            # prints every model's parameter count (no weights needed)

MODEL_SPECS maps each CLI name to its builder, the input normalisation and image size it expects, whether ImageNet
weights exist for it, and its Grad-CAM target layer; checkpoints record the name, so every script rebuilds the model.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from bonus_model import BonusNet
from checkpoints import checkpoint_model_name, load_weights, read_checkpoint
from common import IMAGE_SIZE
from mesonet import MESONET_IMAGE_SIZE, MESONET_NORM, Meso4, MesoInception4, is_keras_file, keras_checkpoint
from pretrained import efficientnet_lite_key_map, efficientnet_lite_weight_file, read_state_dict, resolve_pretrained_weights
from utils import (
    ASSIGNMENT_NORM,
    IMAGENET_NORM,
    Normalization,
    UserError,
    get_nof_params,
)
from xception import FEATURE_DIM, build_xception_backbone

RESNET50_FILES = ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth")
SIMPLENET_MIN_SIZE = 50  # three (7x7 conv, 2x2 pool) blocks: 50 -> 22 -> 8 -> 1


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
            raise ValueError(f"SimpleNet needs images of at least {SIMPLENET_MIN_SIZE} pixels, got {image_size}")
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
        model.load_state_dict(read_state_dict(path, "ResNet50"), strict=True)
    model.fc = nn.Linear(model.fc.in_features, 2)
    if freeze_backbone:
        _freeze_all_but(model, ("layer4.", "fc."))
    return model


def efficientnet_lite_imagenet(variant: str, pretrained: bool = True) -> nn.Module:
    """timm's tf_efficientnet_<variant> (TF 'same' padding, BatchNorm eps 1e-3, ReLU6: the layout the weights were
    trained in) with its 1000-class head, holding the registry package's ImageNet weights unless pretrained=False."""
    import timm  # imported here: only these models need it

    model = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False, num_classes=1000)
    if pretrained:
        state = read_state_dict(efficientnet_lite_weight_file(variant), f"EfficientNet-{variant.capitalize()}")
        model.load_state_dict(efficientnet_lite_key_map(state, [len(stage) for stage in model.blocks]), strict=True)
    return model


def get_efficientnet_lite_model(variant: str, pretrained: bool = True, freeze_backbone: bool = False) -> nn.Module:
    """EfficientNet-Lite with a 2-output head; freeze_backbone trains only the last two stages, the head conv and fc."""
    model = efficientnet_lite_imagenet(variant, pretrained)
    model.reset_classifier(2)
    if freeze_backbone:
        last = len(model.blocks)
        _freeze_all_but(model, (f"blocks.{last - 2}.", f"blocks.{last - 1}.", "conv_head.", "bn2.", "classifier."))
    return model


@dataclass(frozen=True)
class ModelSpec:
    """How to build a zoo model and what it expects."""

    build: Callable[..., nn.Module]  # build(pretrained=..., image_size=..., weights=..., freeze_backbone=...)
    norm: Normalization = ASSIGNMENT_NORM
    image_size: int = IMAGE_SIZE
    imagenet: bool = False  # ImageNet weights exist (--no-pretrained / --weights / --freeze-backbone / --backbone-lr-scale apply)
    cam_layer: Callable[[nn.Module], nn.Module] | None = None
    head: tuple[str, ...] = ()  # parameter-name prefixes of the new 2-output head (--backbone-lr-scale keeps them at --lr)


MODEL_SPECS: dict[str, ModelSpec] = {
    "SimpleNet": ModelSpec(lambda image_size=IMAGE_SIZE, **_: SimpleNet(image_size=image_size),
                           cam_layer=lambda m: m.conv3),
    "XceptionBased": ModelSpec(lambda pretrained=True, weights=None, freeze_backbone=False, **_: get_xception_based_model(
        pretrained, weights, freeze_backbone), imagenet=True, cam_layer=lambda m: m.conv4,  # the exit flow's last conv
        head=("fc.",)),
    "ResNet50": ModelSpec(lambda pretrained=True, weights=None, freeze_backbone=False, **_: get_resnet50_model(
        pretrained, weights, freeze_backbone), norm=IMAGENET_NORM, image_size=224, imagenet=True,
        cam_layer=lambda m: m.layer4[-1], head=("fc.",)),
    # bn2 = conv_head + BatchNorm + ReLU6: the last layer that keeps a spatial layout (7x7 at 224 px)
    "EfficientNetLite0": ModelSpec(lambda pretrained=True, freeze_backbone=False, **_: get_efficientnet_lite_model(
        "lite0", pretrained, freeze_backbone), norm=IMAGENET_NORM, image_size=224, imagenet=True, cam_layer=lambda m: m.bn2,
        head=("classifier.",)),
    "EfficientNetLite2": ModelSpec(lambda pretrained=True, freeze_backbone=False, **_: get_efficientnet_lite_model(
        "lite2", pretrained, freeze_backbone), norm=IMAGENET_NORM, image_size=260, imagenet=True, cam_layer=lambda m: m.bn2,
        head=("classifier.",)),
    # the published MesoNet detectors: random init here; their authors' Keras weights load from the .h5 (mesonet.py)
    "Meso4": ModelSpec(lambda image_size=MESONET_IMAGE_SIZE, **_: Meso4(image_size), norm=MESONET_NORM,
                       image_size=MESONET_IMAGE_SIZE, cam_layer=lambda m: m.cam_layer()),
    "MesoInception4": ModelSpec(lambda image_size=MESONET_IMAGE_SIZE, **_: MesoInception4(image_size), norm=MESONET_NORM,
                                image_size=MESONET_IMAGE_SIZE, cam_layer=lambda m: m.cam_layer()),
    "Bonus": ModelSpec(lambda **_: BonusNet(), cam_layer=lambda m: m.cam_layer()),
}
MODEL_NAMES = tuple(MODEL_SPECS)
PRETRAINED_MODELS = tuple(name for name, spec in MODEL_SPECS.items() if spec.imagenet)


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax of a batch of 2-output logits, in float32 whatever the autocast dtype: column 0 is P(real), 1 P(fake)."""
    return torch.softmax(logits.float(), dim=1)


def p_fake(logits: torch.Tensor) -> torch.Tensor:
    """P(fake) of each row of a batch of 2-output logits (label 1 = fake): the score every metric, threshold and
    verdict of the suite uses."""
    return class_probabilities(logits)[:, 1]


def build_model(name: str, pretrained: bool = True, image_size: int = IMAGE_SIZE, **kwargs: Any) -> nn.Module:
    """Build a model by its CLI name; `pretrained`, `weights` and `freeze_backbone` apply to the ImageNet backbones.

    The model carries its name and input normalisation (model.model_name, model.normalization).
    """
    if name not in MODEL_SPECS:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    spec = MODEL_SPECS[name]
    model = spec.build(pretrained=pretrained, image_size=image_size, **kwargs)
    model.model_name = name
    model.normalization = spec.norm
    return model


def cam_target_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM looks at: the last convolutional block, whose maps still keep a spatial layout."""
    spec = MODEL_SPECS.get(getattr(model, "model_name", ""))
    if spec is not None and spec.cam_layer is not None:
        return spec.cam_layer(model)
    if isinstance(model, SimpleNet):
        return model.conv3
    if hasattr(model, "cam_layer"):
        return model.cam_layer()
    raise TypeError(f"no Grad-CAM target layer is known for {type(model).__name__}")


def load_model_from_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", expected_model: str | None = None, advice: str | None = None,
    into: nn.Module | None = None,
) -> tuple[nn.Module, dict]:
    """The one checkpoint loader: a ready model from a checkpoint of train_main.py (or a bare {'model': state_dict} of
    the assignment, or the MesoNet authors' Keras .h5 file), in eval mode on `device`, carrying its weights,
    normalisation (model.normalization), input size (model.image_size), decision threshold (model.decision_threshold)
    and name (model.model_name); returned with the checkpoint dict (run record, framing).

    With `into`, the weights go into that model as it is (train_main.py --init-from) instead of a new one. Raises a
    UserError when the file is missing, unreadable, unsafe, or holds another architecture than `expected_model`
    (`advice` replaces the "pass -m" hint), and a WeightsMismatch when its weights do not fit.
    """
    ckpt = keras_checkpoint(path) if is_keras_file(path) else read_checkpoint(path, device)
    name = checkpoint_model_name(ckpt, path, expected_model, advice)
    if into is not None:
        return load_weights(into, ckpt, path, name), ckpt
    kwargs = {k: v for k, v in dict(ckpt.get("model_kwargs", {})).items() if k in ("image_size",)}
    model = load_weights(build_model(name, pretrained=False, **kwargs), ckpt, path, name)  # sets its normalisation
    model.image_size = checkpoint_image_size(ckpt)
    return model.to(device).eval(), ckpt


def checkpoint_image_size(ckpt: dict) -> int:
    """The input size a loaded checkpoint was trained at (the assignment's 256 for bare state dicts)."""
    return int(ckpt.get("model_kwargs", {}).get("image_size", IMAGE_SIZE))


def main() -> None:
    """Print parameter counts, for the report's questions on model size."""
    for name in MODEL_NAMES:
        print(f"{name:17s} {get_nof_params(build_model(name, pretrained=False)):>12,d} parameters")
    print(f"{'Xception':17s} {get_nof_params(build_xception_backbone(pretrained=False)):>12,d} parameters (1000-class fc)")
    print(f"the MLP head adds {mlp_head_extra_params():,d} parameters over Xception's fc")


if __name__ == "__main__":
    main()
