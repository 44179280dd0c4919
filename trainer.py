"""The Trainer (the assignment's "abstract trainer"): trains a 2-output model on a real/fake dataset, validates and
tests every epoch, keeps the best epoch, and hands each epoch's checkpoint and record to the run store (run_store.py:
names, previous/, the _last file, atomic saves, locks, the JSON log).

The caller builds the model, optimizer and datasets and passes a TrainerConfig (see train_main.py); a dataset yields
(image, label) pairs, and --balance sampler also needs its .labels. Averages are over samples, so a short last batch
weighs what it should. Every epoch reseeds python, numpy and torch from (seed, epoch) and the loaders draw a seed per
sample (loaders.py), so a resumed run repeats the uninterrupted one exactly. Checkpoints carry the model's input
normalisation and the threshold at most 5 % of the val split's real faces reach (metrics.real_face_threshold).

Under torchrun (see distributed.py) the model is wrapped in DistributedDataParallel, every rank trains on its share of
the single-process sample order, evaluation scores each rank's share and gathers them, losses and accuracies are summed
over all ranks (so every logged number covers the whole split), and only rank 0 prints, logs and saves (checkpoints
hold the bare model: no 'module.' prefix). --tensorboard mirrors the log's per-epoch numbers as TensorBoard scalars.
"""
from __future__ import annotations

import math
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from attacks import AdversarialConfig, adversarial_rows
from checkpoints import FORMAT
from cli import UserError
from common import CHECKPOINT_DIR, DEFAULT_SEED, OUT_DIR
from distributed import SINGLE, World, gather_in_order, sum_across, sync_buffers
from loaders import eval_loader, train_loader
from metrics import is_better, safe_auc, validation_threshold
from models import p_fake
from normalization import ASSIGNMENT_NORM, Normalization
from run_store import (
    ADV_HISTORY_KEYS,
    EXTRA_HISTORY_KEYS,
    HISTORY_KEYS,
    LoggingParameters,
    RunStore,
    checkpoint_bytes_estimate,
    log_epoch,
    open_tensorboard,
)
from settings import FIXED, FREE, plain_value, resume_conflicts, resume_policy, setting, settings_record
from utils import set_seed


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


@dataclass
class Evaluation:
    """One pass over a split: per-sample loss and accuracy (%), AUC of P(fake), and the scores themselves."""

    loss: float
    accuracy: float
    auc: float | None
    scores: np.ndarray
    labels: np.ndarray


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


@dataclass
class TrainerConfig:
    """How the Trainer runs, beyond the assignment's seven constructor arguments (train_main.py fills it from its flags;
    the defaults are the assignment's plain run). Fields that shape the run are FIXED for --resume (settings.py)."""

    device: torch.device | str = setting("cpu", FREE)
    """where the model trains ('cpu', 'cuda', 'cuda:1', 'mps')"""
    num_workers: int | None = setting(None, FREE)
    """DataLoader workers; None picks none below 4 CPU cores, else half the cores (utils.make_loader)"""
    seed: int = setting(DEFAULT_SEED)
    """seeds the shuffles, augmentations, dropout and attacks, reseeded each epoch so --resume repeats a run exactly"""
    out_dir: str | Path = setting(OUT_DIR, FREE)
    """folder of the JSON log"""
    checkpoint_dir: str | Path = setting(CHECKPOINT_DIR, FREE)
    """folder of the best and _last checkpoints"""
    amp: bool = setting(False, FREE)
    """mixed precision on CUDA (ignored elsewhere)"""
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig, metadata={"resume": FIXED})
    """adversarial training: which attack, its budget and the share of each batch it replaces"""
    progress: bool = setting(True, FREE)
    """tqdm bars over batches"""
    model_kwargs: dict = field(default_factory=dict, metadata={"resume": FREE})  # image_size: checked with its own words
    """what build_model needs to rebuild the model from its checkpoint (its image_size)"""
    run_settings: Any = setting(None, FREE)  # its own fields say what a resume may change
    """the run's typed settings (a dataclass of settings.setting fields, e.g. settings.TrainSettings): logged in its
    record and checkpoint as its fields, and compared field by field on --resume"""
    run_facts: dict = field(default_factory=dict, metadata={"resume": FREE})
    """what the run found out while setting up (parameter counts, framing, class counts, versions), logged beside them"""
    schedule: Schedule = field(default_factory=Schedule, metadata={"resume": FIXED})
    """learning-rate schedule per epoch"""
    select_by: str = setting("acc")
    """the validation metric that picks the best checkpoint: acc (the assignment's), auc or loss"""
    balanced_sampler: bool = setting(False)
    """draw training samples with inverse class-frequency weights (needs the dataset's .labels)"""
    world: World = setting(SINGLE, FREE)
    """the torchrun process group (distributed.py); a single process by default"""
    tensorboard_dir: str | Path | None = setting(None, FREE)
    """also log the per-epoch numbers as TensorBoard scalars there"""
    normalization: Normalization = setting(ASSIGNMENT_NORM, FREE)
    """the model's input normalisation: saved in the checkpoint, and how adversarial batches undo and redo inputs"""

    def __post_init__(self) -> None:
        """Folders as Paths, whatever a caller passed."""
        self.out_dir, self.checkpoint_dir = Path(self.out_dir), Path(self.checkpoint_dir)
        if self.tensorboard_dir is not None:
            self.tensorboard_dir = Path(self.tensorboard_dir)

    def shaping(self) -> dict:
        """The FIXED fields of this config as a record (what a resumed run must share with the one it continues)."""
        return {f.name: plain_value(getattr(self, f.name)) for f in fields(self) if resume_policy(f) == FIXED}


def new_record(lp: LoggingParameters, config: TrainerConfig) -> dict:
    """A fresh run record: the assignment's keys (model, dataset, optimizer, per-epoch lists), then the suite's."""
    record = {
        "model": lp.model_name,
        "dataset": lp.dataset_name,
        "optimizer": {"name": lp.optimizer_name, "params": lp.optimizer_params},
        **{key: [] for key in HISTORY_KEYS + EXTRA_HISTORY_KEYS},
        "tag": lp.tag,
        "run_id": uuid.uuid4().hex[:12],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seed": config.seed,
        "config": {**(settings_record(config.run_settings) if config.run_settings is not None else {}), **config.run_facts},
        "trainer": config.shaping(),
        "select_by": config.select_by,
        "epoch_time_s": [],
        **dict.fromkeys(("best_epoch", "best_val_acc", "best_val_auc", "best_val_loss", "test_acc_at_best_val",
                         "test_auc_at_best_val", "threshold", "threshold_entry")),
    }
    if config.adversarial.enabled:
        record["adversarial"] = asdict(config.adversarial)
        record.update({key: [] for key in ADV_HISTORY_KEYS})
    return record


def train_mode(model: nn.Module) -> None:
    """Train mode, except BatchNorm layers whose parameters are all frozen: their running statistics stay as loaded
    (a frozen ImageNet backbone keeps its statistics, so its features are what they were pretrained to be)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


class Trainer:
    """Train, validate and test a model (the assignment's API), with logging, checkpoints and the extras its
    TrainerConfig turns on."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module, batch_size: int,
                 train_dataset: Dataset, validation_dataset: Dataset, test_dataset: Dataset,
                 config: TrainerConfig | None = None, **settings: Any):
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
        self.optimizer, self.criterion, self.batch_size = optimizer, criterion, batch_size
        self.train_dataset, self.validation_dataset, self.test_dataset = train_dataset, validation_dataset, test_dataset
        self.amp = config.amp and self.device.type == "cuda"  # mixed precision in effect (CUDA only)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.norm = config.normalization
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.epoch = 0  # epochs completed
        self.total_epochs = 0
        self._shuffle = torch.Generator()
        self._loaders: dict[int, DataLoader] = {}
        self._last_adv_metrics: tuple[float, float] = (math.nan, math.nan)

    # ---- data -------------------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        """The dataset's loader (loaders.py), made once: the training one draws from the epoch's generator."""
        key = id(dataset)
        if key not in self._loaders:
            c = self.config
            self._loaders[key] = (train_loader(dataset, self.batch_size, self._shuffle, self.device, c.world, c.num_workers,
                                               c.balanced_sampler) if shuffle else
                                  eval_loader(dataset, self.batch_size, self.device, c.world, c.num_workers))
        return self._loaders[key]

    def _bar(self, loader: DataLoader, desc: str) -> Any:
        return tqdm(loader, desc=desc, leave=False, disable=not (self.config.progress and self.config.world.main), unit="batch",
                    dynamic_ncols=True)

    # ---- one epoch --------------------------------------------------------------------------------------------
    def _set_lr(self) -> None:
        """This epoch's learning rate: each group's base lr times the schedule's factor."""
        factor = lr_factor(self.epoch, max(self.total_epochs, self.epoch + 1), self.config.schedule)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def train_one_epoch(self) -> tuple[float, float]:
        """Train for one epoch; returns (average loss over samples, accuracy in percent)."""
        train_mode(self.model)
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
                # the bare model: an attack's backward must not start DDP's gradient sync
                inputs, n_adv = adversarial_rows(self.module, inputs, labels, self.config.adversarial, self.norm)
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
    def store(self, logging_parameters: LoggingParameters) -> RunStore:
        """The files of the run named by `logging_parameters` (run_store.py)."""
        return RunStore(self.config.out_dir, self.config.checkpoint_dir, logging_parameters.run_name)

    def run(self, epochs: int, logging_parameters: LoggingParameters, resume: bool = False) -> dict:
        """Train for `epochs` epochs (in total, counting resumed ones); returns the run record written to the log."""
        store = self.store(logging_parameters)
        store.clean()
        self.total_epochs = epochs
        main = self.config.world.main
        record = self._restore(store, logging_parameters) if resume else new_record(logging_parameters, self.config)
        if resume and main:
            print(f"resuming {logging_parameters.run_name} after epoch {self.epoch} of {epochs}")
        for key in EXTRA_HISTORY_KEYS:  # logs of older versions lack them
            record.setdefault(key, [None] * len(record["train_loss"]))
        board = open_tensorboard(self.config.tensorboard_dir, record, self.epoch) if main and self.config.tensorboard_dir else None
        fresh = not resume  # an earlier run's checkpoints are moved aside before the first save (never lost)
        try:
            while self.epoch < epochs:
                if main:  # before hours of work whose checkpoint the disk could not hold, not after them
                    store.ensure_room(checkpoint_bytes_estimate(self.module), f"the checkpoint of epoch {self.epoch + 1}")
                improved, threshold = self._epoch(record)
                if not main:
                    continue
                if fresh:
                    store.keep_previous_run()
                    fresh = False
                last = self._checkpoint(logging_parameters, record, record.get("threshold_entry"))
                store.save(self._checkpoint(logging_parameters, record, threshold) if improved else None, last)
                store.write_record(record)
                if board is not None:
                    log_epoch(board, record, self.epoch)
        finally:
            if board is not None:
                board.close()
        return record

    def _epoch(self, record: dict) -> tuple[bool, dict | None]:
        """One epoch: train, validate, test, append its numbers to the record and keep the best epoch's; returns
        (whether it is the best so far, its threshold entry). Rank 0 prints the epoch's line."""
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
        select_by = self.config.select_by
        metric = {"acc": val.accuracy, "auc": val.auc, "loss": val.loss}[select_by]
        improved = is_better(select_by, metric, record.get(f"best_val_{select_by}"))
        threshold = validation_threshold(val.labels, val.scores)
        if improved:
            record.update(best_epoch=self.epoch, best_val_acc=val.accuracy, best_val_auc=val.auc, best_val_loss=val.loss,
                          test_acc_at_best_val=test.accuracy, test_auc_at_best_val=test.auc,
                          threshold=threshold["value"] if threshold else None, threshold_entry=threshold)
        if self.config.world.main:
            auc_text = f" auc {val.auc:.4f}" if val.auc is not None else ""
            print(f"epoch {self.epoch}/{self.total_epochs}: train loss {train_loss:.4f} acc {train_acc:.2f}% | val loss "
                  f"{val.loss:.4f} acc {val.accuracy:.2f}%{auc_text} | test loss {test.loss:.4f} acc {test.accuracy:.2f}%"
                  + (" *best*" if improved else ""))
        return improved, threshold

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
            "framing": self.config.run_facts.get("framing"),
            "logging_parameters": asdict(lp),
            "record": record,
            "format": FORMAT,
        }

    def _restore(self, store: RunStore, lp: LoggingParameters) -> dict:
        """Load the _last checkpoint for --resume, refusing one of another run or made with other settings; returns
        the run record to continue."""
        ckpt = store.restore_last(self.device, lp, self.config.model_kwargs.get("image_size"))
        try:
            self.module.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise UserError(f"--resume: {store.last} does not fit this model or optimizer ({str(err).splitlines()[0]})") from err
        record = ckpt["record"]
        changed = resume_conflicts(record.get("trainer", {}), self.config)
        if self.config.run_settings is not None:
            changed += resume_conflicts(record.get("config", {}), self.config.run_settings)
        if changed:
            raise UserError(f"--resume: {store.last} was started with other settings ({', '.join(changed)}); resuming would "
                            "mix two runs (and compare 'best' across two validation sets): resume with the run's own "
                            "settings, or start a new run without --resume")
        self.scaler.load_state_dict(ckpt.get("scaler", {}))
        saved_lr = record.get("config", {}).get("lr")
        if saved_lr is not None:  # the schedule continues from the run's own base lr (the lr is KEPT, settings.py)
            self.base_lrs = [saved_lr * group.get("lr_scale", 1.0) for group in self.optimizer.param_groups]
            now_lr = getattr(self.config.run_settings, "lr", None)
            if now_lr not in (None, saved_lr):
                print(f"note: --resume keeps the checkpoint's lr {saved_lr} (and its optimizer state); --lr {now_lr} is ignored")
        self.epoch = int(ckpt["epoch"])
        return record
