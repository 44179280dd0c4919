"""MesoNet's Keras converter against an independent NumPy forward pass in Keras' own layout (NHWC, HWIO kernels)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from cli import UserError
from detector import load_model_from_checkpoint
from mesonet import MESONET_NORM, Meso4, MesoInception4, keras_checkpoint

RNG = np.random.default_rng(0)


# ---- a reference MesoNet in NumPy, written from the Keras model definition ------------------------------------------
def conv_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, dilation: int = 1) -> np.ndarray:
    """Keras Conv2D(padding='same', activation='relu') on NHWC input with an HWIO kernel."""
    if dilation > 1:  # a dilated kernel is the kernel with zeros between its taps
        size = (kernel.shape[0] - 1) * dilation + 1
        spread = np.zeros((size, size) + kernel.shape[2:])
        spread[::dilation, ::dilation] = kernel
        kernel = spread
    pad = kernel.shape[0] // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    windows = sliding_window_view(padded, kernel.shape[:2], axis=(1, 2))  # N, H, W, C, kh, kw
    return np.maximum(np.einsum("nhwcij,ijco->nhwo", windows, kernel) + bias, 0)


def batch_norm(x: np.ndarray, w: dict) -> np.ndarray:
    return (x - w["moving_mean"]) / np.sqrt(w["moving_variance"] + 1e-3) * w["gamma"] + w["beta"]


def max_pool(x: np.ndarray, p: int) -> np.ndarray:
    n, h, w, c = x.shape
    return x.reshape(n, h // p, p, w // p, p, c).max(axis=(2, 4))


def head(x: np.ndarray, d1: dict, d2: dict) -> np.ndarray:
    """Flatten (NHWC order) -> Dense 16 -> LeakyReLU 0.1 -> Dense 1: the logit z of sigmoid(z) = P(real)."""
    y = x.reshape(len(x), -1) @ d1["kernel"] + d1["bias"]
    y = np.where(y > 0, y, 0.1 * y)
    return (y @ d2["kernel"] + d2["bias"])[:, 0]


def reference_meso4(x: np.ndarray, w: dict) -> np.ndarray:
    c, b, d = w["conv"], w["bn"], w["dense"]
    for i, pool in enumerate((2, 2, 2, 4)):
        x = max_pool(batch_norm(conv_same(x, c[i]["kernel"], c[i]["bias"]), b[i]), pool)
    return head(x, *d)


def reference_inception(x: np.ndarray, w: dict) -> np.ndarray:
    c, b, d = w["conv"], w["bn"], w["dense"]
    for block in range(2):
        k = c[7 * block: 7 * block + 7]  # x1 | x2 (1x1, 3x3) | x3 (1x1, 3x3 d2) | x4 (1x1, 3x3 d3), in creation order
        branches = [conv_same(x, k[0]["kernel"], k[0]["bias"])]
        for j, dilation in ((1, 1), (3, 2), (5, 3)):
            branches.append(conv_same(conv_same(x, k[j]["kernel"], k[j]["bias"]), k[j + 1]["kernel"], k[j + 1]["bias"],
                                      dilation))
        x = max_pool(batch_norm(np.concatenate(branches, axis=-1), b[block]), 2)
    for i, pool in ((14, 2), (15, 4)):
        x = max_pool(batch_norm(conv_same(x, c[i]["kernel"], c[i]["bias"]), b[i - 12]), pool)
    return head(x, *d)


# ---- random weights written as Keras' save_weights lays them out ----------------------------------------------------
def random_weights(conv_shapes: list[tuple], bn_sizes: list[int]) -> dict:
    conv = [{"kernel": RNG.normal(0, (s[0] * s[1] * s[2]) ** -0.5, s), "bias": RNG.normal(0, 0.1, s[-1])}
            for s in conv_shapes]  # He-like scales keep the activations (and the logit) of order one
    bn = [{"gamma": RNG.uniform(0.5, 1.5, n), "beta": RNG.normal(0, 0.1, n), "moving_mean": RNG.uniform(0, 0.5, n),
           "moving_variance": RNG.uniform(0.5, 2.0, n)} for n in bn_sizes]
    dense = [{"kernel": RNG.normal(0, 1024 ** -0.5, (1024, 16)), "bias": RNG.normal(0, 0.1, 16)},
             {"kernel": RNG.normal(0, 3.0, (16, 1)), "bias": RNG.normal(0, 0.1, 1)}]
    return {"conv": conv, "bn": bn, "dense": dense}


MESO4_CONVS = [(3, 3, 3, 8), (5, 5, 8, 8), (5, 5, 8, 16), (5, 5, 16, 16)]


def inception_convs(in_ch: int, a: int, b: int, c: int, d: int) -> list[tuple]:
    return [(1, 1, in_ch, a), (1, 1, in_ch, b), (3, 3, b, b), (1, 1, in_ch, c), (3, 3, c, c), (1, 1, in_ch, d), (3, 3, d, d)]


INCEPTION_CONVS = inception_convs(3, 1, 4, 4, 2) + inception_convs(11, 2, 4, 4, 2) + [(5, 5, 12, 16), (5, 5, 16, 16)]


def write_keras_h5(path: Path, weights: dict, first_index: int) -> Path:
    """Layers named like Keras names them (conv2d_<n> counting from first_index), plus weightless layers; the layer
    list is shuffled, as Keras writes it in topological, not creation, order."""
    layers = [("input_1", {})]
    for kind, entries in (("conv2d", weights["conv"]), ("batch_normalization", weights["bn"]), ("dense", weights["dense"])):
        layers += [(f"{kind}_{first_index + i}", w) for i, w in enumerate(entries)]
    layers += [("max_pooling2d_1", {}), ("flatten_1", {})]
    order = RNG.permutation(len(layers))
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layers[i][0].encode() for i in order])
        for name, w in layers:
            group = f.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}/{k}:0".encode() for k in w], dtype="S")
            for k, v in w.items():
                group.create_dataset(f"{name}/{k}:0", data=v.astype(np.float32))
    return path


@pytest.mark.parametrize("arch, convs, bns, first, reference", [
    ("Meso4", MESO4_CONVS, [8, 8, 16, 16], 5, reference_meso4),
    ("MesoInception4", INCEPTION_CONVS, [11, 12, 16, 16], 1, reference_inception),  # conv2d_1 .. conv2d_16
])
def test_keras_weights_give_the_keras_outputs(tmp_path, arch, convs, bns, first, reference):
    weights = random_weights(convs, bns)
    path = write_keras_h5(tmp_path / "w.h5", weights, first)
    ramp = np.broadcast_to(np.linspace(0, 1, 256)[None, :, None, None], (1, 256, 256, 3))
    images = np.concatenate([RNG.uniform(0, 1, (1, 256, 256, 3)), ramp])  # noise and a smooth ramp: different logits
    expected_z = reference(images, weights)  # sigmoid(z) = P(real)

    loaded = load_model_from_checkpoint(path)
    model = loaded.module
    assert loaded.name == arch and loaded.normalization == MESONET_NORM and loaded.image_size == 256
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with torch.no_grad():  # [0, 1] pixels, NCHW; MESONET_NORM is the identity
        logits = model(torch.from_numpy(images).permute(0, 3, 1, 2).float()).double()
    np.testing.assert_allclose((logits[:, 0] - logits[:, 1]).numpy(), expected_z, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits.softmax(1)[:, 1].numpy(), 1 / (1 + np.exp(expected_z)), atol=1e-6)  # P(fake)
    assert np.ptp(expected_z) > 0.05 and np.abs(expected_z).max() < 20  # unsaturated and the two images differ


def test_converter_checks_the_layers(tmp_path):
    five = write_keras_h5(tmp_path / "five.h5", random_weights(MESO4_CONVS + [(5, 5, 16, 16)], [8, 8, 16, 16]), 1)
    with pytest.raises(UserError, match="5 conv layers is neither Meso4"):
        keras_checkpoint(five)
    wrong = random_weights([(3, 3, 3, 8), (5, 5, 8, 8), (5, 5, 8, 16), (3, 3, 16, 16)], [8, 8, 16, 16])
    with pytest.raises(UserError, match=r"features.3.0.weight is \(16, 16, 5, 5\), the file has \(16, 16, 3, 3\)"):
        keras_checkpoint(write_keras_h5(tmp_path / "wrong.h5", wrong, 1))
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(UserError, match="not a Keras HDF5 weight file"):
        keras_checkpoint(tmp_path / "text.h5")


def test_missing_published_weights_name_the_repository(tmp_path):
    with pytest.raises(UserError, match=r"Meso4_DF.h5 \(download: https://github.com/DariusAf/MesoNet/raw/master/weights"
                                        r"/Meso4_DF.h5\).*get it from https://github.com/DariusAf/MesoNet"):
        keras_checkpoint(tmp_path / "Meso4_DF.h5")  # offline (conftest sets FMD_OFFLINE=1): no download is tried
    with pytest.raises(UserError, match="mine.h5 does not exist"):
        keras_checkpoint(tmp_path / "mine.h5")


def test_meso_models_train_at_other_sizes():
    """The dense layer follows the image size ('same' pools round up), so training from scratch works at any size."""
    for cls in (Meso4, MesoInception4):
        for size in (64, 100, 256):
            assert cls(size)(torch.zeros(1, 3, size, size)).shape == (1, 2)
