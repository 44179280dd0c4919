"""The Trainer (the assignment's "abstract trainer"): trains a 2-output model on a real/fake dataset, validates and
tests every epoch, logs and saves.

The caller builds the model, optimizer and datasets and passes a TrainerConfig (see train_main.py); a dataset yields
(image, label) pairs, and --balance sampler also needs its .labels. Per run it writes
  out/<dataset>_<model>_<opt>.json          the assignment's JSON list of run records, one record per run
  checkpoints/<dataset>_<model>_<opt>.pt    the checkpoint of the best validation epoch (by accuracy, AUC or loss)
  checkpoints/<dataset>_<model>_<opt>_last.pt  the latest epoch, for --resume
all written atomically (temp file, then rename; the log under an OS file lock, so concurrent runs lose no record).
A fresh run moves an earlier run's checkpoints of the same name to checkpoints/previous/<name>__<run id>.pt before its
first save, so no finished run is overwritten.
Checkpoints load with torch.load(weights_only=True) (see checkpoints.py) and carry the model's input normalisation
and the validation EER threshold of the best epoch. Averages are over samples, so a short last batch weighs what it
should; a last batch of one sample is dropped (BatchNorm cannot train on it). Every epoch reseeds python, numpy and
torch from (seed, epoch), so a resumed run repeats the uninterrupted one exactly.

Under torchrun (see distributed.py) the model is wrapped in DistributedDataParallel, every rank trains on its share of
the single-process sample order, evaluation scores each rank's share and gathers them, losses and accuracies are summed
over all ranks (so every logged number covers the whole split), and only rank 0 prints, logs and saves (checkpoints
hold the bare model: no 'module.' prefix). --tensorboard mirrors the log's per-epoch numbers as TensorBoard scalars.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler, WeightedRandomSampler
from tqdm import tqdm

from attacks import attack_batch
from checkpoints import FORMAT, read_checkpoint, save_checkpoint
from common import CHECKPOINT_DIR, DEFAULT_ALPHA, DEFAULT_EPS, DEFAULT_PGD_STEPS, DEFAULT_SEED, OUT_DIR, run_name
from distributed import SINGLE, ShardSampler, World, gather_in_order, sum_across, sync_buffers
from faces_dataset import dataset_labels
from metrics import DEFAULT_FAR, equal_error_rate, real_face_threshold, safe_auc
from models import p_fake
from normalization import ASSIGNMENT_NORM, Normalization, denormalize, normalize
from utils import (
    UserError,
    atomic_write_json,
    ensure_free_space,
    file_lock,
    make_loader,
    parse_run_records,
    remove_stale_temp_files,
    set_seed,
)

HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
EXTRA_HISTORY_KEYS = ("val_auc", "test_auc", "lr")
ADV_HISTORY_KEYS = ("train_clean_acc", "train_adv_acc")


@dataclass
class Schedule:
    """Learning-rate schedule per epoch: linear warm-up, then constant (none), cosine to 0, or step decay."""

    name: str = "none"  # none | cosine | step
    warmup_epochs: int = 0
    step_size: int = 1
    gamma: float = 0.1


def lr_factor(epoch: int, total_epochs: int, schedule: Schedule) -> float:
    """Multiplier of the base learning rate during `epoch` (0-based) of `total_epochs`.

    Warm-up epochs ramp linearly up to 1 ((e + 1) / (warmup + 1)); then 'cosine' follows 0.5 (1 + cos(pi t)) with t
    going from 0 at the first post-warm-up epoch towards 1 at the end, and 'step' multiplies by gamma every step_size
    epochs. A pure function of the epoch, so --resume needs no scheduler state.
    """
    w = schedule.warmup_epochs
    if epoch < w:
        return (epoch + 1) / (w + 1)
    if schedule.name == "cosine":
        t = (epoch - w) / max(total_epochs - w, 1)
        return 0.5 * (1 + math.cos(math.pi * t))
    if schedule.name == "step":
        return schedule.gamma ** ((epoch - w) // max(schedule.step_size, 1))
    return 1.0


# settings a resumed run must share with the run it continues: they change its data, its batches or its validation
RESUME_FIXED = ("batch_size", "limit", "augment", "seed", "select_by", "balance", "fakes", "real_faces", "blend_regions",
                "data_root", "catalog", "adv", "eps", "steps", "adv_ratio", "freeze_backbone", "backbone_lr_scale")


def changed_settings(saved: dict, now: dict) -> str:
    """The RESUME_FIXED settings that differ between a run's saved config and the resuming command, as
    'name: saved -> now' ('' when none do; settings absent from either side, as in older logs, are not compared)."""
    return ", ".join(f"{key}: {saved[key]!r} -> {now[key]!r}" for key in RESUME_FIXED
                     if key in saved and key in now and saved[key] != now[key])


def checkpoint_bytes_estimate(model: nn.Module) -> int:
    """About how many bytes a checkpoint of `model` takes: its state plus two optimizer moments of the same size (Adam),
    and a megabyte for the record."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 3 * state + 2**20


def validation_threshold(val: Evaluation, far: float = DEFAULT_FAR) -> dict | None:
    """The decision threshold a checkpoint carries, as its entry: the P(fake) that at most `far` of the val split's
    real faces reach (real faces are what a user's media shares with ours; the user's kind of fake is not), with its
    uncertain band and, for reference, the val EER threshold. A val split without a real face gives no threshold but
    an entry that says so (readers then fall back to 0.5 and tell the user why)."""
    reals = val.scores[val.labels == 0]
    if reals.size == 0:
        return {"value": None, "source": None, "warning": "the validation split holds no real face, so no threshold "
                "could be chosen on real faces; verdicts use 0.5"}
    chosen = real_face_threshold([reals], far, "the validation split's real faces")
    eer = equal_error_rate(val.labels, val.scores)[1] if val.auc is not None else None
    return {**chosen.to_entry(), "rule": f"real-far:{far:g}", "eer_threshold": eer}


def is_better(select_by: str, value: float | None, best: float | None) -> bool:
    """Whether a validation value beats the best so far: higher accuracy / AUC, lower loss; None never wins."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best if select_by == "loss" else value > best


def class_balance_weights(labels: list[int]) -> list[float]:
    """Per-sample weights that make both classes equally likely to be drawn (1 / count of its class)."""
    counts = {c: labels.count(c) for c in set(labels)}
    return [1.0 / counts[y] for y in labels]


class SeededSampler(Sampler):
    """Wraps a sampler so each index comes with a seed drawn in the main process from the epoch's generator: random
    transforms then draw the same numbers whatever the number of DataLoader workers (see SeededDataset)."""

    def __init__(self, sampler: Sampler, generator: torch.Generator):
        self.sampler, self.generator = sampler, generator

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.sampler:
            yield int(index), int(torch.randint(2**62, (1,), generator=self.generator))

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


class SeededDataset(Dataset):
    """Loads item (index, seed) with python, numpy and torch seeded by `seed` inside a saved-and-restored RNG state, so
    the process's own random streams (dropout, attacks) are left as they were."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.default_generator.manual_seed(seed)  # the CPU generator only: torch.manual_seed also seeds every
            # accelerator's, 60 us a sample (a tenth of a cheap model's training step); transforms run on the CPU
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


@dataclass
class Evaluation:
    """One pass over a split: per-sample loss and accuracy (%), AUC of P(fake), and the scores themselves."""

    loss: float
    accuracy: float
    auc: float | None
    scores: np.ndarray
    labels: np.ndarray


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


@dataclass
class AdversarialConfig:
    """Adversarial training: replace a share (`ratio`) of every batch by FGSM/PGD examples made against the model."""

    method: str = "none"  # none | fgsm | pgd
    eps: float = DEFAULT_EPS
    alpha: float = DEFAULT_ALPHA
    steps: int = DEFAULT_PGD_STEPS
    ratio: float = 0.5

    @property
    def enabled(self) -> bool:
        return self.method != "none" and self.ratio > 0


class MetricAccumulator:
    """Sums of loss and correct predictions over samples; avg_loss and accuracy (%) are per sample, not per batch."""

    def __init__(self) -> None:
        self.loss_sum, self.correct, self.count = 0.0, 0, 0

    def update(self, mean_loss: float, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = labels.numel()
        self.loss_sum += mean_loss * n
        self.correct += int((logits.argmax(dim=1) == labels).sum())
        self.count += n

    def reduced(self, world: World) -> MetricAccumulator:
        """The sums over every rank's samples (itself when not distributed)."""
        total = MetricAccumulator()
        loss_sum, correct, count = sum_across(world, self.loss_sum, self.correct, self.count)
        total.loss_sum, total.correct, total.count = loss_sum, int(correct), int(count)
        return total

    @property
    def avg_loss(self) -> float:
        return self.loss_sum / self.count if self.count else math.nan

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.count if self.count else math.nan


def optimizer_params_for_log(optimizer: torch.optim.Optimizer) -> dict:
    """The first param group's hyper-parameters (lr, betas, ...), JSON-safe, without the parameters themselves."""
    params = {}
    for key, value in optimizer.param_groups[0].items():
        if key in ("params", "lr_scale"):  # lr_scale: recorded as the config's backbone_lr_scale
            continue
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        if isinstance(value, tuple):
            value = list(value)
        try:
            json.dumps(value)
        except TypeError:
            value = str(value)
        params[key] = value
    return params


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


@dataclass
class TrainerConfig:
    """How the Trainer runs, beyond the assignment's seven constructor arguments (train_main.py fills it from its flags;
    the defaults are the assignment's plain run)."""

    device: torch.device | str = "cpu"
    """where the model trains ('cpu', 'cuda', 'cuda:1', 'mps')"""
    num_workers: int | None = None
    """DataLoader workers; None picks none below 4 CPU cores, else half the cores (utils.make_loader)"""
    seed: int = DEFAULT_SEED
    """seeds the shuffles, augmentations, dropout and attacks, reseeded each epoch so --resume repeats a run exactly"""
    out_dir: str | Path = OUT_DIR
    """folder of the JSON log"""
    checkpoint_dir: str | Path = CHECKPOINT_DIR
    """folder of the best and _last checkpoints"""
    amp: bool = False
    """mixed precision on CUDA (ignored elsewhere)"""
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    """adversarial training: which attack, its budget and the share of each batch it replaces"""
    progress: bool = True
    """tqdm bars over batches"""
    model_kwargs: dict = field(default_factory=dict)
    """what build_model needs to rebuild the model from its checkpoint (its image_size)"""
    run_config: dict = field(default_factory=dict)
    """the run's settings, logged in its record and checked by --resume (train_main.py passes its flags)"""
    schedule: Schedule = field(default_factory=Schedule)
    """learning-rate schedule per epoch"""
    select_by: str = "acc"
    """the validation metric that picks the best checkpoint: acc (the assignment's), auc or loss"""
    balanced_sampler: bool = False
    """draw training samples with inverse class-frequency weights (needs the dataset's .labels)"""
    world: World = SINGLE
    """the torchrun process group (distributed.py); a single process by default"""
    tensorboard_dir: str | Path | None = None
    """also log the per-epoch numbers as TensorBoard scalars there"""
    normalization: Normalization = ASSIGNMENT_NORM
    """the model's input normalisation: saved in the checkpoint, and how adversarial batches undo and redo inputs"""

    def __post_init__(self) -> None:
        """Folders as Paths, whatever a caller passed."""
        self.out_dir, self.checkpoint_dir = Path(self.out_dir), Path(self.checkpoint_dir)
        if self.tensorboard_dir is not None:
            self.tensorboard_dir = Path(self.tensorboard_dir)


class Trainer:
    """Train, validate and test a model (the assignment's API), with logging, checkpoints and the extras its
    TrainerConfig turns on."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: nn.Module,
        batch_size: int,
        train_dataset: Dataset,
        validation_dataset: Dataset,
        test_dataset: Dataset,
        config: TrainerConfig | None = None,
        **settings: Any,
    ):
        """The assignment's seven arguments, then a TrainerConfig, or its fields as keywords."""
        if config is not None and settings:
            raise TypeError("pass a TrainerConfig or its fields as keywords, not both")
        config = config if config is not None else TrainerConfig(**settings)
        self.config = config
        self.device = torch.device(config.device)
        self.module = model.to(self.device)  # the bare model: evaluation, attacks and checkpoints use it
        self.model: nn.Module = self.module  # what the training step calls: the DDP wrapper when distributed
        if config.world.distributed:
            self.model = DistributedDataParallel(self.module, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.optimizer = optimizer
        self.criterion = criterion
        self.batch_size = batch_size
        self.train_dataset = train_dataset
        self.validation_dataset = validation_dataset
        self.test_dataset = test_dataset
        self.amp = config.amp and self.device.type == "cuda"  # mixed precision in effect (CUDA only)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.norm = config.normalization
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.epoch = 0  # epochs completed
        self.total_epochs = 0
        self._shuffle = torch.Generator()
        self._loaders: dict[int, DataLoader] = {}
        self._last_adv_metrics: tuple[float, float] = (math.nan, math.nan)
        self._fresh = False

    # ---- data -------------------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        """The training loader draws its order and a seed per sample from the epoch's generator (SeededSampler), so
        shuffles and random transforms are the same for any --num-workers and after --resume."""
        key = id(dataset)
        if key not in self._loaders:
            if not shuffle:  # each rank scores samples rank, rank + size, ... (all of them when not distributed)
                order = ShardSampler(SequentialSampler(dataset), self.config.world, pad=False)  # type: ignore[arg-type]
                self._loaders[key] = make_loader(dataset, self.batch_size, False, self.device, self.config.num_workers,
                                                 sampler=order)
                return self._loaders[key]
            if self.config.balanced_sampler:
                weights = class_balance_weights(dataset_labels(dataset))
                order: Sampler = WeightedRandomSampler(weights, len(weights), replacement=True, generator=self._shuffle)
            else:
                order = RandomSampler(dataset, generator=self._shuffle)  # type: ignore[arg-type]
            sampler = ShardSampler(SeededSampler(order, self._shuffle), self.config.world)
            per_item = getattr(dataset, "images_per_item", 1)  # pair datasets (self_blend.py): 2 images an item
            items = max(1, self.batch_size // per_item)
            drop_last = per_item == 1 and len(sampler) % items == 1 and len(sampler) > 1
            # the loader's own generator only seeds its workers, which no longer matters: every sample carries its seed;
            # it must not be the epoch's, which a single-process loader would draw from once more per epoch
            self._loaders[key] = make_loader(SeededDataset(dataset), items, True, self.device, self.config.num_workers,
                                             torch.Generator(), sampler, drop_last, getattr(dataset, "collate", None))
        return self._loaders[key]

    def _bar(self, loader: DataLoader, desc: str) -> Any:
        return tqdm(loader, desc=desc, leave=False, disable=not (self.config.progress and self.config.world.main), unit="batch",
                    dynamic_ncols=True)

    # ---- one epoch --------------------------------------------------------------------------------------------
    def _adversarial_rows(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Replace the first ceil(ratio*B) rows of a normalised batch by adversarial examples; returns (batch, n_adv)."""
        cfg = self.config.adversarial
        n_adv = math.ceil(cfg.ratio * len(labels))
        x01 = denormalize(inputs[:n_adv], self.norm)
        adv = attack_batch(cfg.method, self.module, x01, labels[:n_adv], eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps,
                           norm=self.norm)  # the bare model: an attack's backward must not start DDP's gradient sync
        return torch.cat([normalize(adv, self.norm), inputs[n_adv:]]), n_adv

    def _train_mode(self) -> None:
        """Train mode, except BatchNorm layers whose parameters are all frozen: their running statistics stay as loaded
        (a frozen ImageNet backbone keeps its statistics, so its features are what they were pretrained to be)."""
        self.model.train()
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                params = list(module.parameters(recurse=False))
                if params and not any(p.requires_grad for p in params):
                    module.eval()

    def _set_lr(self) -> None:
        """This epoch's learning rate: each group's base lr times the schedule's factor."""
        factor = lr_factor(self.epoch, max(self.total_epochs, self.epoch + 1), self.config.schedule)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def train_one_epoch(self) -> tuple[float, float]:
        """Train for one epoch; returns (average loss over samples, accuracy in percent)."""
        self._train_mode()
        set_seed(self.config.seed + self.epoch)  # dropout, augmentation and attacks draw the same numbers after --resume
        self._shuffle.manual_seed(self.config.seed + self.epoch)  # the same shuffle (and worker seeds) per epoch
        self._set_lr()
        total, clean, adv = MetricAccumulator(), MetricAccumulator(), MetricAccumulator()
        bar = self._bar(self._loader(self.train_dataset, shuffle=True), f"epoch {self.epoch + 1} train")
        for batch_index, (inputs, labels) in enumerate(bar, start=1):
            inputs = inputs.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            n_adv = 0
            if self.config.adversarial.enabled:
                inputs, n_adv = self._adversarial_rows(inputs, labels)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, enabled=self.amp):
                outputs = self.model(inputs)
                loss = self.criterion(outputs, labels)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise UserError(f"training diverged: the loss is {loss_value} at epoch {self.epoch + 1}, batch {batch_index}; "
                                "lower --lr (nothing of this epoch was saved)")
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total.update(loss_value, outputs.detach(), labels)
            if n_adv:
                per_sample = nn.functional.cross_entropy(outputs.detach(), labels, reduction="none")
                adv.update(per_sample[:n_adv].mean().item(), outputs[:n_adv].detach(), labels[:n_adv])
                if n_adv < len(labels):
                    clean.update(per_sample[n_adv:].mean().item(), outputs[n_adv:].detach(), labels[n_adv:])
            bar.set_postfix(loss=f"{total.avg_loss:.4f}", acc=f"{total.accuracy:.2f}%")
        total, clean, adv = (m.reduced(self.config.world) for m in (total, clean, adv))
        self._last_adv_metrics = (clean.accuracy, adv.accuracy)
        return total.avg_loss, total.accuracy

    def evaluate(self, dataset: Dataset) -> Evaluation:
        """One no-grad pass in eval mode: loss and accuracy over samples, plus P(fake) per sample and its AUC."""
        sync_buffers(self.config.world, self.module)
        self.module.eval()
        acc = MetricAccumulator()
        scores, labels_seen = [], []
        loader = self._loader(dataset, shuffle=False)
        with torch.no_grad():
            for inputs, labels in self._bar(loader, "evaluate"):
                inputs = inputs.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                with torch.autocast(self.device.type, enabled=self.amp):
                    outputs = self.module(inputs)
                    loss = self.criterion(outputs, labels)
                acc.update(loss.item(), outputs.float(), labels)
                scores.append(p_fake(outputs).cpu())
                labels_seen.append(labels.cpu())
        s = torch.cat(scores).numpy() if scores else np.zeros(0)
        y = torch.cat(labels_seen).numpy() if labels_seen else np.zeros(0, dtype=int)
        s, y = gather_in_order(self.config.world, np.array(list(loader.sampler), dtype=np.int64), s, y)
        acc = acc.reduced(self.config.world)
        return Evaluation(acc.avg_loss, acc.accuracy, safe_auc(y, s), s, y)

    def evaluate_model_on_dataloader(self, dataset: Dataset) -> tuple[float, float]:
        """Evaluate on a dataset under torch.no_grad(); returns (average loss over samples, accuracy in percent)."""
        result = self.evaluate(dataset)
        return result.loss, result.accuracy

    def validate(self) -> tuple[float, float]:
        return self.evaluate_model_on_dataloader(self.validation_dataset)

    def test(self) -> tuple[float, float]:
        return self.evaluate_model_on_dataloader(self.test_dataset)

    # ---- the run ----------------------------------------------------------------------------------------------
    def paths(self, logging_parameters: LoggingParameters) -> dict[str, Path]:
        name = logging_parameters.run_name
        return {
            "json": self.config.out_dir / f"{name}.json",
            "best": self.config.checkpoint_dir / f"{name}.pt",
            "last": self.config.checkpoint_dir / f"{name}_last.pt",
        }

    def _checkpoint(self, lp: LoggingParameters, record: dict, threshold: dict | None) -> dict:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "model_name": lp.model_name,
            "model_kwargs": self.config.model_kwargs,
            "normalization": self.norm.to_dict(),
            "threshold": threshold,
            "framing": self.config.run_config.get("framing"),
            "logging_parameters": asdict(lp),
            "record": record,
            "format": FORMAT,
        }

    def _restore(self, paths: dict[str, Path], lp: LoggingParameters) -> dict:
        """Load the _last checkpoint for --resume; returns the run record to continue."""
        if not paths["last"].is_file():
            raise UserError(f"--resume: no checkpoint {paths['last']} to resume from; run once without --resume")
        ckpt = read_checkpoint(paths["last"], self.device)
        try:
            saved = LoggingParameters(**ckpt["logging_parameters"])
        except (KeyError, TypeError) as err:
            raise UserError(f"--resume: {paths['last']} is not a _last checkpoint of train_main.py") from err
        if (saved.model_name, saved.dataset_name, saved.optimizer_name) != (lp.model_name, lp.dataset_name, lp.optimizer_name):
            raise UserError(f"--resume: {paths['last']} is a {saved.run_name} run, not {lp.run_name}")
        saved_size = ckpt.get("model_kwargs", {}).get("image_size")
        if saved_size is not None and saved_size != self.config.model_kwargs.get("image_size", saved_size):
            raise UserError(f"--resume: {paths['last']} was trained at --image-size {saved_size}, not "
                            f"{self.config.model_kwargs['image_size']}; resume with --image-size {saved_size}")
        try:
            self.module.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise UserError(f"--resume: {paths['last']} does not fit this model or optimizer ({str(err).splitlines()[0]})") from err
        changed = changed_settings(ckpt["record"].get("config", {}), self.config.run_config)
        if changed:
            raise UserError(f"--resume: {paths['last']} was started with other settings ({changed}); resuming would "
                            "mix two runs (and compare 'best' across two validation sets): resume with the run's own "
                            "settings, or start a new run without --resume")
        self.scaler.load_state_dict(ckpt.get("scaler", {}))
        saved_lr = ckpt["record"].get("config", {}).get("lr")
        if saved_lr is not None:  # the schedule continues from the run's own base lr
            self.base_lrs = [saved_lr * group.get("lr_scale", 1.0) for group in self.optimizer.param_groups]
            if self.config.run_config.get("lr") not in (None, saved_lr):
                print(f"note: --resume keeps the checkpoint's lr {saved_lr} (and its optimizer state); "
                      f"--lr {self.config.run_config['lr']} is ignored")
        self.epoch = int(ckpt["epoch"])
        return ckpt["record"]

    def _keep_previous_run(self, paths: dict[str, Path]) -> None:
        """Before a fresh run saves for the first time, move an earlier run's checkpoints of the same name to
        previous/<name>__<its run id>.pt (and _last.pt): a new run never overwrites a finished one (the JSON log keeps
        every run's record)."""
        earlier = [paths[key] for key in ("best", "last") if paths[key].is_file()]
        if not earlier:
            return
        run_id = None
        for path in earlier:
            with contextlib.suppress(UserError, AttributeError, TypeError):
                run_id = run_id or read_checkpoint(path)["record"]["run_id"]
        run_id = run_id or time.strftime("%Y%m%d-%H%M%S", time.localtime(earlier[0].stat().st_mtime))
        kept = []
        for path in earlier:
            target = path.parent / "previous" / path.name.replace(paths["best"].stem, f"{paths['best'].stem}__{run_id}", 1)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():  # the same earlier run kept twice (e.g. copied back by hand): never overwrite it
                target = target.with_name(f"{target.stem}-{uuid.uuid4().hex[:6]}{target.suffix}")
            shutil.move(path, target)
            kept.append(str(target))
        print(f"note: an earlier run (run id {run_id}) had checkpoints under this name; kept them as {', '.join(kept)}")

    def write_output(self, logging_parameters: LoggingParameters, record: dict) -> Path:
        """Insert or replace this run's record (by run_id) in the JSON list, under a file lock; a corrupt log is kept
        aside, not lost."""
        path = self.paths(logging_parameters)["json"]
        with file_lock(path.with_name(path.name + ".lock")):
            records: list[dict] = []
            if path.is_file():
                try:
                    records = parse_run_records(path.read_text())
                except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors too
                    backup = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
                    shutil.move(path, backup)
                    print(f"warning: {path} was not a JSON list of runs; moved it to {backup} and started a new log")
                    records = []
            records = [r for r in records if r.get("run_id") != record["run_id"]] + [record]
            atomic_write_json(path, records)
        return path

    def _new_record(self, lp: LoggingParameters) -> dict:
        record = {
            "model": lp.model_name,
            "dataset": lp.dataset_name,
            "optimizer": {"name": lp.optimizer_name, "params": lp.optimizer_params},
            **{key: [] for key in HISTORY_KEYS + EXTRA_HISTORY_KEYS},
            "tag": lp.tag,
            "run_id": uuid.uuid4().hex[:12],
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "seed": self.config.seed,
            "config": self.config.run_config,
            "select_by": self.config.select_by,
            "epoch_time_s": [],
            "best_epoch": None,
            "best_val_acc": None,
            "best_val_auc": None,
            "best_val_loss": None,
            "test_acc_at_best_val": None,
            "test_auc_at_best_val": None,
            "threshold": None,
        }
        if self.config.adversarial.enabled:
            record["adversarial"] = asdict(self.config.adversarial)
            record.update({key: [] for key in ADV_HISTORY_KEYS})
        return record

    def run(self, epochs: int, logging_parameters: LoggingParameters, resume: bool = False) -> dict:
        """Train for `epochs` epochs (in total, counting resumed ones); returns the run record written to the log."""
        lp = logging_parameters
        paths = self.paths(lp)
        for key in ("best", "last", "json"):  # a run killed while saving leaves a hidden temp file: clean it
            remove_stale_temp_files(paths[key].parent, paths[key].name)
        self.total_epochs = epochs
        main = self.config.world.main
        if resume:
            record = self._restore(paths, lp)
            if main:
                print(f"resuming {lp.run_name} after epoch {self.epoch} of {epochs}")
        else:
            record = self._new_record(lp)
        self._fresh = not resume  # an earlier run's checkpoints are moved aside before the first save (never lost)
        for key in EXTRA_HISTORY_KEYS:  # logs of older versions lack them
            record.setdefault(key, [None] * len(record["train_loss"]))
        board = open_tensorboard(self.config.tensorboard_dir, record, self.epoch) if main and self.config.tensorboard_dir else None
        try:
            self._epochs(epochs, lp, record, paths, board)
        finally:
            if board is not None:
                board.close()
        return record

    def _epochs(self, epochs: int, lp: LoggingParameters, record: dict, paths: dict[str, Path], board: Any) -> None:
        """Train the remaining epochs; rank 0 prints, writes the log and checkpoints (and TensorBoard) after each."""
        main = self.config.world.main
        while self.epoch < epochs:
            if main:  # before hours of work whose checkpoint the disk could not hold, not after them
                ensure_free_space(self.config.checkpoint_dir, checkpoint_bytes_estimate(self.module),
                                  f"the checkpoint of epoch {self.epoch + 1}",
                                  "free space or pass another --checkpoint-dir (the saved epochs are kept)")
            start = time.perf_counter()
            train_loss, train_acc = self.train_one_epoch()
            lr = self.optimizer.param_groups[0]["lr"]
            val = self.evaluate(self.validation_dataset)
            test = self.evaluate(self.test_dataset)
            self.epoch += 1
            values = (train_loss, train_acc, val.loss, val.accuracy, test.loss, test.accuracy, val.auc, test.auc, lr)
            for key, value in zip(HISTORY_KEYS + EXTRA_HISTORY_KEYS, values):
                record[key].append(value)
            if self.config.adversarial.enabled:
                for key, value in zip(ADV_HISTORY_KEYS, self._last_adv_metrics):
                    record[key].append(None if math.isnan(value) else value)
            record["epoch_time_s"].append(round(time.perf_counter() - start, 2))
            metric = {"acc": val.accuracy, "auc": val.auc, "loss": val.loss}[self.config.select_by]
            improved = is_better(self.config.select_by, metric, record.get(f"best_val_{self.config.select_by}"))
            threshold = validation_threshold(val)
            if improved:
                record.update(best_epoch=self.epoch, best_val_acc=val.accuracy, best_val_auc=val.auc, best_val_loss=val.loss,
                              test_acc_at_best_val=test.accuracy, test_auc_at_best_val=test.auc,
                              threshold=threshold["value"] if threshold else None, threshold_entry=threshold)
            if not main:
                continue
            auc_text = f" auc {val.auc:.4f}" if val.auc is not None else ""
            print(
                f"epoch {self.epoch}/{epochs}: train loss {train_loss:.4f} acc {train_acc:.2f}% | "
                f"val loss {val.loss:.4f} acc {val.accuracy:.2f}%{auc_text} | test loss {test.loss:.4f} acc {test.accuracy:.2f}%"
                + (" *best*" if improved else "")
            )
            if self._fresh:
                self._keep_previous_run(paths)
                self._fresh = False
            if improved:
                save_checkpoint(self._checkpoint(lp, record, threshold), paths["best"])
            save_checkpoint(self._checkpoint(lp, record, record.get("threshold_entry")), paths["last"])
            self.write_output(lp, record)
            if board is not None:
                log_epoch(board, record, self.epoch)
