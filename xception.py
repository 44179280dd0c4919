"""Xception (Chollet, 2017, arXiv:1610.02357) written for this suite, keyed like the common ImageNet checkpoint.

The state-dict keys (conv1, bn1, ..., block1..block12 with rep/skip/skipbn, conv3, bn3, conv4, bn4, fc) follow the
`pretrainedmodels` ImageNet Xception, so its file `xception-43020ad28.pth` loads with strict=True. timm's
`legacy_xception` weights (its GitHub release file, or model.safetensors from the Hugging Face cache) load too
(pretrained.timm_xception_to_ours); older copies store the pointwise convolutions as 2-D matrices and are reshaped.

    python -c "from xception import build_xception_backbone; m = build_xception_backbone(pretrained=False)"
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cli import UserError
from pretrained import huggingface_cache_files, read_state_dict, resolve_pretrained_weights, timm_xception_to_ours

XCEPTION_URL = "http://data.lip6.fr/cadene/pretrainedmodels/xception-43020ad28.pth"
# timm's copy of the same ImageNet weights, tried when the first source fails
TIMM_XCEPTION_URL = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-cadene/xception-43020ad28.pth"
TIMM_XCEPTION_HF_REPO = "timm/legacy_xception.tf_in1k"
XCEPTION_FILES = ("xception-43020ad28.pth", "xception-b5690688.pth", "legacy_xception.safetensors")
FEATURE_DIM = 2048


class SeparableConv2d(nn.Module):
    """A depthwise convolution (one filter per channel) followed by a 1x1 pointwise convolution."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, padding: int = 0, bias: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, in_ch, kernel_size, stride, padding, groups=in_ch, bias=bias)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class Block(nn.Module):
    """`reps` ReLU-SeparableConv-BN units with a residual connection (a strided 1x1 conv when the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, reps: int, stride: int = 1, start_with_relu: bool = True, grow_first: bool = True):
        super().__init__()
        if out_ch != in_ch or stride != 1:
            self.skip = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)
            self.skipbn = nn.BatchNorm2d(out_ch)
        else:
            self.skip = None
        # widths of the separable convs: grow to out_ch in the first unit, or in the last one
        widths = [out_ch] * reps if grow_first else [in_ch] * (reps - 1) + [out_ch]
        layers: list[nn.Module] = []
        ch = in_ch
        for width in widths:
            layers += [nn.ReLU(inplace=True), SeparableConv2d(ch, width, 3, 1, 1), nn.BatchNorm2d(width)]
            ch = width
        if start_with_relu:
            layers[0] = nn.ReLU(inplace=False)  # the input is also the skip branch: do not overwrite it
        else:
            layers = layers[1:]
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skipbn(self.skip(x)) if self.skip is not None else x
        return self.rep(x) + skip


class Xception(nn.Module):
    """Entry flow (conv1-2, block1-3), middle flow (block4-11), exit flow (block12, conv3-4), then `fc`."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(32, 64, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.block1 = Block(64, 128, 2, 2, start_with_relu=False)
        self.block2 = Block(128, 256, 2, 2)
        self.block3 = Block(256, 728, 2, 2)
        for i in range(4, 12):
            setattr(self, f"block{i}", Block(728, 728, 3, 1))
        self.block12 = Block(728, 1024, 2, 2, grow_first=False)
        self.conv3 = SeparableConv2d(1024, 1536, 3, 1, 1)
        self.bn3 = nn.BatchNorm2d(1536)
        self.conv4 = SeparableConv2d(1536, FEATURE_DIM, 3, 1, 1)
        self.bn4 = nn.BatchNorm2d(FEATURE_DIM)
        self.fc = nn.Linear(FEATURE_DIM, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> (B,2048,H/32,W/32) feature map."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        for i in range(1, 13):
            x = getattr(self, f"block{i}")(x)
        x = self.relu(self.bn3(self.conv3(x)))
        return self.bn4(self.conv4(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Feature map -> ReLU -> global average pool -> fc."""
        x = F.adaptive_avg_pool2d(F.relu(features), 1).flatten(1)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def load_xception_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an ImageNet Xception weight file (pretrainedmodels, timm .pth or .safetensors) in our key layout."""
    return timm_xception_to_ours(read_state_dict(path, "Xception"))


def build_xception_backbone(pretrained: bool = True, weights: str | Path | None = None) -> Xception:
    """The Xception backbone with its 1000-class `fc`, ImageNet-pretrained unless pretrained=False.

    Weights come from `weights`, then $FMD_WEIGHTS_DIR, torch's hub cache, timm's Hugging Face cache, then a download
    from lip6 and, when that fails, from timm's release (see pretrained.resolve_pretrained_weights).
    """
    model = Xception(num_classes=1000)
    if pretrained:
        hf = huggingface_cache_files(TIMM_XCEPTION_HF_REPO, ("model.safetensors", "pytorch_model.bin"))
        path = resolve_pretrained_weights("Xception", XCEPTION_FILES, (XCEPTION_URL, TIMM_XCEPTION_URL), weights, hf)
        try:
            model.load_state_dict(load_xception_state_dict(path), strict=True)
        except RuntimeError as err:
            raise UserError(f"{path} is not an ImageNet Xception state dict ({str(err).splitlines()[0]})") from err
    return model
