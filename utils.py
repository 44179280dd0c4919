"""Small helpers shared by the scripts: device, seeding, transforms, dataset loading, atomic writes, CLI errors."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms

from common import (
    DATA_ROOT,
    DATASETS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_SEED,
    DEMO_MARKER,
    FIGURES_DIR,
    IMAGE_SIZE,
    NORM_MEAN,
    NORM_STD,
    SPLITS,
)


class UserError(Exception):
    """An error caused by the user's input (bad path, flag, file): printed as one line, without a traceback."""


def cli_main(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a script's main(argv) so a UserError exits with status 2 and a one-line message."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> Any:
        try:
            return main(argv)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


def get_device(prefer: str = "auto") -> torch.device:
    """Return the requested device; 'auto' picks cuda > mps > cpu."""
    if prefer == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if prefer.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {prefer} was asked for but CUDA is not available; use --device cpu or auto")
    if prefer == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was asked for but MPS is not available; use --device cpu or auto")
    try:
        return torch.device(prefer)
    except RuntimeError as err:
        raise UserError(f"unknown device {prefer!r} (use auto, cpu, cuda, cuda:N or mps)") from err


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; deterministic=True also makes cuDNN deterministic (slower)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def get_transforms(train: bool, image_size: int = IMAGE_SIZE) -> transforms.Compose:
    """The assignment's transforms: resize, (random flip when training), to tensor, normalise to [-1, 1]."""
    steps: list[Any] = [transforms.Resize((image_size, image_size))]
    if train:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(NORM_MEAN, NORM_STD)]
    return transforms.Compose(steps)


def normalize(images: torch.Tensor, mean=NORM_MEAN, std=NORM_STD) -> torch.Tensor:
    """Map [0, 1] pixels (B,3,H,W) to the model's input scale."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s


def denormalize(images: torch.Tensor, mean=NORM_MEAN, std=NORM_STD) -> torch.Tensor:
    """Inverse of normalize: model inputs (B,3,H,W) back to [0, 1] pixels."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return images * s + m


def to_display(image: torch.Tensor) -> np.ndarray:
    """A normalised (3,H,W) model input as an (H,W,3) float32 array in [0,1], for imshow and CAM overlays."""
    return denormalize(image[None])[0].clamp(0, 1).permute(1, 2, 0).detach().cpu().numpy().astype(np.float32)


def dataset_dir(dataset_name: str, split: str, data_root: str | Path | None = None) -> Path:
    """Path of <root>/<dataset>/<split>, with a clear error when the name or the folder is wrong."""
    if dataset_name not in DATASETS:
        raise UserError(f"unknown dataset {dataset_name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    root = Path(data_root) if data_root is not None else DATA_ROOT
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
    augment: bool | None = None,
) -> Dataset:
    """Load one split of a dataset with the assignment's transforms (augmentation on the train split by default)."""
    from faces_dataset import FacesDataset  # local import: faces_dataset imports utils

    if augment is None:
        augment = dataset_part == "train"
    path = dataset_dir(dataset_name, dataset_part, data_root)
    dataset = FacesDataset(path, transform=get_transforms(train=augment, image_size=image_size))
    return evenly_spaced_subset(dataset, limit)


def dataset_labels(dataset: Dataset) -> list[int]:
    """Labels of a FacesDataset or a Subset of one, without loading any image."""
    if isinstance(dataset, Subset):
        parent = dataset_labels(dataset.dataset)
        return [parent[i] for i in dataset.indices]
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise TypeError(f"{type(dataset).__name__} does not expose .labels")
    return list(labels)


def default_num_workers() -> int:
    """DataLoader workers: one per two cores (at most 8), so PNG decoding overlaps with compute."""
    return min(8, (os.cpu_count() or 1) // 2)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    device: torch.device,
    num_workers: int | None = None,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader with workers and pin_memory chosen for the device; `generator` makes the shuffle reproducible."""
    workers = default_num_workers() if num_workers is None else num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=generator,
    )


def get_nof_params(model: nn.Module) -> int:
    """Number of trainable parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write JSON to a temp file then rename it, so a crash never leaves a half-written file."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)

    _atomic_write(Path(path), write)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save through a temp file and a rename (see atomic_write_json)."""
    _atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def read_json_list(path: str | Path) -> list[dict]:
    """Read a JSON log (a list of run records), with a clear error when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"JSON log {path} does not exist; train first (train_main.py writes out/<dataset>_<model>_<opt>.json)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"JSON log {path} is corrupt ({err.msg} at line {err.lineno}); delete it and train again") from err
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"JSON log {path} is not a list of run records")
    return data


def weight_search_dirs() -> list[Path]:
    """Folders searched for pretrained weights, in order: $FMD_WEIGHTS_DIR, then torch's hub cache."""
    dirs = [Path(os.environ["FMD_WEIGHTS_DIR"])] if os.environ.get("FMD_WEIGHTS_DIR") else []
    return dirs + [Path(torch.hub.get_dir()) / "checkpoints"]


def resolve_pretrained_weights(
    what: str, filenames: tuple[str, ...], url: str | None, explicit: str | Path | None = None
) -> Path:
    """Find a pretrained weight file: the explicit path, else the first known filename in weight_search_dirs().

    When nothing is found and FMD_OFFLINE is not set, the usual download into torch's hub cache is tried (announced);
    otherwise a UserError names the file, the folders searched and the fallback flag.
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise UserError(f"--weights {path} does not exist")
        return path
    dirs = weight_search_dirs()
    for folder in dirs:
        for name in filenames:
            if (folder / name).is_file():
                return folder / name
    hub_dir = dirs[-1]
    if url is not None and os.environ.get("FMD_OFFLINE", "0") in ("", "0"):
        target = hub_dir / filenames[0]
        print(f"downloading {what} ImageNet weights from {url} to {target} (set FMD_OFFLINE=1 to never download)")
        try:
            hub_dir.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(target), progress=True)
            return target
        except OSError as err:  # URLError, DNS failure, refused connection: we are offline
            print(f"download failed: {err}", file=sys.stderr)
    searched = ", ".join(str(d) for d in dirs)
    source = f" (download: {url})" if url else ""
    raise UserError(
        f"pretrained {what} weights not found: put {filenames[0]}{source} in one of [{searched}] "
        "or pass --weights PATH, or use --no-pretrained to start from random weights"
    )


def new_figure(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """plt.subplots on the non-interactive Agg backend (scripts only write files; works headless and on Colab)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a matplotlib figure (creating its folder), close it, and say where it went."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(f"saved {path}")
    return path


def add_analysis_args(parser: Any, model_names: tuple[str, ...]) -> None:
    """The flags every analysis script shares: the assignment's -m/-cpp/-d plus data, device, seed and output."""
    parser.add_argument("-m", "--model", choices=model_names, required=True, help="model name")
    parser.add_argument("-cpp", "--checkpoint_path", "--checkpoint", dest="checkpoint_path", type=Path, required=True,
                        help="checkpoint written by train_main.py, e.g. checkpoints/fakes_dataset_SimpleNet_Adam.pt")
    parser.add_argument("-d", "--dataset", choices=DATASETS, required=True, help="dataset name")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT, help="folder holding the datasets (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed for sampling images (default: %(default)s)")
    parser.add_argument("--limit", type=int, help="use at most this many test images")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="batch size (default: %(default)s)")
    parser.add_argument("--figures-dir", type=Path, default=FIGURES_DIR, help="output folder (default: %(default)s)")


def sample_batch(dataset: Dataset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n random samples of a dataset (seeded, so the same images come back every run) as (images, labels)."""
    loader = DataLoader(dataset, batch_size=n, shuffle=True, generator=torch.Generator().manual_seed(seed))
    images, labels = next(iter(loader))
    return images, labels


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients inside; the previous mode and requires_grad flags are restored after."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
