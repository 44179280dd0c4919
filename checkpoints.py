"""Checkpoints that cannot run code: tensors plus plain JSON-able metadata, read with torch.load(weights_only=True).

A pickled checkpoint may hold any Python object, and unpickling one runs whatever code it names: a crafted `.pt`
passed to an analysis script, `--init-from` or found as `_last.pt` by `--resume` would execute a payload. So every
checkpoint this suite writes holds only tensors, dicts, lists, strings, numbers, booleans and None (the model and
optimizer state dicts, the run record), and every read refuses anything else with one sentence.

Layout ("format": "fmd-checkpoint-v2"): model, optimizer, scaler, epoch, model_name, model_kwargs, normalization
({"mean", "std"}), threshold ({"value", "source", "band"}), framing ({"margin", "source"}: how the training faces were
cropped, which detect.py repeats), logging_parameters, record. detector.py turns one into a Detector. Older checkpoints of this suite
and the assignment's bare {"model": state_dict} (or a bare state dict) still load; without a normalization entry
they are read as the assignment's mean = std = 0.5.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cli import UserError, resolve_input_path
from files import atomic_torch_save

FORMAT = "fmd-checkpoint-v2"
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"  # how torch.save's pre-zip format begins (a pickled magic number)


def plain(obj: Any) -> Any:
    """`obj` with every value reduced to what weights_only=True accepts: tensors, dicts, lists, tuples and the exact
    types str/int/float/bool/None (subclasses such as numpy floats or torch.__version__ are converted)."""
    if isinstance(obj, torch.Tensor) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj) if type(obj) in (list, tuple) else [plain(v) for v in obj]
    for kind in (bool, int, float, str):  # bool first: it is an int subclass
        if isinstance(obj, kind):
            return kind(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} cannot go into a checkpoint (only tensors and plain values load safely)")


def save_checkpoint(ckpt: dict, path: str | Path) -> None:
    """Write a checkpoint of plain values atomically (temp file, then rename); the old file survives a crash or a
    full disk."""
    atomic_torch_save(plain(ckpt), path)


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """Read a checkpoint with weights_only=True; a missing, truncated, foreign or code-carrying file is a UserError."""
    path = resolve_input_path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; train it first with train_main.py (see README)")
    with open(path, "rb") as handle:
        head = handle.read(len(TORCH_LEGACY_MAGIC))
    if head[:1] == b"\x80" and head != TORCH_LEGACY_MAGIC:  # a pickle, neither torch's zip nor its legacy format
        raise UserError(f"{path} is not a checkpoint written by this suite (a plain pickle); it is never loaded, since "
                        "loading a pickle can run code")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" not in str(err).lower():  # no object reference refused: a text file, garbage, a cut pickle
            raise UserError(f"cannot read checkpoint {path} ({str(err).splitlines()[0]}); "
                            "the file is truncated or not a torch checkpoint") from err
        raise UserError(
            f"checkpoint {path} holds Python objects besides tensors and plain values, so it is not loaded (unpickling "
            "such a file can run code); use a checkpoint written by train_main.py or a bare state dict"
        ) from err
    except Exception as err:  # torch raises RuntimeError, EOFError, KeyError, BadZipFile, ... for a cut or foreign file
        raise UserError(f"cannot read checkpoint {path} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                        "the file is truncated or not a torch checkpoint") from err
    if isinstance(ckpt, dict) and "model" not in ckpt and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        ckpt = {"model": ckpt}  # a bare state dict
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise UserError(f"checkpoint {path} holds no model state (expected a dict with a 'model' state dict)")
    return ckpt


def checkpoint_model_name(ckpt: dict, path: str | Path, expected: str | None, advice: str | None = None) -> str:
    """The model a checkpoint holds; a contradicting `expected` (the user's -m) is an error, not a silent relabel.

    `advice` replaces the default "pass -m ..." hint for scripts that have no -m.
    """
    name = ckpt.get("model_name", expected)
    if name is None:
        raise UserError(f"checkpoint {path} does not say which model it holds; pass -m MODEL")
    if expected is not None and name != expected:
        hint = advice or f"pass -m {name} or another checkpoint"
        raise UserError(f"checkpoint {path} holds a {name} model, not {expected}; {hint}")
    return name


class WeightsMismatch(UserError):
    """A checkpoint's weights do not fit the model they are loaded into; `detail` is PyTorch's first line."""

    def __init__(self, message: str, detail: str):
        super().__init__(message)
        self.detail = detail


def load_weights(model: nn.Module, ckpt: dict, path: str | Path, name: str) -> nn.Module:
    """Load the checkpoint's weights into `model` (strict); the model is returned as it is, nothing else is set on it."""
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as err:
        text = str(err)
        hint = ("a layer's shape differs: it holds another model, or this one built for another input size (a bare "
                "state dict does not record its size; a train_main.py checkpoint does)"
                if "size mismatch" in text else "pass the matching -m")
        raise WeightsMismatch(f"checkpoint {path} does not fit the {name} architecture ({text.splitlines()[0]}); {hint}",
                              text.splitlines()[0]) from err
    return model
