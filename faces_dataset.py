"""Datasets of face images: the assignment's real/fake folder layout and the catalog.csv of tools/face_preprocess.py;
the transforms (per-model normalisation, optional train-time augmentation) and split loading."""
from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset, Subset
from torchvision import transforms
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import v2

from cli import UserError
from common import DATA_ROOT, DATASETS, DEMO_MARKER, IMAGE_EXTENSIONS, IMAGE_SIZE, SPLITS
from normalization import ASSIGNMENT_NORM, Normalization

# Pillow: with the transform, 2,600 img/s against torchvision.io's 2,430 on ../shared/data's 224 px JPEGs (2 cores)
DEFAULT_DECODER = "pil"
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class DatasetError(UserError, ValueError):
    """A dataset folder or file that cannot be used as given (the message names the path)."""


def is_hidden(path: Path, root: Path | None = None) -> bool:
    """A hidden file or one inside a hidden folder below `root` (macOS ._* AppleDouble files and .DS_Store, editors'
    and writers' .*.tmp files): never an input anywhere in the suite."""
    parts = path.relative_to(root).parts if root is not None else (path.name,)
    return any(part.startswith(".") for part in parts)


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder (common extensions only, hidden files skipped), sorted by name for a deterministic
    order."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not is_hidden(p))


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB of any PIL image; 16-bit greyscale is scaled to 8 bits (Pillow's own convert clips it to white)."""
    if img.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(img, dtype=np.float64)
        grey = np.clip(np.round(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return img.convert("RGB")


def load_rgb(path: Path) -> Image.Image:
    """Open an image as RGB, with an error that names the file when it is unreadable, corrupt or absurdly large."""
    try:
        with Image.open(path) as img:
            return to_rgb(ImageOps.exif_transpose(img))  # a phone's sideways-stored photo, upright as viewers show it
    except FileNotFoundError as err:
        raise DatasetError(f"image {path} is listed but cannot be found ({err.strerror}); was it deleted or moved?") from err
    except Image.DecompressionBombError as err:
        raise DatasetError(f"image {path} is too large to decode safely ({err}); resize it below 89 megapixels") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"cannot read image {path} ({err}); it is not a readable image (corrupt, truncated or "
                           "another format): check or replace it") from err


DECODERS = ("pil", "torchvision")
JPEG_SUFFIXES = (".jpg", ".jpeg")


def load_image(path: Path, decoder: str = "pil") -> Image.Image | torch.Tensor:
    """RGB pixels of an image file. decoder='torchvision' decodes JPEGs with torchvision.io.decode_jpeg into a uint8
    3xHxW tensor (the same pixels as Pillow; speeds: tools/bench_report.py) after Pillow has read the header, which
    refuses decompression bombs; other formats (16-bit PNG, WebP, ...) and JPEGs it cannot decode (CMYK) go through
    Pillow, which also names the problem of a corrupt file. decoder='pil' always gives a PIL image."""
    if decoder == "torchvision" and path.suffix.lower() in JPEG_SUFFIXES:
        try:
            with Image.open(path) as img:  # reads the header only; raises DecompressionBombError for absurd sizes
                cmyk = img.mode == "CMYK"
            if not cmyk:
                return decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True)
        except (RuntimeError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            pass  # load_rgb below raises the one-sentence error for it
    return load_rgb(path)


class FacesDataset(Dataset):
    """Real and fake face images of one split: `<root_path>/real/*` (label 0) then `<root_path>/fake/*` (label 1).

    Items are PIL images unless decoder='torchvision' (JPEGs then come as uint8 tensors; get_transforms takes both).
    """

    def __init__(self, root_path: str | Path, transform: Callable[[Image.Image], Any] | None = None, decoder: str = "pil"):
        self.root_path = Path(root_path)
        self.transform = transform
        self.decoder = decoder
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
        image = load_image(path, self.decoder)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


CATALOG_COLUMNS = ("path", "source", "frame_index", "timestamp", "x1", "y1", "x2", "y2", "prob", "label", "split")


class CatalogDataset(Dataset):
    """Face crops listed in a catalog.csv written by tools/face_preprocess.py (rows with an empty label are skipped).

    `split` keeps only the rows of that split (train/val/test), which face_preprocess.py assigns per source video.
    """

    def __init__(
        self, csv_path: str | Path, transform: Callable[[Image.Image], Any] | None = None, split: str | None = None,
        decoder: str = "pil",
    ):
        self.csv_path = Path(csv_path)
        self.transform = transform
        self.decoder = decoder
        if not self.csv_path.is_file():
            raise DatasetError(f"catalog {self.csv_path} does not exist; create it with tools/face_preprocess.py")
        text = self.csv_path.read_text()
        if text and not text.endswith("\n"):
            raise DatasetError(f"catalog {self.csv_path}: line {text.count(chr(10)) + 1} is cut short (an interrupted "
                               "tools/face_preprocess.py run); run it again into the same --out-dir to finish the "
                               "catalog, or delete that line")
        with open(self.csv_path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"path", "label"} - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(f"catalog {self.csv_path} lacks the column(s) {', '.join(sorted(missing))}")
            if split is not None and "split" not in (reader.fieldnames or []):
                raise DatasetError(f"catalog {self.csv_path} has no split column; write it again with "
                                   "tools/face_preprocess.py (it assigns every source video to a split)")
            all_rows = list(reader)
            rows = [r for r in all_rows if r["label"] not in ("", None) and (split is None or r["split"] == split)]
        if not rows:
            which = f" in split {split!r}" if split else ""
            labelled = split is not None and any(r["label"] not in ("", None) for r in all_rows)
            advice = ("no source fell into this split: add videos, or change face_preprocess.py's --split fractions"
                      if labelled else "run face_preprocess.py with --label-from folder")
            raise DatasetError(f"catalog {self.csv_path} has no labelled rows{which} ({advice})")
        self.paths = [self._resolve(r["path"], k) for k, r in enumerate(rows)]
        self._sources = [r.get("source") or r["path"] for r in rows]  # the video (or photo) each crop comes from
        try:
            self._labels = [int(r["label"]) for r in rows]
        except ValueError as err:
            raise DatasetError(f"catalog {self.csv_path} has a non-integer label ({err})") from err
        if set(self._labels) - {0, 1}:
            raise DatasetError(f"catalog {self.csv_path} has labels other than 0 (real) and 1 (fake)")

    def _resolve(self, path: str, row: int) -> Path:
        """A row's path: an absolute one as written (the catalog names that file on purpose), a relative one under the
        catalog's folder; a relative path that climbs out of it (through ..) is refused."""
        if Path(path).is_absolute():
            return Path(path)
        folder = self.csv_path.parent.resolve()
        if not (folder / path).resolve().is_relative_to(folder):
            raise DatasetError(f"catalog {self.csv_path}, data row {row + 1}: the relative path {path} leads outside the "
                               "catalog's folder; relative paths stay under it (write an absolute path to name a file "
                               "elsewhere)")
        return folder / path

    @property
    def labels(self) -> list[int]:
        """Label of every sample in index order."""
        return list(self._labels)

    @property
    def sources(self) -> list[str]:
        """Source video (or photo) of every sample in index order, for per-video scores."""
        return list(self._sources)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {self.csv_path} ({len(self)} rows)")
        image = load_image(self.paths[index], self.decoder)
        if self.transform is not None:
            image = self.transform(image)
        return image, self._labels[index]


AUGMENTATIONS = ("artefacts", "cnndetection")


def get_transforms(
    train: bool, image_size: int = IMAGE_SIZE, norm: Normalization = ASSIGNMENT_NORM, augment: bool | str = False,
    crop: int | None = None,
) -> Callable[[Image.Image], torch.Tensor]:
    """The assignment's transforms (resize, a random flip when training, to tensor, normalise with the model's `norm`).

    Training only: augment (True or 'artefacts') adds the artefact-aware recipe face-swap detectors are trained with
    (DeepfakeBench): JPEG re-compression (quality 30-95, p=0.5), Gaussian blur (sigma 0.1-2, p=0.3) and colour jitter
    (p=0.5); 'cnndetection' is Wang et al.'s (CVPR 2020) recipe for GAN images, which lets a detector trained on one GAN
    catch others: Gaussian blur (sigma 0-3, p=0.5) and JPEG (quality 30-100, p=0.5). crop, when given, takes a random
    crop x crop window of the image at image_size instead of using it whole (CNNDetection trains on crops at native
    resolution: give image_size = the images' own size). Labels are unchanged; evaluation sees the whole image.
    """
    steps: list[Any] = [v2.Resize((image_size, image_size))]
    if train and crop is not None:
        steps.append(v2.RandomCrop(crop))
    if train:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(v2.ToImage())  # PIL images or uint8 tensors (torchvision.io); for PIL exactly ToTensor's numbers
    if train and augment in (True, "artefacts"):
        steps += [v2.RandomApply([v2.JPEG((30, 95))], p=0.5),
                  v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 2.0))], p=0.3),
                  v2.RandomApply([v2.ColorJitter(0.2, 0.2, 0.2, 0.02)], p=0.5)]
    elif train and augment == "cnndetection":
        steps += [v2.RandomApply([v2.GaussianBlur(19, sigma=(1e-3, 3.0))], p=0.5),
                  v2.RandomApply([v2.JPEG((30, 100))], p=0.5)]
    return v2.Compose(steps + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(norm.mean, norm.std)])


def dataset_dir(dataset_name: str, split: str, data_root: str | Path | None = None) -> Path:
    """Path of <root>/<dataset>/<split>, with a clear error when the name or the folder is wrong."""
    if dataset_name not in DATASETS:
        raise UserError(f"unknown dataset {dataset_name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    root = Path(data_root) if data_root is not None else DATA_ROOT
    if root.is_file():
        raise UserError(f"data root {root} is a file, not a folder; pass the folder that holds {dataset_name}/")
    if not root.is_dir():
        raise UserError(
            f"data root {root} does not exist; pass --data-root DIR (or set FMD_DATA_ROOT), "
            "or create demo data with: python tools/make_demo_dataset.py --out-dir data"
        )
    path = root / dataset_name / split
    if not path.is_dir():
        raise UserError(f"{path} does not exist; expected the layout <root>/{dataset_name}/{{train,val,test}}/{{real,fake}}/")
    return path


def is_demo_data(data_root: str | Path | None = None) -> bool:
    """True when the data root was written by tools/make_demo_dataset.py."""
    root = Path(data_root) if data_root is not None else DATA_ROOT
    return (root / DEMO_MARKER).is_file()


def list_files_under(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    """Files with one of `extensions` anywhere under a folder, hidden ones skipped (is_hidden), sorted by path."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in extensions and not is_hidden(p, folder))


REAL_NAMES = {"real", "original", "original_sequences", "pristine", "youtube", "actors", "0_real"}
FAKE_NAMES = {"fake", "manipulated", "manipulated_sequences", "deepfakes", "deepfake", "faceswap", "face2face",
              "neuraltextures", "faceshifter", "synthetic", "1_fake"}


def label_from_path(relative: Path) -> int | None:
    """0 / 1 from the first folder name that says real or fake, or None."""
    for part in relative.parts[:-1]:
        name = part.lower()
        if name in REAL_NAMES:
            return 0
        if name in FAKE_NAMES:
            return 1
    return None


def real_faces_under(folder: Path) -> list[Path]:
    """The real faces of a folder of faces (--real-faces): every image when no folder below it names a class, else
    only those in a real one (real/, original/, ...; label_from_path), so a labelled layout's fakes are never taken for
    real faces. A folder whose class folders are all fake holds no real face: a DatasetError."""
    folder = Path(folder)
    files = list_files_under(folder)
    labels = [label_from_path(p.relative_to(folder)) for p in files]
    if all(label is None for label in labels):
        return files
    reals = [p for p, label in zip(files, labels) if label == 0]
    if not reals:
        raise DatasetError(f"{folder} holds fake/ faces but no real/ folder; --real-faces needs real faces (only the "
                           "real/ folders of a labelled layout are read)")
    return reals


def evenly_spaced(items: list, limit: int | None) -> list:
    """At most `limit` items, evenly spaced over the list (all of them without a limit)."""
    if limit is None or limit >= len(items):
        return list(items)
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))]


def split_paths(dataset: Dataset, label: int) -> list[Path]:
    """Files of one class of a FacesDataset or CatalogDataset (or a Subset of one), in index order."""
    if isinstance(dataset, Subset):
        inner = dataset.dataset
        indices = dataset.indices
    else:
        inner, indices = dataset, range(len(dataset))  # type: ignore[arg-type]
    labels = dataset_labels(inner)
    path_of = inner.path_of if isinstance(inner, FacesDataset) else (lambda i: inner.paths[i])
    return [path_of(i) for i in indices if labels[i] == label]


def evenly_spaced_subset(dataset: Dataset, limit: int | None) -> Dataset:
    """Keep at most `limit` samples, evenly spaced over the sorted listing so both classes stay in proportion."""
    n = len(dataset)  # type: ignore[arg-type]
    if limit is None or limit >= n:
        return dataset
    if limit < 1:
        raise UserError(f"--limit must be a positive number of samples, got {limit}")
    indices = np.unique(np.linspace(0, n - 1, limit).round().astype(int)).tolist()
    return Subset(dataset, indices)


def load_dataset(
    dataset_name: str,
    dataset_part: str,
    data_root: str | Path | None = None,
    image_size: int = IMAGE_SIZE,
    limit: int | None = None,
    norm: Normalization = ASSIGNMENT_NORM,
    augment: bool | str = False,
    pixel_transform: Callable[[Image.Image], Image.Image] | None = None,
    catalog: str | Path | None = None,
    decoder: str = DEFAULT_DECODER,
    crop: int | None = None,
) -> Dataset:
    """One split with the assignment's transforms for `norm` (flip on the train split; `augment` adds a recipe and
    `crop` random crops, see get_transforms).

    pixel_transform, when given, alters each RGB image before the model's transform (e.g. a JPEG re-compression);
    it works on PIL images, so JPEGs are then decoded by Pillow instead of `decoder`.
    catalog, when given, reads the split's rows of that catalog.csv instead of <data_root>/<dataset_name>/<split>.
    """
    train = dataset_part == "train"
    transform = get_transforms(train, image_size, norm, augment if train else False, crop if train else None)
    if pixel_transform is not None:
        transform = transforms.Compose([pixel_transform, transform])
        decoder = "pil"
    if catalog is not None:
        return evenly_spaced_subset(CatalogDataset(catalog, transform, split=dataset_part, decoder=decoder), limit)
    folder = dataset_dir(dataset_name, dataset_part, data_root)
    return evenly_spaced_subset(FacesDataset(folder, transform=transform, decoder=decoder), limit)


def catalog_run_name(catalog: str | Path) -> str:
    """The dataset part of output names for a catalog.csv: 'catalog-<its folder>' (never a -d dataset's files)."""
    return f"catalog-{Path(catalog).resolve().parent.name}"


def _per_sample(dataset: Dataset, attribute: str) -> list | None:
    """dataset.<attribute> (labels, sources) in index order, through Subsets; None when the dataset has none."""
    if isinstance(dataset, Subset):
        parent = _per_sample(dataset.dataset, attribute)
        return None if parent is None else [parent[i] for i in dataset.indices]
    values = getattr(dataset, attribute, None)
    return None if values is None else list(values)


def dataset_labels(dataset: Dataset) -> list[int]:
    """Labels of a FacesDataset, CatalogDataset or a Subset of one, without loading any image."""
    labels = _per_sample(dataset, "labels")
    if labels is None:
        raise TypeError(f"{type(dataset).__name__} does not expose .labels")
    return labels


def dataset_sources(dataset: Dataset) -> list[str] | None:
    """Source video of every sample of a CatalogDataset (or a Subset of one); None for folder datasets."""
    return _per_sample(dataset, "sources")
