"""Everyday distortions (robustness_analysis.py --corruptions) on constructed images and a constructed detector."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from attacks import Corruption
from checkpoints import save_checkpoint


def smooth(seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 90 + 80 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 1.5) + yy * rng.uniform(0.5, 1.5)))
    return np.repeat(base[..., None], 3, axis=2)


def checker(size: int = 48) -> np.ndarray:
    return (((np.arange(size)[:, None] + np.arange(size)[None, :]) % 2) * 2 - 1)[..., None] * 1.0


def test_distortions_change_pixels_as_expected():
    image = Image.fromarray(np.clip(smooth(0) + 25 * checker(), 0, 255).astype(np.uint8))
    diff = lambda out: np.abs(np.asarray(out, dtype=float) - np.asarray(image, dtype=float)).mean()  # noqa: E731
    assert 0 < diff(Corruption("jpeg", 95)(image)) < diff(Corruption("jpeg", 10)(image))
    assert diff(Corruption("blur", 0.5)(image)) < diff(Corruption("blur", 3)(image))
    noisy = Corruption("noise", 10)(image)
    assert np.array_equal(np.asarray(noisy), np.asarray(Corruption("noise", 10)(image)))  # the same noise every run
    assert 5 < diff(noisy) < 12  # about sigma * sqrt(2 / pi) = 8 grey levels
    small = Corruption("resize", 0.25)(image)
    assert small.size == image.size and diff(small) > diff(Corruption("resize", 0.75)(image))


class HighFrequency(nn.Module):
    """P(fake) rises with the input's pixel-to-pixel contrast: a detector that keys on high frequencies."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 2, bias=False)  # x[i,j] - x[i,j+1] (a horizontal difference)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, :, 0, 0], self.conv.weight[0, :, 0, 1] = 1.0, -1.0
        self.offset = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        s = 4 * (self.conv(x).abs().mean(dim=(1, 2, 3)) - self.offset / 10)
        return torch.stack([-s, s], dim=1)


def test_the_blur_ladder_is_monotone_for_a_high_frequency_detector(tmp_path, monkeypatch):
    import models
    import robustness_analysis

    for i in range(8):  # reals are smooth, fakes carry a faint checkerboard (a GAN-like trace)
        for cls, trace in (("real", 0), ("fake", 12)):
            folder = tmp_path / "fakes_dataset" / "test" / cls
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.clip(smooth(i) + trace * checker(), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    monkeypatch.setitem(models.MODEL_SPECS, "HighFrequency", models.ModelSpec(lambda **_: HighFrequency(), image_size=48))
    save_checkpoint({"model": HighFrequency().state_dict(), "model_name": "HighFrequency",
                     "model_kwargs": {"image_size": 48}}, tmp_path / "hf.pt")
    result = robustness_analysis.main(["-cpp", str(tmp_path / "hf.pt"), "-d", "fakes_dataset", "--data-root", str(tmp_path),
                                       "--figures-dir", str(tmp_path / "fig"), "--attacks", "none", "--corruptions",
                                       "blur,jpeg", "--no-progress", "--num-workers", "0"])
    blur = [r["auc"] for r in result["corruptions"]["blur"]]
    # the trace fades as sigma grows: AUC falls from the clean 1.0 to chance and never climbs back above the noise of
    # 8 + 8 test images (once at chance it wobbles by a few hundredths)
    assert blur[0] > 0.8 and blur[-1] < 0.6
    assert all(later <= earlier + 0.06 for earlier, later in zip(blur, blur[1:]))
    saved = json.loads((tmp_path / "fig" / "fakes_dataset_HighFrequency__hf_corruptions.json").read_text())[0]
    assert saved["clean_auc"] == pytest.approx(1.0) and [r["severity"] for r in saved["corruptions"]["jpeg"]] == [
        95, 75, 50, 30, 10]
    assert (tmp_path / "fig" / "fakes_dataset_HighFrequency__hf_corruption_curves.png").is_file()
    assert not (tmp_path / "fig" / "fakes_dataset_HighFrequency__hf_robustness.json").exists()  # no attack was run
