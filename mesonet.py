"""MesoNet (Afchar et al., "MesoNet: a Compact Facial Video Forgery Detection Network", WIFS 2018): Meso4 and
MesoInception4, and a loader for the authors' released Keras weights, so a published detector sits beside ours.

    python numerical_analysis.py -cpp Meso4_DF.h5 -d fakes_dataset        # any analysis script takes the .h5 file
    python tools/cross_eval.py --checkpoints Meso4_DF.h5 ckpt.pt --data-roots ../shared/data

The weights (Apache-2.0) live in https://github.com/DariusAf/MesoNet (folder weights/: Meso4_DF.h5, Meso4_F2F.h5,
MesoInception_DF.h5, MesoInception_F2F.h5). Keras' layouts are mapped faithfully: convolutions HWIO -> OIHW, 'same'
padding (dilated too), ReLU *before* BatchNorm (eps 1e-3), max pooling that pads at the end ('same' = ceil_mode), the
Flatten in NHWC order (the first dense layer's rows are permuted to our NCHW flatten), LeakyReLU 0.1 after that layer,
and the single sigmoid output P(real) split into the suite's two scores (logits z/2, -z/2: softmax gives P(fake) =
1 - P(real)). Inputs are RGB on [0, 1] (Keras' rescale=1/255), 256 x 256.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cli import UserError
from normalization import Normalization
from pretrained import resolve_pretrained_weights

MESONET_REPO = "https://github.com/DariusAf/MesoNet"
MESONET_FILES = ("Meso4_DF.h5", "Meso4_F2F.h5", "MesoInception_DF.h5", "MesoInception_F2F.h5")
MESONET_NORM = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # Keras ImageDataGenerator(rescale=1/255)
MESONET_IMAGE_SIZE = 256
KERAS_BN_EPS, KERAS_BN_MOMENTUM = 1e-3, 0.01  # Keras' defaults (its momentum 0.99 is torch's 0.01)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)


def _conv_block(in_ch: int, out_ch: int, kernel: int, pool: int) -> nn.Sequential:
    """Keras Conv2D(padding='same', activation='relu') -> BatchNormalization -> MaxPooling2D(pool, padding='same')."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2), nn.ReLU(inplace=True), _bn(out_ch),
                         nn.MaxPool2d(pool, ceil_mode=True))


def _branch(in_ch: int, out_ch: int, dilation: int) -> nn.Sequential:
    """1x1 conv, then a 3x3 conv with `dilation` ('same' padding), each followed by ReLU."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.ReLU(inplace=True),
                         nn.Conv2d(out_ch, out_ch, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True))


class InceptionLayer(nn.Module):
    """MesoInception's block: 1x1 | 1x1-3x3 | 1x1-3x3 dilated 2 | 1x1-3x3 dilated 3, concatenated (a+b+c+d channels)."""

    def __init__(self, in_ch: int, a: int, b: int, c: int, d: int):
        super().__init__()
        self.branches = nn.ModuleList([nn.Sequential(nn.Conv2d(in_ch, a, 1), nn.ReLU(inplace=True)),
                                       _branch(in_ch, b, 1), _branch(in_ch, c, 2), _branch(in_ch, d, 3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def _pooled_side(image_size: int, pools: tuple[int, ...]) -> int:
    """Feature-map side after 'same' max pools (each rounds up)."""
    for pool in pools:
        image_size = math.ceil(image_size / pool)
    return image_size


class _MesoNet(nn.Module):
    """Shared head: Flatten -> Dropout 0.5 -> Dense 16 -> LeakyReLU 0.1 -> Dropout 0.5 -> 2 logits."""

    def __init__(self, features: nn.Sequential, image_size: int):
        super().__init__()
        self.features = features
        side = _pooled_side(image_size, (2, 2, 2, 4))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16 * side * side, 16), nn.LeakyReLU(0.1),
                                  nn.Dropout(0.5), nn.Linear(16, 2))

    def cam_layer(self) -> nn.Module:
        """Grad-CAM target: the last block's BatchNorm (32 x 32 at 256 px, before the 4x4 pool)."""
        return self.features[-1][2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Meso4(_MesoNet):
    """Four conv blocks (8, 8, 16, 16 filters; 3x3 then 5x5) and the MesoNet head: 27,994 parameters at 256 px
    (27,977 in Keras, whose last layer has one output)."""

    def __init__(self, image_size: int = MESONET_IMAGE_SIZE):
        super().__init__(nn.Sequential(_conv_block(3, 8, 3, 2), _conv_block(8, 8, 5, 2), _conv_block(8, 16, 5, 2),
                                       _conv_block(16, 16, 5, 4)), image_size)


class MesoInception4(_MesoNet):
    """Two inception blocks (1-4-4-2, 2-4-4-2), two 5x5 conv blocks (16, 16) and the MesoNet head."""

    def __init__(self, image_size: int = MESONET_IMAGE_SIZE):
        super().__init__(nn.Sequential(
            nn.Sequential(InceptionLayer(3, 1, 4, 4, 2), _bn(11), nn.MaxPool2d(2, ceil_mode=True)),
            nn.Sequential(InceptionLayer(11, 2, 4, 4, 2), _bn(12), nn.MaxPool2d(2, ceil_mode=True)),
            _conv_block(12, 16, 5, 2), _conv_block(16, 16, 5, 4)), image_size)


# ---- the authors' Keras HDF5 weights -----------------------------------------------------------------------------


def read_keras_weights(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """{layer name: {weight name ('kernel', 'bias', 'gamma', ...): array}} of a Keras HDF5 file (save_weights or save)."""
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is pinned in requirements.txt
        raise UserError("reading Keras .h5 weights needs h5py: pip install h5py") from err
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            layers = {}
            for name in group.attrs["layer_names"]:
                name = name.decode() if isinstance(name, bytes) else str(name)
                weight_names = [w.decode() if isinstance(w, bytes) else str(w) for w in group[name].attrs["weight_names"]]
                if weight_names:
                    layers[name] = {w.split("/")[-1].split(":")[0]: np.asarray(group[name][w]) for w in weight_names}
            return layers
    except (OSError, KeyError) as err:
        raise UserError(f"{path} is not a Keras HDF5 weight file ({err})") from err


def _creation_order(layers: dict[str, dict], kind: str) -> list[dict[str, np.ndarray]]:
    """The layers named <kind>_<n>, in Keras' creation order (by n: conv2d_10 comes after conv2d_9)."""
    found = [(int(m.group(1)), name) for name in layers if (m := re.fullmatch(rf"{kind}_(\d+)", name))]
    return [layers[name] for _, name in sorted(found)]


def keras_to_state_dict(model: _MesoNet, layers: dict[str, dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Map Keras conv2d_N / batch_normalization_N / dense_N weights onto `model`'s modules, in creation order."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    dense1, dense2 = [m for m in model.modules() if isinstance(m, nn.Linear)]
    k_convs, k_bns, k_dense = (_creation_order(layers, k) for k in ("conv2d", "batch_normalization", "dense"))
    if (len(k_convs), len(k_bns), len(k_dense)) != (len(convs), len(bns), 2):
        raise UserError(f"the Keras file holds {len(k_convs)} conv, {len(k_bns)} BatchNorm and {len(k_dense)} dense "
                        f"layers; {type(model).__name__} has {len(convs)}, {len(bns)} and 2")
    names = {m: n for n, m in model.named_modules()}
    state: dict[str, torch.Tensor] = {}

    def put(module: nn.Module, key: str, value: np.ndarray) -> None:
        target = dict(module.named_parameters(recurse=False)) | dict(module.named_buffers(recurse=False))
        tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if tensor.shape != target[key].shape:
            raise UserError(f"Keras weights do not fit {type(model).__name__}: {names[module]}.{key} is "
                            f"{tuple(target[key].shape)}, the file has {tuple(tensor.shape)}")
        state[f"{names[module]}.{key}"] = tensor

    for module, w in zip(convs, k_convs):
        put(module, "weight", w["kernel"].transpose(3, 2, 0, 1))  # HWIO -> OIHW
        put(module, "bias", w["bias"])
    for module, w in zip(bns, k_bns):
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                             ("running_var", "moving_variance")):
            put(module, ours, w[theirs])
        state[f"{names[module]}.num_batches_tracked"] = torch.tensor(0)
    kernel = k_dense[0]["kernel"]  # (H*W*C, 16), rows in Keras' NHWC flatten order
    channels = bns[-1].num_features
    side = math.isqrt(kernel.shape[0] // channels)
    kernel = kernel.reshape(side, side, channels, -1).transpose(2, 0, 1, 3).reshape(kernel.shape[0], -1)  # -> NCHW rows
    put(dense1, "weight", kernel.T)
    put(dense1, "bias", k_dense[0]["bias"])
    w, b = k_dense[1]["kernel"][:, 0], k_dense[1]["bias"]  # sigmoid(z) = P(real); logits (z/2, -z/2)
    put(dense2, "weight", np.stack([w / 2, -w / 2]))
    put(dense2, "bias", np.concatenate([b / 2, -b / 2]))
    return state


def keras_architecture(layers: dict[str, dict]) -> str:
    """'Meso4' or 'MesoInception4', told apart by the number of conv layers (4 or 16)."""
    n_convs = len(_creation_order(layers, "conv2d"))
    if n_convs == 4:
        return "Meso4"
    if n_convs == 16:
        return "MesoInception4"
    raise UserError(f"a Keras file with {n_convs} conv layers is neither Meso4 (4) nor MesoInception4 (16)")


def mesonet_weight_file(path: str | Path) -> Path:
    """The .h5 file itself, or for one of the authors' file names not present: the copy in $FMD_WEIGHTS_DIR or torch's
    hub cache, else a download from the MesoNet repository (unless FMD_OFFLINE=1), else one sentence naming it."""
    path = Path(path)
    if path.is_file():
        return path
    if path.name not in MESONET_FILES:
        raise UserError(f"{path} does not exist (MesoNet's weights: {MESONET_REPO}, folder weights/)")
    return resolve_pretrained_weights(f"MesoNet {path.stem}", (path.name,),
                                      f"{MESONET_REPO}/raw/master/weights/{path.name}",
                                      advice=f"get it from {MESONET_REPO} (folder weights/) or pass its path")


def is_keras_file(path: str | Path) -> bool:
    """A Keras HDF5 file (.h5/.hdf5), read by keras_checkpoint instead of torch.load."""
    return Path(path).suffix.lower() in (".h5", ".hdf5")


def keras_checkpoint(path: str | Path) -> dict:
    """The authors' Keras weights as a checkpoint in the suite's format (model name, state dict, [0, 1] input
    normalisation, 256 px, threshold 0.5 on its sigmoid), so every script that reads a checkpoint takes the .h5."""
    path = mesonet_weight_file(path)
    layers = read_keras_weights(path)
    name = keras_architecture(layers)
    model = {"Meso4": Meso4, "MesoInception4": MesoInception4}[name]()
    return {"model": keras_to_state_dict(model, layers), "model_name": name, "normalization": MESONET_NORM.to_dict(),
            "model_kwargs": {"image_size": MESONET_IMAGE_SIZE}, "source": str(path),
            "threshold": {"value": 0.5, "source": "MesoNet's own sigmoid at 0.5"}}
