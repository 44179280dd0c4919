"""Input normalisation: how a model's input pixels are scaled, per model (saved in every checkpoint), and the helpers
that apply and undo it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from common import IMAGENET_MEAN, IMAGENET_STD, NORM_MEAN, NORM_STD


@dataclass(frozen=True)
class Normalization:
    """A model's input normalisation: x_model = (x_pixels - mean) / std, per channel, pixels on the [0, 1] scale."""

    mean: tuple[float, float, float] = NORM_MEAN
    std: tuple[float, float, float] = NORM_STD

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict | None) -> Normalization:
        """From a checkpoint's entry; checkpoints written before models carried one used the assignment's 0.5."""
        if not d:
            return ASSIGNMENT_NORM
        return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))  # type: ignore[arg-type]


ASSIGNMENT_NORM = Normalization(NORM_MEAN, NORM_STD)
IMAGENET_NORM = Normalization(IMAGENET_MEAN, IMAGENET_STD)
PIXELS = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # [0, 1] pixels as they are (MesoNet; fused detectors' input)


def _stats(images: torch.Tensor, norm: Normalization) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.as_tensor(norm.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(norm.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return m, s


def normalize(images: torch.Tensor, norm: Normalization = ASSIGNMENT_NORM) -> torch.Tensor:
    """Map [0, 1] pixels (B,3,H,W) to the model's input scale."""
    m, s = _stats(images, norm)
    return (images - m) / s


def denormalize(images: torch.Tensor, norm: Normalization = ASSIGNMENT_NORM) -> torch.Tensor:
    """Inverse of normalize: model inputs (B,3,H,W) back to [0, 1] pixels."""
    m, s = _stats(images, norm)
    return images * s + m


def to_display(image: torch.Tensor, norm: Normalization = ASSIGNMENT_NORM) -> np.ndarray:
    """A normalised (3,H,W) model input as an (H,W,3) float32 array in [0,1], for imshow and CAM overlays."""
    return denormalize(image[None], norm)[0].clamp(0, 1).permute(1, 2, 0).detach().cpu().numpy().astype(np.float32)
