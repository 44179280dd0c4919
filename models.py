"""The detectors and their registry: SimpleNet, XceptionBased, ResNet50, EfficientNet-Lite0/2, MesoNet, the bonus model.

    python models.py            # prints every model's parameter count (no weights needed)

MODEL_SPECS maps each CLI name to its builder (whose explicit keyword arguments are the options the model takes), the
input normalisation and image size it expects, and its Grad-CAM target layer; checkpoints record the name, so the
loader (detector.py) rebuilds the model. The score every metric, threshold and verdict uses is p_fake.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from cli import UserError
from common import IMAGE_SIZE
from mesonet import MESONET_IMAGE_SIZE, MESONET_NORM, Meso4, MesoInception4
from normalization import ASSIGNMENT_NORM, IMAGENET_NORM, Normalization
from pretrained import efficientnet_lite_key_map, efficientnet_lite_weight_file, read_state_dict, resolve_pretrained_weights
from utils import get_nof_params
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


def _separable(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 (stride) + pointwise 1x1, each with BatchNorm, ReLU after."""
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False),
        nn.BatchNorm2d(in_ch),
        nn.Conv2d(in_ch, out_ch, 1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class BonusNet(nn.Module):
    """The bonus detector (bonus_model.py): stem 3->16 (stride 2), five depthwise-separable blocks down to 1/64,
    global average pool, dropout, linear 128->2; 27,826 parameters.

    Designed for artefacts rather than semantics: a face swap leaves seams, blur and colour shifts, a GAN periodic
    upsampling traces; all are local, so a narrow stack of separable blocks with BatchNorm and global pooling sees
    enough, and no large fully connected layer is needed (SimpleNet spends 98 % of its 16.9 M parameters in fc1).
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 48, 64, 96, 128), dropout: float = 0.2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[_separable(a, b, 2) for a, b in zip(widths[:-1], widths[1:])])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(widths[-1], 2))

    def cam_layer(self) -> nn.Module:
        """Grad-CAM target: the last separable block."""
        return self.blocks[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


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
    """How to build a zoo model and what it expects. `build` takes only the options the model has (its explicit
    keyword arguments among MODEL_OPTIONS); build_model refuses any other."""

    build: Callable[..., nn.Module]
    norm: Normalization = ASSIGNMENT_NORM
    image_size: int = IMAGE_SIZE
    cam_layer: Callable[[nn.Module], nn.Module] | None = None
    head: tuple[str, ...] = ()  # parameter-name prefixes of the new 2-output head (--backbone-lr-scale keeps them at --lr)

    @property
    def options(self) -> frozenset[str]:
        """The build options this model takes (image_size, pretrained, weights, freeze_backbone)."""
        return frozenset(inspect.signature(self.build).parameters) & MODEL_OPTIONS

    @property
    def imagenet(self) -> bool:
        """ImageNet weights exist for it (--no-pretrained, --freeze-backbone and --backbone-lr-scale apply)."""
        return "pretrained" in self.options


MODEL_OPTIONS = frozenset({"image_size", "pretrained", "weights", "freeze_backbone"})


def _simplenet(image_size: int) -> nn.Module:
    return SimpleNet(image_size)


def _xception_based(pretrained: bool, weights: Path | None, freeze_backbone: bool) -> nn.Module:
    return get_xception_based_model(pretrained, weights, freeze_backbone)


def _resnet50(pretrained: bool, weights: Path | None, freeze_backbone: bool) -> nn.Module:
    return get_resnet50_model(pretrained, weights, freeze_backbone)


def _lite0(pretrained: bool, freeze_backbone: bool) -> nn.Module:
    return get_efficientnet_lite_model("lite0", pretrained, freeze_backbone)


def _lite2(pretrained: bool, freeze_backbone: bool) -> nn.Module:
    return get_efficientnet_lite_model("lite2", pretrained, freeze_backbone)


def _meso4(image_size: int) -> nn.Module:
    return Meso4(image_size)


def _meso_inception4(image_size: int) -> nn.Module:
    return MesoInception4(image_size)


def _bonus() -> nn.Module:
    return BonusNet()


MODEL_SPECS: dict[str, ModelSpec] = {
    "SimpleNet": ModelSpec(_simplenet, cam_layer=lambda m: m.conv3),
    "XceptionBased": ModelSpec(_xception_based, cam_layer=lambda m: m.conv4, head=("fc.",)),  # the exit flow's last conv
    "ResNet50": ModelSpec(_resnet50, norm=IMAGENET_NORM, image_size=224, cam_layer=lambda m: m.layer4[-1], head=("fc.",)),
    # bn2 = conv_head + BatchNorm + ReLU6: the last layer that keeps a spatial layout (7x7 at 224 px)
    "EfficientNetLite0": ModelSpec(_lite0, norm=IMAGENET_NORM, image_size=224, cam_layer=lambda m: m.bn2,
                                   head=("classifier.",)),
    "EfficientNetLite2": ModelSpec(_lite2, norm=IMAGENET_NORM, image_size=260, cam_layer=lambda m: m.bn2,
                                   head=("classifier.",)),
    # the published MesoNet detectors: random init here; their authors' Keras weights load from the .h5 (mesonet.py)
    "Meso4": ModelSpec(_meso4, norm=MESONET_NORM, image_size=MESONET_IMAGE_SIZE, cam_layer=lambda m: m.cam_layer()),
    "MesoInception4": ModelSpec(_meso_inception4, norm=MESONET_NORM, image_size=MESONET_IMAGE_SIZE,
                                cam_layer=lambda m: m.cam_layer()),
    "Bonus": ModelSpec(_bonus, cam_layer=lambda m: m.cam_layer()),
}
MODEL_NAMES = tuple(MODEL_SPECS)
PRETRAINED_MODELS = tuple(name for name, spec in MODEL_SPECS.items() if spec.imagenet)
OPTION_FLAGS = {"weights": "--weights", "freeze_backbone": "--freeze-backbone", "pretrained": "--no-pretrained"}


def models_taking(option: str) -> tuple[str, ...]:
    """The models whose builder takes `option` (for the flag checks of train_main.py)."""
    return tuple(name for name, spec in MODEL_SPECS.items() if option in spec.options)


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax of a batch of 2-output logits, in float32 whatever the autocast dtype: column 0 is P(real), 1 P(fake)."""
    return torch.softmax(logits.float(), dim=1)


def p_fake(logits: torch.Tensor) -> torch.Tensor:
    """P(fake) of each row of a batch of 2-output logits (label 1 = fake): the score every metric, threshold and
    verdict of the suite uses."""
    return class_probabilities(logits)[:, 1]


def build_model(name: str, *, image_size: int | None = None, pretrained: bool | None = None,
                weights: Path | None = None, freeze_backbone: bool | None = None) -> nn.Module:
    """Build a model by its CLI name with the options it takes; an option given (not None) that the model does not
    take is a UserError naming its flag, never silently dropped. image_size is the input size: models that do not
    depend on it (global pooling) ignore it, the others are built for it (default: the model's own)."""
    if name not in MODEL_SPECS:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    spec = MODEL_SPECS[name]
    given = {"pretrained": pretrained, "weights": weights, "freeze_backbone": freeze_backbone}
    for option, value in given.items():
        if value is not None and option not in spec.options:
            raise UserError(f"{OPTION_FLAGS[option]} does not apply to {name}; it applies to "
                            f"{', '.join(models_taking(option))}")
    kwargs = {option: value for option, value in given.items() if value is not None}
    if "image_size" in spec.options:
        kwargs["image_size"] = spec.image_size if image_size is None else image_size
    if "pretrained" in spec.options:
        kwargs.setdefault("pretrained", True)
    for option in spec.options - kwargs.keys():  # the builder's own defaults are written here, not hidden in it
        kwargs[option] = {"weights": None, "freeze_backbone": False}[option]
    return spec.build(**kwargs)


def build_untrained(name: str, image_size: int | None = None) -> nn.Module:
    """A model of `name` with random weights (to load a checkpoint into, or to count parameters): never downloads."""
    return build_model(name, image_size=image_size, pretrained=False if MODEL_SPECS[name].imagenet else None)


def cam_target_layer(model: nn.Module, name: str) -> nn.Module:
    """The layer Grad-CAM looks at for model `name`: the last convolutional block, whose maps keep a spatial layout."""
    spec = MODEL_SPECS.get(name)
    if spec is None or spec.cam_layer is None:
        raise UserError(f"no Grad-CAM target layer is known for {name}" + (
            " (a fused detector: run Grad-CAM on one of its members)" if name == "Fused" else ""))
    return spec.cam_layer(model)


def main() -> None:
    """Print parameter counts, for the report's questions on model size."""
    for name in MODEL_NAMES:
        print(f"{name:17s} {get_nof_params(build_untrained(name)):>12,d} parameters")
    print(f"{'Xception':17s} {get_nof_params(build_xception_backbone(pretrained=False)):>12,d} parameters (1000-class fc)")
    print(f"the MLP head adds {mlp_head_extra_params():,d} parameters over Xception's fc")


if __name__ == "__main__":
    main()
