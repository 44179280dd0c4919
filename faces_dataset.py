"""Datasets of face images: the assignment's real/fake folder layout and the catalog.csv of tools/face_preprocess.py."""
from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from common import IMAGE_EXTENSIONS
from utils import UserError


class DatasetError(UserError, ValueError):
    """A dataset folder or file that cannot be used as given (the message names the path)."""


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder (common extensions only), sorted by name for a deterministic order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def load_rgb(path: Path) -> Image.Image:
    """Open an image as RGB, with an error that names the file when it is unreadable or corrupt."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError as err:
        raise DatasetError(f"image {path} no longer exists; was the dataset moved while in use?") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DatasetError(f"cannot read image {path} ({err}); the file is corrupt: delete or replace it") from err


class FacesDataset(Dataset):
    """Real and fake face images of one split: `<root_path>/real/*` (label 0) then `<root_path>/fake/*` (label 1)."""

    def __init__(self, root_path: str | Path, transform: Callable[[Image.Image], Any] | None = None):
        self.root_path = Path(root_path)
        self.transform = transform
        folders = [self.root_path / "real", self.root_path / "fake"]
        for folder in folders:
            if not folder.is_dir():
                raise DatasetError(f"{folder} does not exist; a split folder must hold real/ and fake/ subfolders")
        self.real_image_names = [p.name for p in list_images(folders[0])]
        self.fake_image_names = [p.name for p in list_images(folders[1])]
        if not self.real_image_names and not self.fake_image_names:
            raise DatasetError(f"{self.root_path} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)} in real/ and fake/)")

    @property
    def labels(self) -> list[int]:
        """Label of every sample in index order (0 real, 1 fake), without reading images."""
        return [0] * len(self.real_image_names) + [1] * len(self.fake_image_names)

    def path_of(self, index: int) -> Path:
        """File path of sample `index`."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {self.root_path} ({len(self)} images)")
        index %= len(self)
        n_real = len(self.real_image_names)
        if index < n_real:
            return self.root_path / "real" / self.real_image_names[index]
        return self.root_path / "fake" / self.fake_image_names[index - n_real]

    def __len__(self) -> int:
        """Number of real plus fake images."""
        return len(self.real_image_names) + len(self.fake_image_names)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """(image, label): the RGB PIL image, transformed when a transform was given; label 0 real, 1 fake."""
        path = self.path_of(index)
        label = 0 if path.parent.name == "real" else 1
        image = load_rgb(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


CATALOG_COLUMNS = ("path", "source", "frame_index", "timestamp", "x1", "y1", "x2", "y2", "prob", "label", "split")


class CatalogDataset(Dataset):
    """Face crops listed in a catalog.csv written by tools/face_preprocess.py (rows with an empty label are skipped).

    `split` keeps only the rows of that split (train/val/test), which face_preprocess.py assigns per source video.
    """

    def __init__(
        self, csv_path: str | Path, transform: Callable[[Image.Image], Any] | None = None, split: str | None = None
    ):
        self.csv_path = Path(csv_path)
        self.transform = transform
        if not self.csv_path.is_file():
            raise DatasetError(f"catalog {self.csv_path} does not exist; create it with tools/face_preprocess.py")
        with open(self.csv_path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"path", "label"} - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(f"catalog {self.csv_path} lacks the column(s) {', '.join(sorted(missing))}")
            if split is not None and "split" not in (reader.fieldnames or []):
                raise DatasetError(f"catalog {self.csv_path} has no split column; run face_preprocess.py with --split")
            rows = [r for r in reader if r["label"] not in ("", None) and (split is None or r["split"] == split)]
        if not rows:
            which = f" in split {split!r}" if split else ""
            raise DatasetError(
                f"catalog {self.csv_path} has no labelled rows{which} (run face_preprocess.py with --label-from folder)"
            )
        self.paths = [self._resolve(r["path"]) for r in rows]
        try:
            self._labels = [int(r["label"]) for r in rows]
        except ValueError as err:
            raise DatasetError(f"catalog {self.csv_path} has a non-integer label ({err})") from err
        if set(self._labels) - {0, 1}:
            raise DatasetError(f"catalog {self.csv_path} has labels other than 0 (real) and 1 (fake)")

    def _resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.csv_path.parent / p

    @property
    def labels(self) -> list[int]:
        """Label of every sample in index order."""
        return list(self._labels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {self.csv_path} ({len(self)} rows)")
        image = load_rgb(self.paths[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self._labels[index]
