"""The command line's shared parts: one-sentence errors (UserError, cli_main), argparse types that refuse bad values
at parsing (NaN included), and the flags several scripts share, declared once (add_*_flags, in argument groups)."""
from __future__ import annotations

import argparse
import functools
import math
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from common import DATA_ROOT, DATASETS, DEFAULT_BATCH_SIZE, FIGURES_DIR, OUT_DIR, WORK_DIR


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


def resolve_input_path(path: str | Path) -> Path:
    """A relative input path as given, or else under $FMD_WORK_DIR, where the suite writes out/ and checkpoints/
    (so the assignment's `-j out/...` and `-cpp checkpoints/...` work from the repo with a work dir set)."""
    path = Path(path)
    if path.exists() or path.is_absolute() or not (WORK_DIR / path).exists():
        return path
    return WORK_DIR / path


# ---- the flags several scripts share, declared once (each script adds the ones it takes) --------------------------
COMMON_TITLE = "common options"


def common_group(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The parser's 'common options' group (made on first use), so -h shows the shared flags together."""
    for group in parser._action_groups:
        if group.title == COMMON_TITLE:
            return group
    return parser.add_argument_group(COMMON_TITLE, "the same flag means the same thing in every script of the suite")


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    common_group(parser).add_argument("--device", default="auto",
                                      help="auto, cpu, cuda, cuda:N or mps (default: %(default)s: cuda > mps > cpu)")


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    common_group(parser).add_argument("--no-progress", action="store_true", help="no progress bars")


def add_workers_flag(parser: argparse.ArgumentParser) -> None:
    common_group(parser).add_argument("--num-workers", type=non_negative_int,
                                      help="DataLoader workers (default: none below 4 CPU cores, else half the cores, at most 8)")


def add_batch_size_flag(parser: argparse.ArgumentParser, default: int = DEFAULT_BATCH_SIZE, what: str = "batch size",
                        short: bool = False) -> None:
    """--batch-size (with the assignment's -b/--batch_size spellings where short)."""
    names = ("-b", "--batch_size", "--batch-size") if short else ("--batch-size",)
    common_group(parser).add_argument(*names, dest="batch_size", type=positive_int, default=default,
                                      help=f"{what} (default: %(default)s)")


def add_data_flags(parser: argparse.ArgumentParser, dataset: bool = True, dataset_default: str | None = None,
                   root_help: str = "folder holding the datasets", root_default: Path | None = DATA_ROOT) -> None:
    """--data-root, and -d/--dataset when the script takes one."""
    group = common_group(parser)
    if dataset:
        group.add_argument("-d", "--dataset", choices=DATASETS, default=dataset_default,
                           help="dataset name" + (f" (default: {dataset_default})" if dataset_default else ""))
    group.add_argument("--data-root", type=Path, default=root_default,
                       help=root_help + (" (default: %(default)s)" if root_default is not None else ""))


def add_checkpoint_flag(parser: argparse.ArgumentParser, required: bool = True, default: Path | None = None,
                        help: str = "checkpoint written by train_main.py (or MesoNet's .h5, or a fused detector's "
                        ".fused.json)") -> None:
    """-cpp/--checkpoint_path/--checkpoint: the assignment's flag and its spellings."""
    common_group(parser).add_argument("-cpp", "--checkpoint_path", "--checkpoint", dest="checkpoint_path", type=Path,
                                      required=required, default=default, help=help)


def add_output_flags(parser: argparse.ArgumentParser, out: str | None = None, figures: str | None = None) -> None:
    """--out-dir (JSON files) and --figures-dir, each with what the script writes there."""
    group = common_group(parser)
    if out is not None:
        group.add_argument("--out-dir", type=Path, default=OUT_DIR, help=f"{out} (default: %(default)s)")
    if figures is not None:
        group.add_argument("--figures-dir", type=Path, default=FIGURES_DIR, help=f"{figures} (default: %(default)s)")
