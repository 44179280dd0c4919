"""What self-blended training sees: real face / blending mask / self-blend / |difference|, and the dataset's own fakes.

    python tools/show_self_blends.py --data-root ../shared/data -d fakes_dataset -n 6
    python tools/show_self_blends.py --real-faces my_faces/ -n 4 --out figures/my_blends.png

Each row is one real training face, its mask (the landmark hull after the random variant, jitter, elastic deformation,
erosion/dilation, blur and blend ratio), the self-blended fake made from it (before the shared post-augmentation) and
the amplified difference, which is zero outside the mask; the last column holds one of the dataset's own fakes for
comparison. Seeded: the same --seed draws the same faces and blends.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cli import UserError, add_data_flags, cli_main, positive_int
from common import DATASETS, DEFAULT_SEED, FIGURES_DIR
from faces_dataset import dataset_dir, evenly_spaced, list_images, load_rgb, real_faces_under
from landmarks import folder_landmarks
from self_blend import SelfBlendPairs
from utils import new_figure, save_figure


def triplets(paths: list[Path], seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(real, self-blend, mask) for each face, the k-th drawn with seed (seed, k)."""
    pairs = SelfBlendPairs(paths, folder_landmarks(paths, progress=False), lambda image: image)
    return [pairs.pair(k, np.random.default_rng((seed, k))) for k in range(len(paths))]


@cli_main
def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_flags(p, dataset=False)
    p.add_argument("-d", "--dataset", choices=DATASETS, default=DATASETS[0], help="dataset (default: %(default)s)")
    p.add_argument("--real-faces", type=Path, help="a folder of real faces instead of the train split's real/")
    p.add_argument("-n", type=positive_int, default=6, help="rows (default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed (default: %(default)s)")
    p.add_argument("--out", type=Path, default=FIGURES_DIR / "self_blend_triplets.png", help="figure (default: %(default)s)")
    args = p.parse_args(argv)
    if args.real_faces is not None:
        reals, fakes = real_faces_under(args.real_faces), []
    else:
        train = dataset_dir(args.dataset, "train", args.data_root)
        reals, fakes = list_images(train / "real"), list_images(train / "fake")
    if not reals:
        raise UserError(f"no real face image in {args.real_faces or train / 'real'}")
    rng = np.random.default_rng(args.seed)
    picked = [reals[i] for i in sorted(rng.choice(len(reals), min(args.n, len(reals)), replace=False))]
    shown_fakes = evenly_spaced(fakes, len(picked))
    columns = ["real face", "mask", "self-blend", "|blend - real| x 4"] + (["a dataset fake"] if fakes else [])
    fig, axes = new_figure(len(picked), len(columns), figsize=(2.1 * len(columns), 2.1 * len(picked)), squeeze=False)
    for row, (real, fake, mask) in enumerate(triplets(picked, args.seed)):
        diff = np.clip(np.abs(fake.astype(int) - real.astype(int)) * 4, 0, 255).astype(np.uint8)
        images = [real, mask, fake, diff] + ([np.asarray(load_rgb(shown_fakes[row]))] if fakes else [])
        for col, image in enumerate(images):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1 if image.ndim == 2 else None)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
        axes[row, 1].set_ylabel(f"max {mask.max():.2f}", fontsize=8)
    fig.suptitle("Self-blended training images: each fake made from one real face (last column: one of the dataset's own fakes)",
                 fontsize=10)
    path = save_figure(fig, args.out)
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main()
