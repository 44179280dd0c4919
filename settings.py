"""Typed settings and what --resume may change: each field of a settings dataclass says it on itself.

A field made with setting(..., resume=FIXED) shapes the run (its data, batches, schedule or validation): a resumed run
must have the value the run it continues was started with. FREE fields (where files go, the device, progress bars)
may change; KEPT ones (the learning rate) keep the saved value and say so. A settings object is written into the run's
log and checkpoint as its fields (settings_record), and resume_conflicts compares a saved record with the settings of
the resuming command field by field, so renaming or adding a field can never drop it from the check: there is no list
of names to forget.
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from common import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LR, DEFAULT_MOMENTUM, DEFAULT_OPTIMIZER, DEFAULT_SEED

FIXED, FREE, KEPT = "fixed", "free", "kept"


def setting(default: Any = MISSING, resume: str = FIXED) -> Any:
    """A settings field with its resume policy (FIXED unless said otherwise)."""
    if resume not in (FIXED, FREE, KEPT):
        raise ValueError(f"unknown resume policy {resume!r}")
    return field(default=default, metadata={"resume": resume})


def resume_policy(f: Field) -> str:
    return f.metadata.get("resume", FIXED)


def plain_value(value: Any) -> Any:
    """A settings value as it is written to JSON and compared: paths as strings, tuples as lists, dataclasses as
    dicts of their fields."""
    if is_dataclass(value) and not isinstance(value, type):
        return settings_record(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    return value


def settings_record(settings: Any) -> dict:
    """The settings' fields as a JSON-able dict (what the log and checkpoint record)."""
    return {f.name: plain_value(getattr(settings, f.name)) for f in fields(settings)}


def resume_conflicts(saved: dict, now: Any, prefix: str = "") -> list[str]:
    """'name: saved -> now' for every FIXED field of `now` (nested settings included) whose saved value differs; a
    field the saved record lacks (written before the field existed) cannot be compared and is skipped."""
    conflicts = []
    for f in fields(now):
        if resume_policy(f) != FIXED or f.name not in saved:
            continue
        value = getattr(now, f.name)
        if is_dataclass(value) and isinstance(saved[f.name], dict):
            conflicts += resume_conflicts(saved[f.name], value, f"{prefix}{f.name}.")
        elif plain_value(value) != saved[f.name]:
            conflicts.append(f"{prefix}{f.name}: {saved[f.name]!r} -> {plain_value(value)!r}")
    return conflicts


def from_namespace(cls: type, args: argparse.Namespace) -> Any:
    """The settings dataclass `cls` from parsed flags of the same names (the one place a namespace becomes settings)."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class TrainSettings:
    """train_main.py's flags, typed, as one run is set up (see its --help for each one's meaning)."""

    dataset: str = setting("fakes_dataset")
    model: str = setting("SimpleNet")
    lr: float = setting(DEFAULT_LR, KEPT)
    batch_size: int = setting(DEFAULT_BATCH_SIZE)
    epochs: int = setting(DEFAULT_EPOCHS, FREE)  # --resume goes on to the new total
    optimizer: str = setting(DEFAULT_OPTIMIZER)
    momentum: float = setting(DEFAULT_MOMENTUM)
    weight_decay: float = setting(0.0)
    scheduler: str = setting("none")
    warmup_epochs: int = setting(0)
    step_size: int = setting(1)
    gamma: float = setting(0.1)
    select_by: str = setting("acc")
    augment: bool | str = setting(False)
    random_crop: int | None = setting(None)
    fakes: str = setting("dataset")
    real_faces: Path | None = setting(None)
    blend_regions: tuple[str, ...] = setting(())
    balance: str = setting("none")
    data_root: Path = setting(Path("data"))
    catalog: Path | None = setting(None)
    image_size: int = setting(256)
    limit: int | None = setting(None)
    seed: int = setting(DEFAULT_SEED)
    device: str = setting("auto", FREE)
    num_workers: int | None = setting(None, FREE)
    decoder: str = setting("pil", FREE)  # the same pixels either way
    amp: bool = setting(False, FREE)
    channels_last: bool = setting(False, FREE)
    resume: bool = setting(False, FREE)
    init_from: Path | None = setting(None, FREE)  # the starting weights; a resume loads its own
    no_pretrained: bool = setting(False, FREE)
    weights: Path | None = setting(None, FREE)
    freeze_backbone: bool = setting(False)
    backbone_lr_scale: float = setting(1.0)
    adv: str = setting("none")
    eps: float = setting(8 / 255)
    alpha: float | None = setting(None)
    steps: int = setting(10)
    adv_ratio: float = setting(0.5)
    out_dir: Path = setting(Path("out"), FREE)
    checkpoint_dir: Path = setting(Path("checkpoints"), FREE)
    no_progress: bool = setting(False, FREE)
    tensorboard: str | None = setting(None, FREE)
