from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from common import DATASETS, DEMO_MARKER, SPLITS
from faces_dataset import is_demo_data
from make_demo_dataset import generate, main, split_counts


def digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_split_counts():
    assert split_counts(10, 0.6) == (4, 6)
    assert split_counts(2, 0.9) == (1, 1)  # both classes present
    assert split_counts(3, 0.01) == (2, 1)


def test_layout_counts_and_marker(demo_root):
    for dataset in DATASETS:
        for split, total in zip(SPLITS, (16, 8, 8)):
            n_real = len(list((demo_root / dataset / split / "real").glob("*.png")))
            n_fake = len(list((demo_root / dataset / split / "fake").glob("*.png")))
            assert (n_real, n_fake) == split_counts(total, 0.6)
    assert is_demo_data(demo_root) and (demo_root / DEMO_MARKER).is_file()
    img = Image.open(next((demo_root / "fakes_dataset" / "train" / "real").glob("*.png")))
    assert img.size == (64, 64) and img.mode == "RGB"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    counts = {"train": 3, "val": 2, "test": 2}
    generate(tmp_path / "a", 32, counts, 0.5, seed=7, progress=False)
    generate(tmp_path / "b", 32, counts, 0.5, seed=7, progress=False)
    generate(tmp_path / "c", 32, counts, 0.5, seed=8, progress=False)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_images_are_not_noise_and_fakes_differ(demo_root):
    """A drawn face has a smooth, structured image: neighbouring pixels correlate far more than in noise."""
    path = next((demo_root / "fakes_dataset" / "train" / "real").glob("*.png"))
    a = np.asarray(Image.open(path), dtype=np.float32).mean(axis=2)
    corr = np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1]
    assert corr > 0.8
    # GAN-like fakes carry a checkerboard: more energy at the Nyquist frequency than reals, on average
    def nyquist(folder):
        vals = []
        for p in sorted(folder.glob("*.png")):
            x = np.asarray(Image.open(p), dtype=np.float32).mean(axis=2)
            spec = np.abs(np.fft.fft2(x - x.mean()))
            vals.append(spec[32, 32] / spec.sum())
        return np.mean(vals)
    syn = demo_root / "synthetic_dataset" / "train"
    assert nyquist(syn / "fake") > 2 * nyquist(syn / "real")


def test_regenerating_removes_stale_images(tmp_path):
    main(["--out-dir", str(tmp_path), "--size", "32", "--train", "6", "--val", "2", "--test", "2"])
    main(["--out-dir", str(tmp_path), "--size", "32", "--train", "2", "--val", "2", "--test", "2"])
    assert len(list((tmp_path / "fakes_dataset" / "train").rglob("*.png"))) == 2
