"""Files the suite writes, written safely: atomically (temp file, then rename: the old file survives any failure),
JSON without NaN literals, checkpoints whose full-disk error is one sentence, free space checked before long work,
and OS file locks for logs and runs."""
from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cli import UserError


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
