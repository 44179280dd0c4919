"""Generate the built-in demo data: procedurally drawn faces with face-swap and GAN-like fakes, deterministic from a seed.

The course's real data cannot be downloaded here, so this writes both datasets in the assignment's layout:

    python tools/make_demo_dataset.py --out-dir data                 # 256x256, 300/100/100 images per split
    python tools/make_demo_dataset.py --out-dir /tmp/d --size 64 --train 24 --val 12 --test 12

<out-dir>/{fakes_dataset,synthetic_dataset}/{train,val,test}/{real,fake}/*.png, plus DEMO_DATA.txt at the root.
Reals are drawn faces (skin tones, head shapes, eyes, mouth, hair, background, light, sensor noise, JPEG round trip).
fakes_dataset fakes paste the inner face of another identity with a blend seam, a colour mismatch and resampling;
synthetic_dataset fakes are rendered at low resolution and upsampled with checkerboard and periodic spectral artefacts.
"""
from __future__ import annotations

import argparse
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from cli import add_progress_flag, probability
from common import DATA_ROOT, DATASETS, DEFAULT_SEED, DEMO_MARKER, SPLITS

SKIN_TONES = np.array(
    [[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 96], [160, 102, 68], [118, 74, 48], [88, 56, 38]]
)
HAIR_COLOURS = np.array([[20, 16, 14], [60, 40, 25], [110, 75, 40], [180, 140, 80], [220, 200, 150], [130, 40, 20], [90, 90, 90]])
IRIS_COLOURS = np.array([[60, 40, 20], [90, 60, 30], [40, 90, 140], [70, 110, 70], [100, 100, 110]])
SUPERSAMPLE = 2


@dataclass
class Geometry:
    """Where the head is, as fractions of the image size."""

    cx: float
    cy: float
    rx: float
    ry: float
    tilt: float  # horizontal offset of the features, a cheap head turn


@dataclass
class Identity:
    """What a person looks like, independent of where the head is."""

    skin: np.ndarray
    hair: np.ndarray
    iris: np.ndarray
    lips: np.ndarray
    hair_style: int
    eye_gap: float
    eye_size: float
    eye_y: float
    nose_len: float
    mouth_w: float
    mouth_y: float
    smile: float
    brow: float


def sample_geometry(rng: np.random.Generator) -> Geometry:
    return Geometry(
        cx=0.5 + rng.normal(0, 0.03),
        cy=0.48 + rng.normal(0, 0.025),
        rx=rng.uniform(0.19, 0.25),
        ry=rng.uniform(0.26, 0.32),
        tilt=rng.normal(0, 0.015),
    )


def sample_identity(rng: np.random.Generator) -> Identity:
    def pick(palette: np.ndarray, spread: float) -> np.ndarray:
        return np.clip(palette[rng.integers(len(palette))] + rng.normal(0, spread, 3), 0, 255)

    skin = pick(SKIN_TONES, 8)
    return Identity(
        skin=skin,
        hair=pick(HAIR_COLOURS, 10),
        iris=pick(IRIS_COLOURS, 10),
        lips=np.clip(skin * np.array([0.85, 0.55, 0.55]) + rng.normal(0, 6, 3), 0, 255),
        hair_style=int(rng.integers(4)),
        eye_gap=rng.uniform(0.36, 0.46),
        eye_size=rng.uniform(0.10, 0.15),
        eye_y=rng.uniform(-0.22, -0.12),
        nose_len=rng.uniform(0.18, 0.28),
        mouth_w=rng.uniform(0.28, 0.42),
        mouth_y=rng.uniform(0.36, 0.48),
        smile=rng.uniform(-0.03, 0.08),
        brow=rng.uniform(0.05, 0.09),
    )


def _rgb(c: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(c, 0, 255))  # type: ignore[return-value]


def draw_background(rng: np.random.Generator, size: int) -> Image.Image:
    """A room-like background: a tinted gradient with a few blurred shapes (drawn small, since it is blurred anyway)."""
    small = max(8, size // 4)
    base = rng.uniform(40, 220, 3)
    other = np.clip(base + rng.normal(0, 40, 3), 0, 255)
    t = np.linspace(0, 1, small)[:, None, None]
    angle = rng.uniform(0, 1)
    grad = (1 - angle) * t + angle * t.transpose(1, 0, 2)
    img = Image.fromarray((base * (1 - grad) + other * grad).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 6)):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * small
        w, h = rng.uniform(0.1, 0.6, 2) * small
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape([x0, y0, x0 + w, y0 + h], fill=_rgb(rng.uniform(20, 235, 3)))
    return img.filter(ImageFilter.GaussianBlur(small / 40)).resize((size, size), Image.BILINEAR)


def draw_person(canvas: Image.Image, g: Geometry, p: Identity, clothes: np.ndarray, rng: np.random.Generator) -> None:
    """Draw shoulders, hair, head, ears and the inner face onto a (supersampled) canvas."""
    s = canvas.size[0]
    d = ImageDraw.Draw(canvas)
    cx, cy, rx, ry = g.cx * s, g.cy * s, g.rx * s, g.ry * s
    # shoulders and neck
    d.ellipse([cx - 2.3 * rx, cy + 1.35 * ry, cx + 2.3 * rx, cy + 3.2 * ry], fill=_rgb(clothes))
    d.rectangle([cx - 0.45 * rx, cy + 0.6 * ry, cx + 0.45 * rx, cy + 1.5 * ry], fill=_rgb(p.skin * 0.85))
    # hair behind the head (long styles reach the shoulders)
    if p.hair_style in (1, 3):
        d.rounded_rectangle([cx - 1.25 * rx, cy - 1.1 * ry, cx + 1.25 * rx, cy + 1.25 * ry], radius=rx, fill=_rgb(p.hair))
    else:
        d.ellipse([cx - 1.12 * rx, cy - 1.15 * ry, cx + 1.12 * rx, cy + 0.4 * ry], fill=_rgb(p.hair))
    # ears and head
    for side in (-1, 1):
        ex = cx + side * rx
        d.ellipse([ex - 0.18 * rx, cy - 0.2 * ry, ex + 0.18 * rx, cy + 0.2 * ry], fill=_rgb(p.skin * 0.92))
    d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=_rgb(p.skin))
    # fringe over the forehead
    if p.hair_style != 2:
        d.chord([cx - 1.02 * rx, cy - 1.05 * ry, cx + 1.02 * rx, cy - 0.15 * ry], 180, 360, fill=_rgb(p.hair))
    draw_inner_face(d, g, p, s, rng)


def draw_inner_face(d: ImageDraw.ImageDraw, g: Geometry, p: Identity, s: int, rng: np.random.Generator) -> None:
    """Eyes, brows, nose, mouth and cheeks: the part a face swap replaces."""
    cx, cy, rx, ry = (g.cx + g.tilt) * s, g.cy * s, g.rx * s, g.ry * s
    ey = cy + p.eye_y * ry
    ew, eh = p.eye_size * rx * 1.6, p.eye_size * ry * 0.7
    for side in (-1, 1):
        ex = cx + side * p.eye_gap * rx
        d.ellipse([ex - ew, ey - eh, ex + ew, ey + eh], fill=(245, 242, 238))
        ir = eh * 0.95
        d.ellipse([ex - ir, ey - ir, ex + ir, ey + ir], fill=_rgb(p.iris))
        d.ellipse([ex - ir * 0.45, ey - ir * 0.45, ex + ir * 0.45, ey + ir * 0.45], fill=(10, 10, 12))
        d.ellipse([ex + ir * 0.1, ey - ir * 0.5, ex + ir * 0.4, ey - ir * 0.2], fill=(255, 255, 255))
        d.arc([ex - ew, ey - eh * 1.2, ex + ew, ey + eh * 1.2], 190, 350, fill=_rgb(p.skin * 0.45), width=max(1, s // 160))
        by = ey - eh - p.brow * ry
        d.line([ex - ew * 1.1, by + 2, ex + ew * 1.1, by - 1], fill=_rgb(p.hair * 0.8), width=max(2, s // 70))
    # nose: a shadowed ridge and nostrils
    ny = ey + p.nose_len * ry
    d.line([cx + 0.03 * rx, ey + 0.1 * ry, cx + 0.08 * rx, ny], fill=_rgb(p.skin * 0.78), width=max(1, s // 120))
    for side in (-1, 1):
        nx = cx + side * 0.09 * rx
        d.ellipse([nx - 0.05 * rx, ny - 0.02 * ry, nx + 0.05 * rx, ny + 0.03 * ry], fill=_rgb(p.skin * 0.6))
    # mouth: lips as a chord, opened by the smile
    my = cy + p.mouth_y * ry
    mw = p.mouth_w * rx
    d.chord([cx - mw, my - 0.06 * ry, cx + mw, my + (0.07 + p.smile) * ry], 0, 180, fill=_rgb(p.lips))
    d.line([cx - mw, my, cx + mw, my], fill=_rgb(p.lips * 0.6), width=max(1, s // 160))
    # cheeks
    for side in (-1, 1):
        kx, ky = cx + side * 0.55 * rx, cy + 0.22 * ry
        blush = p.skin * np.array([1.0, 0.9, 0.9])
        d.ellipse([kx - 0.15 * rx, ky - 0.08 * ry, kx + 0.15 * rx, ky + 0.08 * ry], fill=_rgb(blush))


def ellipse_mask(size: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """A float mask, 1 inside the ellipse (fractions of size), 0 outside."""
    y, x = np.mgrid[0:size, 0:size] / size
    return (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1).astype(np.float32)


def apply_lighting(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A directional light across the image and a slight colour cast."""
    size = img.shape[0]
    y, x = np.mgrid[0:size, 0:size] / size - 0.5
    theta = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0.05, 0.3) * (x * np.cos(theta) + y * np.sin(theta))
    cast = 1 + rng.normal(0, 0.03, 3)
    return img * light[..., None] * cast


def render_face(rng: np.random.Generator, size: int, g: Geometry, p: Identity, scene_seed: int) -> np.ndarray:
    """Render a person at `size`, anti-aliased, as float RGB in [0, 255] (no camera effects yet)."""
    scene = np.random.default_rng(scene_seed)  # background and clothes depend on the scene only
    big = size * SUPERSAMPLE
    canvas = draw_background(scene, big)
    clothes = scene.uniform(10, 240, 3)
    draw_person(canvas, g, p, clothes, rng)
    return np.asarray(canvas.resize((size, size), Image.LANCZOS), dtype=np.float32)


def camera(img: np.ndarray, rng: np.random.Generator, noise: bool = True) -> Image.Image:
    """Lens blur, sensor noise and a JPEG round trip, as a camera and a web upload would leave them."""
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    arr = np.asarray(pil, dtype=np.float32)
    if noise:
        arr = arr + rng.normal(0, rng.uniform(1.5, 4.0), arr.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=int(rng.integers(75, 96)))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def make_real(rng: np.random.Generator, size: int) -> Image.Image:
    g, p = sample_geometry(rng), sample_identity(rng)
    img = render_face(rng, size, g, p, int(rng.integers(2**31)))
    return camera(apply_lighting(img, rng), rng)


def make_face_swap(rng: np.random.Generator, size: int) -> Image.Image:
    """A target person whose inner face is replaced by another identity's, imperfectly blended."""
    g, target, donor = sample_geometry(rng), sample_identity(rng), sample_identity(rng)
    scene_seed = int(rng.integers(2**31))
    base = render_face(rng, size, g, target, scene_seed)
    # the donor face is rendered in the target's pose, then degraded as a swap pipeline would
    donor.skin = target.skin + rng.normal(0, 14, 3)  # skin close to, but not matching, the target's
    patch = render_face(rng, size, g, donor, scene_seed)
    scale = rng.uniform(0.35, 0.7)
    small = max(8, int(size * scale))
    patch = np.asarray(Image.fromarray(patch.astype(np.uint8)).resize((small, small), Image.BILINEAR).resize((size, size), Image.BILINEAR), dtype=np.float32)
    patch = patch * (1 + rng.normal(0, 0.05, 3))  # colour mismatch
    shift = rng.integers(-2, 3, 2)
    patch = np.roll(patch, tuple(int(v) for v in shift), axis=(0, 1))
    mask = ellipse_mask(size, g.cx + g.tilt, g.cy + 0.08 * g.ry, g.rx * rng.uniform(0.72, 0.85), g.ry * rng.uniform(0.62, 0.75))
    feather = size * rng.uniform(0.006, 0.02)
    mask = np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(feather)), np.float32) / 255
    blended = base * (1 - mask[..., None]) + patch * mask[..., None]
    return camera(apply_lighting(blended, rng), rng)


def make_gan_like(rng: np.random.Generator, size: int) -> Image.Image:
    """A face rendered at a lower resolution and upsampled as a GAN generator would, leaving its fingerprints."""
    factor = int(rng.choice([2, 4]))
    low = max(8, size // factor)
    g, p = sample_geometry(rng), sample_identity(rng)
    img = apply_lighting(render_face(rng, low, g, p, int(rng.integers(2**31))), rng)
    up = np.asarray(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize((size, size), Image.NEAREST), np.float32)
    up = np.asarray(Image.fromarray(up.astype(np.uint8)).filter(ImageFilter.GaussianBlur(factor / 3)), np.float32)
    y, x = np.mgrid[0:size, 0:size]
    checker = np.where((x + y) % 2 == 0, 1.0, -1.0)  # transposed-convolution checkerboard
    detail = np.abs(up - up.mean(axis=(0, 1))).mean(axis=2, keepdims=True) / 128
    up = up + rng.uniform(2.0, 5.0) * checker[..., None] * (0.5 + detail)
    period = int(rng.choice([4, 8]))  # a periodic pattern: peaks in the spectrum at size/period
    up = up + rng.uniform(1.5, 3.5) * np.cos(2 * np.pi * x / period)[..., None] * np.cos(2 * np.pi * y / period)[..., None]
    return camera(up, rng, noise=False)


FAKE_MAKERS = {"fakes_dataset": make_face_swap, "synthetic_dataset": make_gan_like}


def split_counts(total: int, fake_fraction: float) -> tuple[int, int]:
    """(n_real, n_fake) for a split of `total` images; both classes get at least one image when total >= 2."""
    n_fake = int(round(total * fake_fraction))
    if total >= 2:
        n_fake = min(max(n_fake, 1), total - 1)
    return total - n_fake, n_fake


def generate(
    out_dir: Path, size: int, counts: dict[str, int], fake_fraction: float, seed: int, datasets=DATASETS, progress: bool = True
) -> int:
    """Write the demo datasets under out_dir; returns the number of images written."""
    jobs = []
    for di, dataset in enumerate(datasets):
        for si, split in enumerate(SPLITS):
            n_real, n_fake = split_counts(counts[split], fake_fraction)
            for ci, (cls, n) in enumerate((("real", n_real), ("fake", n_fake))):
                jobs += [(dataset, split, cls, i, [seed, di, si, ci, i]) for i in range(n)]
    for dataset in datasets:
        for split in SPLITS:
            for cls in ("real", "fake"):
                folder = out_dir / dataset / split / cls
                if folder.exists():
                    shutil.rmtree(folder)  # regenerate cleanly: no stale images from an earlier, larger run
                folder.mkdir(parents=True)
    for dataset, split, cls, i, key in tqdm(jobs, desc="demo images", disable=not progress, unit="img"):
        rng = np.random.default_rng(key)
        img = make_real(rng, size) if cls == "real" else FAKE_MAKERS[dataset](rng, size)
        img.save(out_dir / dataset / split / cls / f"{cls}_{i:05d}.png", compress_level=3)
    (out_dir / DEMO_MARKER).write_text(
        "Synthetic demo data written by tools/make_demo_dataset.py "
        f"(seed={seed}, size={size}, counts={counts}, fake_fraction={fake_fraction}). Not real faces.\n"
    )
    return len(jobs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=DATA_ROOT, help="data root to write (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--train", type=int, default=300, help="images in each train split (default: %(default)s)")
    parser.add_argument("--val", type=int, default=100, help="images in each val split (default: %(default)s)")
    parser.add_argument("--test", type=int, default=100, help="images in each test split (default: %(default)s)")
    parser.add_argument("--fake-fraction", type=probability, default=0.6, help="share of fakes in every split (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="same seed, same bytes (default: %(default)s)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS), help="which datasets to write")
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    if args.size < 16:
        parser.error("--size must be at least 16 pixels")
    if not 0 < args.fake_fraction < 1:
        parser.error("--fake-fraction must be strictly between 0 and 1")
    if min(args.train, args.val, args.test) < 2:
        parser.error("--train/--val/--test need at least 2 images each (one real, one fake)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    counts = {"train": args.train, "val": args.val, "test": args.test}
    n = generate(args.out_dir, args.size, counts, args.fake_fraction, args.seed, tuple(args.datasets), not args.no_progress)
    print(f"wrote {n} demo images ({args.size}x{args.size}) to {args.out_dir}")


if __name__ == "__main__":
    main()
