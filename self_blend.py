"""Self-blended images: fakes made from real faces alone, so a detector learns what every face swap leaves behind.

Built from the description in Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022) and
Li et al., "Face X-ray" (CVPR 2020); no code of theirs is used. A real face is blended into itself: one copy (source
or target, at random) is altered in colour (channel shifts, brightness, contrast, saturation) and in frequency
(down-then-up resampling or sharpening), the source is shifted and scaled by a few percent, and the blend follows a mask
made from the landmark hull (one of four hull variants, landmarks jittered, elastically deformed, eroded or dilated,
blurred by a random kernel, times a blend ratio). What is left is exactly what a swap leaves: a boundary, and a colour
and sharpness mismatch between the inner face and its surroundings, with no generator's fingerprint to learn instead.

Training items are (real, blend) pairs of one face that share every post-augmentation (flip, JPEG quality 40-100,
colour jitter), so the only difference between the two is the blend. All randomness comes from numpy's global state,
which the Trainer seeds per sample (trainer.SeededDataset): the same seed gives the same pair for any --num-workers.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from faces_dataset import load_rgb
from landmarks import BROWS, EYES, JAW, MOUTH, NOSE

FAKE_MODES = ("dataset", "self-blend", "both")
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # the whole face pasted half the time, partly otherwise
HULLS = {  # landmark subsets whose convex hull is the blended region
    "face": list(range(68)),
    "inner": list(BROWS) + list(NOSE) + list(EYES) + list(MOUTH),
    "lower": list(JAW) + list(NOSE),
    "eyes-nose-mouth": list(EYES) + list(NOSE) + list(MOUTH),
}


# ---- the pieces (pure functions of an image and a numpy Generator) --------------------------------------------------
def alter_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-channel shift (up to 20 levels), brightness and contrast (+-10 %) and saturation (+-20 %) of a uint8 RGB."""
    x = image.astype(np.float32)
    x = x + rng.uniform(-20, 20, size=3)
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.9, 1.1) + mean * rng.uniform(0.9, 1.1)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.8, 1.2)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def alter_frequency(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Down-then-up resampling (to 35-75 % of the size) or an unsharp mask: a resolution mismatch like a swap's."""
    h, w = image.shape[:2]
    if rng.random() < 0.5:
        f = rng.uniform(0.35, 0.75)
        small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    blurred = cv2.GaussianBlur(image, (0, 0), rng.uniform(1.0, 2.0))
    return np.clip(image.astype(np.float32) * 1.8 - blurred.astype(np.float32) * 0.8, 0, 255).astype(np.uint8)


def alter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The source-target augmentation: colour, then frequency (each half the time, at least one of them)."""
    colour, frequency = rng.random() < 0.5, rng.random() < 0.5
    if not (colour or frequency):
        colour = True
    if colour:
        image = alter_colour(image, rng)
    if frequency:
        image = alter_frequency(image, rng)
    return image


def shift_and_scale(image: np.ndarray, rng: np.random.Generator, shift: float = 0.03,
                    scale: tuple[float, float] = (0.95, 1.05)) -> np.ndarray:
    """The source moved by up to `shift` of its size and scaled about its centre (edges replicated)."""
    h, w = image.shape[:2]
    s = rng.uniform(*scale)
    dx, dy = rng.uniform(-shift, shift) * w, rng.uniform(-shift, shift) * h
    matrix = np.array([[s, 0, (1 - s) * w / 2 + dx], [0, s, (1 - s) * h / 2 + dy]], dtype=np.float32)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def hull_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """1 inside the convex hull of the points, 0 outside (float32, H x W)."""
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    return mask.astype(np.float32)


def elastic(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mask pushed around by a smooth random displacement field (a few percent of its size)."""
    h, w = mask.shape
    sigma = max(h, w) / 16
    alpha = rng.uniform(0.01, 0.04) * max(h, w)
    dx = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma)
    dy = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma)
    dx *= alpha / (np.abs(dx).max() + 1e-8)
    dy *= alpha / (np.abs(dy).max() + 1e-8)
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(mask, grid_x + dx, grid_y + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def blend_mask(points: np.ndarray, shape: tuple[int, int], rng: np.random.Generator,
               regions: tuple[str, ...] = tuple(HULLS)) -> np.ndarray:
    """A soft mask in [0, 1] from the landmarks: hull variant (one of `regions`, names in HULLS), jitter, elastic
    deformation, erosion or dilation and a blur of random size, times a blend ratio (the mask's maximum)."""
    h, w = shape
    variant = regions[rng.integers(len(regions))]
    jittered = points[HULLS[variant]] + rng.normal(0, 0.01 * max(h, w), (len(HULLS[variant]), 2))
    mask = elastic(hull_mask(jittered, shape), rng)
    k = int(rng.integers(1, max(2, round(0.06 * max(h, w)))))
    kernel = np.ones((k, k), np.uint8)
    mask = cv2.erode(mask, kernel) if rng.random() < 0.5 else cv2.dilate(mask, kernel)
    blur = 2 * int(rng.integers(1, max(2, round(0.05 * max(h, w))))) + 1  # odd kernel, 3 to ~10 % of the side
    mask = cv2.GaussianBlur(mask, (blur, blur), 0)
    if mask.max() > 0:
        mask = mask / mask.max()
    return (mask * BLEND_RATIOS[rng.integers(len(BLEND_RATIOS))]).astype(np.float32)


def blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """mask * source + (1 - mask) * target, rounded to uint8: the target wherever the mask is 0."""
    m = mask[..., None]
    return np.clip(np.round(m * source.astype(np.float32) + (1 - m) * target.astype(np.float32)), 0, 255).astype(np.uint8)


def self_blend(image: np.ndarray, points: np.ndarray, rng: np.random.Generator, alter_source: bool | None = None,
               regions: tuple[str, ...] = tuple(HULLS)) -> tuple[np.ndarray, np.ndarray]:
    """(blended image, mask) of a uint8 RGB face and its 68 landmarks: source and target are the face itself, one of
    them altered (the source when alter_source, by default at random), the source shifted and scaled, blended through
    blend_mask over one of `regions`."""
    source, target = image.copy(), image.copy()
    if alter_source is None:
        alter_source = bool(rng.random() < 0.5)
    if alter_source:
        source = alter(source, rng)
    else:
        target = alter(target, rng)
    source = shift_and_scale(source, rng)
    mask = blend_mask(points, image.shape[:2], rng, regions)
    return blend(source, target, mask), mask


# ---- post-augmentation shared by the two images of a pair ---------------------------------------------------------
def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def post_augment(images: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """One draw of flip (p 0.5), JPEG quality 40-100 (p 0.5) and colour jitter (brightness/contrast +-10 %, p 0.5),
    applied alike to every image given (the real face and its blend)."""
    flip, quality = rng.random() < 0.5, int(rng.integers(40, 101)) if rng.random() < 0.5 else None
    jitter = (rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1)) if rng.random() < 0.5 else None
    out = []
    for x in images:
        if flip:
            x = x[:, ::-1]
        if jitter is not None:
            f = x.astype(np.float32)
            x = np.clip(np.round((f - f.mean()) * jitter[1] + f.mean() * jitter[0]), 0, 255).astype(np.uint8)
        if quality is not None:
            x = jpeg(np.ascontiguousarray(x), quality)
        out.append(np.ascontiguousarray(x))
    return out


# ---- datasets ---------------------------------------------------------------------------------------------------
def flatten_pairs(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate pair items into one batch: (2 x items, C, H, W) images, the two of a pair side by side."""
    images = torch.cat([x for x, _ in items])
    labels = torch.cat([y for _, y in items])
    return images, labels


def generator_from_global() -> np.random.Generator:
    """A Generator drawn from numpy's global state, which trainer.SeededDataset seeds per sample."""
    return np.random.default_rng(np.random.randint(0, 2**31 - 1))


class SelfBlendPairs(Dataset):
    """Training items of real faces: ((2, C, H, W) tensor of the real face and its self-blend, labels (0, 1))."""

    images_per_item = 2  # the Trainer loads -b / 2 items per batch and flattens them with `collate`
    collate = staticmethod(flatten_pairs)

    def __init__(self, paths: list[Path], points: dict[Path, np.ndarray], to_tensor: Callable[[Image.Image], torch.Tensor],
                 regions: tuple[str, ...] = tuple(HULLS)):
        self.paths, self.points, self.to_tensor, self.regions = paths, points, to_tensor, regions

    def __len__(self) -> int:
        return len(self.paths)

    def pair(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(real, blended, mask) before the shared post-augmentation."""
        real = np.asarray(load_rgb(self.paths[index]))
        fake, mask = self_blend(real, self.points[self.paths[index]], rng, regions=self.regions)
        return real, fake, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = generator_from_global()
        real, fake, _ = self.pair(index, rng)
        real, fake = post_augment([real, fake], rng)
        return torch.stack([self.to_tensor(Image.fromarray(real)), self.to_tensor(Image.fromarray(fake))]), torch.tensor([0, 1])


class FakePairs(Dataset):
    """The dataset's own fakes two at a time, as items shaped like SelfBlendPairs' (for --fakes both)."""

    images_per_item = 2  # the Trainer loads -b / 2 items per batch and flattens them with `collate`
    collate = staticmethod(flatten_pairs)

    def __init__(self, paths: list[Path], transform: Callable[[Image.Image], torch.Tensor]):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return (len(self.paths) + 1) // 2

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.paths[2 * index], self.paths[min(2 * index + 1, len(self.paths) - 1)]
        return torch.stack([self.transform(load_rgb(a)), self.transform(load_rgb(b))]), torch.tensor([1, 1])


class PairConcat(torch.utils.data.ConcatDataset):
    """Pair datasets one after the other (self-blend pairs, then fake pairs)."""

    images_per_item = 2  # the Trainer loads -b / 2 items per batch and flattens them with `collate`
    collate = staticmethod(flatten_pairs)


class SelfBlendEvaluation(Dataset):
    """A fixed evaluation set from real faces: item 2i is face i, item 2i + 1 its self-blend drawn with seed
    (seed, i), the same every epoch and run (validation of a model that must never see a dataset fake)."""

    def __init__(self, paths: list[Path], points: dict[Path, np.ndarray], transform: Callable[[Image.Image], torch.Tensor],
                 seed: int = 0, regions: tuple[str, ...] = tuple(HULLS)):
        self.pairs = SelfBlendPairs(paths, points, transform, regions)
        self.transform, self.seed = transform, seed

    @property
    def labels(self) -> list[int]:
        return [0, 1] * len(self.pairs)

    def __len__(self) -> int:
        return 2 * len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        face, is_blend = divmod(index, 2)
        if not is_blend:
            return self.transform(load_rgb(self.pairs.paths[face])), 0
        _, fake, _ = self.pairs.pair(face, np.random.default_rng((self.seed, face)))
        return self.transform(Image.fromarray(fake)), 1
