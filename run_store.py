"""A training run's files: its checkpoints, its JSON log and its TensorBoard mirror, and the rules for writing them.

Per run name (<dataset>_<model>_<opt>[_<tag>], common.run_name) the store holds
  out/<name>.json                   the assignment's JSON list of run records, one record per run (inserted or replaced by
                                    run id under an OS file lock, so concurrent runs lose no record; a corrupt log is
                                    kept aside, never lost)
  checkpoints/<name>.pt             the best validation epoch's checkpoint
  checkpoints/<name>_last.pt        the latest epoch's, for --resume
  checkpoints/.<name>.run.lock      held for the whole run, so a second run of the same name stops at once
all written atomically (temp file, then rename). A fresh run moves an earlier run's checkpoints of the same name to
checkpoints/previous/<name>__<its run id>.pt before its first save, so no finished run is overwritten. The Trainer
calls: lock, clean, restore_last, keep_previous_run, ensure_room, save, write_record; readers of logs use
parse_run_records, last_record and read_json_list (the one policy of what a log is).
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from checkpoints import read_checkpoint, save_checkpoint
from cli import UserError, resolve_input_path
from common import run_name
from distributed import World, sum_across
from files import atomic_write_json, ensure_free_space, file_lock, remove_stale_temp_files, run_lock

HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")  # the assignment's record
EXTRA_HISTORY_KEYS = ("val_auc", "test_auc", "lr")
ADV_HISTORY_KEYS = ("train_clean_acc", "train_adv_acc")


@dataclass
class LoggingParameters:
    """What is being trained, for the log record and the output file names."""

    model_name: str
    dataset_name: str
    optimizer_name: str
    optimizer_params: dict = field(default_factory=dict)
    tag: str = ""  # appended to the file names, e.g. "advpgd", so variants do not overwrite the plain run

    @property
    def run_name(self) -> str:
        return run_name(self.dataset_name, self.model_name, self.optimizer_name, self.tag)


class RunStore:
    """Where one run's files live (see the module's docstring) and how each is written."""

    def __init__(self, out_dir: Path, checkpoint_dir: Path, name: str):
        self.name = name
        self.log = Path(out_dir) / f"{name}.json"
        self.best = Path(checkpoint_dir) / f"{name}.pt"
        self.last = Path(checkpoint_dir) / f"{name}_last.pt"

    @contextlib.contextmanager
    def lock(self, world: World) -> Iterator[None]:
        """Hold the run name's lock (rank 0 takes it for all ranks): a second run of the same name stops before reading
        data, naming the process that holds it, instead of overwriting the first run's checkpoints and log."""
        with contextlib.ExitStack() as stack:
            error: UserError | None = None
            if world.main:
                try:
                    stack.enter_context(run_lock(self.best.parent / f".{self.name}.run.lock", f"a run named {self.name}",
                                                 "wait for it to end, or give this one another --checkpoint-dir"))
                except UserError as err:
                    error = err
            if sum_across(world, float(error is not None))[0]:
                raise error or UserError(f"rank 0 could not take the lock of run {self.name}")
            yield

    def clean(self) -> None:
        """Delete the hidden temp files a run killed while saving left behind."""
        for path in (self.best, self.last, self.log):
            remove_stale_temp_files(path.parent, path.name)

    def restore_last(self, device: Any, lp: LoggingParameters, image_size: int | None) -> dict:
        """The _last checkpoint --resume continues from: a UserError when there is none, or it is another run's (model,
        dataset, optimizer) or was trained at another image size."""
        if not self.last.is_file():
            raise UserError(f"--resume: no checkpoint {self.last} to resume from; run once without --resume")
        ckpt = read_checkpoint(self.last, device)
        try:
            saved = LoggingParameters(**ckpt["logging_parameters"])
        except (KeyError, TypeError) as err:
            raise UserError(f"--resume: {self.last} is not a _last checkpoint of train_main.py") from err
        if (saved.model_name, saved.dataset_name, saved.optimizer_name) != (lp.model_name, lp.dataset_name, lp.optimizer_name):
            raise UserError(f"--resume: {self.last} is a {saved.run_name} run, not {lp.run_name}")
        saved_size = ckpt.get("model_kwargs", {}).get("image_size")
        if saved_size is not None and image_size is not None and saved_size != image_size:
            raise UserError(f"--resume: {self.last} was trained at --image-size {saved_size}, not {image_size}; resume "
                            f"with --image-size {saved_size}")
        return ckpt

    def keep_previous_run(self) -> None:
        """Before a fresh run saves for the first time, move an earlier run's checkpoints of the same name to
        previous/<name>__<its run id>.pt (and _last.pt): a new run never overwrites a finished one (the JSON log keeps
        every run's record)."""
        earlier = [path for path in (self.best, self.last) if path.is_file()]
        if not earlier:
            return
        run_id = None
        for path in earlier:
            with contextlib.suppress(UserError, AttributeError, TypeError):
                run_id = run_id or read_checkpoint(path)["record"]["run_id"]
        run_id = run_id or time.strftime("%Y%m%d-%H%M%S", time.localtime(earlier[0].stat().st_mtime))
        kept = []
        for path in earlier:
            target = path.parent / "previous" / path.name.replace(self.best.stem, f"{self.best.stem}__{run_id}", 1)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():  # the same earlier run kept twice (e.g. copied back by hand): never overwrite it
                target = target.with_name(f"{target.stem}-{uuid.uuid4().hex[:6]}{target.suffix}")
            shutil.move(path, target)
            kept.append(str(target))
        print(f"note: an earlier run (run id {run_id}) had checkpoints under this name; kept them as {', '.join(kept)}")

    def ensure_room(self, nbytes: int, what: str) -> None:
        """Refuse to start an epoch whose checkpoint the folder could not hold (before the hours, not after them)."""
        ensure_free_space(self.best.parent, nbytes, what, "free space or pass another --checkpoint-dir (the saved epochs "
                          "are kept)")

    def save(self, best: dict | None, last: dict) -> None:
        """Write the best checkpoint (when the epoch improved) and the _last one."""
        if best is not None:
            save_checkpoint(best, self.best)
        save_checkpoint(last, self.last)

    def write_record(self, record: dict) -> Path:
        """Insert or replace this run's record (by run_id) in the JSON log, under a file lock; a corrupt log is kept
        aside, not lost."""
        with file_lock(self.log.with_name(self.log.name + ".lock")):
            records: list[dict] = []
            if self.log.is_file():
                try:
                    records = parse_run_records(self.log.read_text())
                except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors too
                    backup = self.log.with_name(f"{self.log.name}.corrupt-{int(time.time())}")
                    shutil.move(self.log, backup)
                    print(f"warning: {self.log} was not a JSON list of runs; moved it to {backup} and started a new log")
            records = [r for r in records if r.get("run_id") != record["run_id"]] + [record]
            atomic_write_json(self.log, records)
        return self.log


def checkpoint_bytes_estimate(model: nn.Module) -> int:
    """About how many bytes a checkpoint of `model` takes: its state plus two optimizer moments of the same size (Adam),
    and a megabyte for the record."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 3 * state + 2**20


# ---- reading logs: the one policy of what a log is ------------------------------------------------------------------
def parse_run_records(text: str) -> list[dict]:
    """The run records of a JSON log's text; a ValueError (JSONDecodeError included) when it is no list of records.
    The one policy of what a log is, for its readers and for the store that appends to it."""
    data = json.loads(text)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError("not a list of run records")
    return data


def last_record(path: Path) -> dict | None:
    """The last run record of a training log (the run its figures were drawn from), or None when the log is absent
    or is no log by the one rule above (readers that list what a work dir holds skip such files)."""
    try:
        records = parse_run_records(path.read_text())
    except (OSError, ValueError):
        return None
    return records[-1] if records else None


def read_json_list(path: str | Path) -> list[dict]:
    """Read a JSON log (a list of run records), with a clear error when it is missing or corrupt."""
    path = resolve_input_path(path)
    if not path.is_file():
        raise UserError(f"JSON log {path} does not exist; train first (train_main.py writes out/<dataset>_<model>_<opt>.json)")
    try:
        return parse_run_records(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"JSON log {path} is corrupt ({err.msg} at line {err.lineno}); pass another log, or train again "
                        "(train_main.py keeps a corrupt log aside and starts a new one)") from err
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not a JSON file (binary content); pass the out/<dataset>_<model>_<opt>.json log") from err
    except ValueError as err:
        raise UserError(f"JSON log {path} is {err}") from err


def read_step_times(path: Path) -> list[tuple[str, float]]:
    """(step, seconds) of each 'step<TAB>seconds' line run_me.sh appends to run_me_times.tsv, in order; other
    lines (a blank one, a half-written last one) are skipped."""
    steps = []
    for line in path.read_text().splitlines():
        name, _, seconds = line.rpartition("\t")
        try:
            value = float(seconds)
        except ValueError:
            continue
        if name:
            steps.append((name, value))
    return steps


# ---- TensorBoard: a mirror of the log's per-epoch numbers ------------------------------------------------------------
TENSORBOARD_TAGS = {  # JSON log key -> TensorBoard scalar tag
    "train_loss": "loss/train", "val_loss": "loss/val", "test_loss": "loss/test",
    "train_acc": "accuracy/train", "val_acc": "accuracy/val", "test_acc": "accuracy/test",
    "val_auc": "auc/val", "test_auc": "auc/test", "lr": "lr",
    "train_clean_acc": "adversarial/train_clean_acc", "train_adv_acc": "adversarial/train_adv_acc",
}


def open_tensorboard(log_dir: Path, record: dict, epoch: int) -> Any:
    """A SummaryWriter on `log_dir` holding the run's config as text; events after `epoch` from an interrupted earlier
    run in the same folder are purged, so a --resume continues the curves without a fold."""
    from torch.utils.tensorboard import SummaryWriter  # optional dependency: train_main.py checks it before training

    board = SummaryWriter(str(log_dir), purge_step=epoch + 1 if epoch else None)
    board.add_text("config", "```json\n" + json.dumps(record["config"], indent=1, default=str) + "\n```", epoch)
    return board


def log_epoch(board: Any, record: dict, epoch: int) -> None:
    """The epoch's numbers of the JSON record (the source of truth) as scalars at step `epoch` (1-based)."""
    for key, tag in TENSORBOARD_TAGS.items():
        values = record.get(key)
        if values and values[-1] is not None:
            board.add_scalar(tag, values[-1], epoch)
    board.flush()
