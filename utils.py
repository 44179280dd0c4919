"""Small helpers shared by the scripts: device, seeding, input normalisation, loaders, atomic writes, CLI errors and flags."""
from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import io
import json
import math
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from common import WORK_DIR


class UserError(Exception):
    """An error caused by the user's input (bad path, flag, file): printed as one line, without a traceback."""


def one_line(err: BaseException) -> str:
    """The user-facing sentence of an error; a DataLoader worker's re-raise carries the worker's whole traceback in its
    message, whose last line is the original 'DatasetError: ...' sentence."""
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def cli_main(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a script's main(argv) so a UserError exits with status 2 and a one-line message."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> Any:
        try:
            return main(argv)
        except UserError as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("\nstopped by Ctrl-C", file=sys.stderr)
            raise SystemExit(130) from None

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


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a bad value is one clear sentence and exit 2, before any work)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def float_type(wanted: str, ok: Callable[[float], bool] = lambda _: True) -> Callable[[str], float]:
    """An argparse type for a float that must be finite and satisfy `ok` ("must be <wanted>, got <text>" otherwise).
    Every float flag of the suite parses through one of these, so none lets a NaN through to a split, a budget or a
    rate (a NaN compares False with everything, and silently so)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = wanted.replace(" ", "_")  # argparse names the type in its messages
    return parse


finite_float = float_type("a finite number")
positive_float = float_type("a finite number above 0", lambda v: v > 0)
non_negative_float = float_type("a finite number of 0 or more", lambda v: v >= 0)
probability = float_type("a probability between 0 and 1", lambda v: 0 <= v <= 1)
crop_margin = float_type("a finite number above -0.5", lambda v: v > -0.5)  # a face box's growth per side (-0.5: none)


def comma_choices(choices: Iterable[str]) -> Callable[[str], list[str]]:
    """argparse type: a comma-separated, non-empty subset of `choices`, in the order given, without repeats."""
    allowed = list(choices)

    def parse(text: str) -> list[str]:
        names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        if not names or any(n not in allowed for n in names):
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}, got {text}")
        return names

    return parse


def writable_dir(path: str | Path, what: str) -> Path:
    """Create `path` if needed and check a file can be written there, before hours of work depend on it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder; pass another folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".fmd-write-check-"):
            pass
    except OSError as err:
        raise UserError(f"{what} {path} is not writable ({err.strerror or err}); pass a writable folder") from err
    return path


def default_num_workers() -> int:
    """DataLoader workers: none below 4 cores, else one per two cores (at most 8). Measured on 2 cores (Bonus, 224 px,
    ../shared/data): a worker process takes a core from the two compute threads and costs a copy per batch, so the
    Trainer ran at 226 img/s with one worker and 380 without."""
    cores = os.cpu_count() or 1
    return 0 if cores < 4 else min(8, cores // 2)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    device: torch.device,
    num_workers: int | None = None,
    generator: torch.Generator | None = None,
    sampler: torch.utils.data.Sampler | None = None,
    drop_last: bool = False,
    collate_fn: Callable | None = None,
) -> DataLoader:
    """A DataLoader with workers and pin_memory chosen for the device; `generator` makes the shuffle reproducible."""
    workers = default_num_workers() if num_workers is None else num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=generator,
        drop_last=drop_last,
        collate_fn=collate_fn,
    )


def get_nof_params(model: nn.Module) -> int:
    """Number of trainable parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def atomic_write(path: str | Path, write: Callable[[str], None], what: str = "file") -> None:
    """Call write(temp path) for a temp file beside `path`, then rename it over `path`: the old file survives any
    failure, and the new one gets the usual permissions (mkstemp's are owner-only). A full disk is one sentence that
    says the previous `what` is kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"no space left on device while saving {path}; the previous {what} is kept") from err
        raise


def remove_stale_temp_files(folder: str | Path, name: str) -> None:
    """Delete temp files a killed writer of `name` left behind in `folder` (see atomic_write)."""
    for stale in Path(folder).glob(f".{name}.*.tmp"):
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def file_lock(path: str | Path, wait: bool = True) -> Iterator[Any]:
    """Hold an exclusive OS lock (POSIX flock) on the file `path` (created if needed), yielding its handle: wait for
    it, or with wait=False raise BlockingIOError at once when another process holds it. The OS drops the lock when the
    process ends, however it ends, so nothing stale is left. No-op (yields None) where flock is missing (Windows)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; concurrent processes there are not kept apart
        yield None
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def run_lock(path: str | Path, what: str, hint: str) -> Iterator[None]:
    """Hold the lock file `path` for a whole run, so a second run of the same name stops at once with one sentence
    (which process holds it, and `hint`) instead of overwriting the first one's files."""
    with contextlib.ExitStack() as stack:
        try:  # only taking the lock: an error of the same type inside the run is the run's own
            handle = stack.enter_context(file_lock(path, wait=False))
        except BlockingIOError:
            holder = Path(path).read_text().strip() or "another process"
            raise UserError(f"{what} is already running ({holder}); {hint}") from None
        if handle is not None:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
            handle.flush()
        yield


def json_safe(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None, so the JSON written is valid JSON (no NaN literal,
    which strict parsers and browsers refuse) and a missing number reads as missing, not as a number."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write JSON (non-finite numbers as null, see json_safe) to a temp file then rename it, so a crash never leaves a
    half-written file."""
    safe = json_safe(obj)

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(safe, f, indent=2, allow_nan=False)

    atomic_write(path, write)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save through a temp file and a rename (see atomic_write). The bytes are made in memory first and written
    with Python's own file I/O, so a full disk raises ENOSPC (torch's writer reports only 'unexpected pos ...')."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), what="checkpoint")


def ensure_free_space(folder: str | Path, needed_bytes: int, what: str, hint: str) -> None:
    """Refuse to start work whose result (`what`, about needed_bytes) could not be saved in `folder` (created)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise UserError(f"not enough free space in {folder} to save {what}: it needs about {needed_bytes / 1e6:.0f} MB, "
                        f"{free / 1e6:.0f} MB are free; {hint}")


def resolve_input_path(path: str | Path) -> Path:
    """A relative input path as given, or else under $FMD_WORK_DIR, where the suite writes out/ and checkpoints/
    (so the assignment's `-j out/...` and `-cpp checkpoints/...` work from the repo with a work dir set)."""
    path = Path(path)
    if path.exists() or path.is_absolute() or not (WORK_DIR / path).exists():
        return path
    return WORK_DIR / path


def new_figure(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """plt.subplots on the non-interactive Agg backend (scripts only write files; works headless and on Colab)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig: Any, path: str | Path, provenance: dict[str, str] | None = None) -> Path:
    """Save a matplotlib figure (creating its folder), close it, and say where it went; `provenance` (e.g. the
    checkpoint and its SHA-256) goes into the PNG's text chunks, so a figure says what it was drawn from."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata=provenance or None)
    plt.close(fig)
    print(f"saved {path}")
    return path


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
