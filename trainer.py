"""The abstract Trainer: trains any 2-output model on a real/fake dataset, validates and tests every epoch, logs and saves.

Model- and dataset-agnostic (the caller wires them in, see train_main.py). Per run it writes
  out/<dataset>_<model>_<opt>.json          the assignment's JSON list of run records, one record per run
  checkpoints/<dataset>_<model>_<opt>.pt    the checkpoint of the best validation accuracy
  checkpoints/<dataset>_<model>_<opt>_last.pt  the latest epoch, for --resume
all written atomically (temp file, then rename). Averages are over samples, so a short last batch weighs what it should.
"""
from __future__ import annotations

import json
import math
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from attacks import attack_batch
from common import CHECKPOINT_DIR, DEFAULT_ALPHA, DEFAULT_EPS, DEFAULT_PGD_STEPS, DEFAULT_SEED, OUT_DIR
from utils import UserError, atomic_torch_save, atomic_write_json, denormalize, make_loader, normalize

HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
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
        name = f"{self.dataset_name}_{self.model_name}_{self.optimizer_name}"
        return f"{name}_{self.tag}" if self.tag else name


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
        if key == "params":
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


class Trainer:
    """Train, validate and test a model (the assignment's API), with logging, checkpoints and optional extras."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: nn.Module,
        batch_size: int,
        train_dataset: Dataset,
        validation_dataset: Dataset,
        test_dataset: Dataset,
        device: torch.device | str = "cpu",
        num_workers: int | None = None,
        seed: int = DEFAULT_SEED,
        out_dir: str | Path = OUT_DIR,
        checkpoint_dir: str | Path = CHECKPOINT_DIR,
        amp: bool = False,
        adversarial: AdversarialConfig | None = None,
        progress: bool = True,
        model_kwargs: dict | None = None,
        run_config: dict | None = None,
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.criterion = criterion
        self.batch_size = batch_size
        self.train_dataset = train_dataset
        self.validation_dataset = validation_dataset
        self.test_dataset = test_dataset
        self.num_workers = num_workers
        self.seed = seed
        self.out_dir = Path(out_dir)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.amp = amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.adversarial = adversarial or AdversarialConfig()
        self.progress = progress
        self.model_kwargs = model_kwargs or {}
        self.run_config = run_config or {}
        self.epoch = 0  # epochs completed
        self._shuffle = torch.Generator()
        self._loaders: dict[int, DataLoader] = {}
        self._last_adv_metrics: tuple[float, float] = (math.nan, math.nan)

    # ---- data -------------------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        key = id(dataset)
        if key not in self._loaders:
            generator = self._shuffle if shuffle else None
            self._loaders[key] = make_loader(dataset, self.batch_size, shuffle, self.device, self.num_workers, generator)
        return self._loaders[key]

    def _bar(self, loader: DataLoader, desc: str) -> Any:
        return tqdm(loader, desc=desc, leave=False, disable=not self.progress, unit="batch", dynamic_ncols=True)

    # ---- one epoch --------------------------------------------------------------------------------------------
    def _adversarial_rows(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Replace the first ceil(ratio*B) rows of a normalised batch by adversarial examples; returns (batch, n_adv)."""
        cfg = self.adversarial
        n_adv = math.ceil(cfg.ratio * len(labels))
        x01 = denormalize(inputs[:n_adv])
        adv = attack_batch(cfg.method, self.model, x01, labels[:n_adv], eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps)
        return torch.cat([normalize(adv), inputs[n_adv:]]), n_adv

    def train_one_epoch(self) -> tuple[float, float]:
        """Train for one epoch; returns (average loss over samples, accuracy in percent)."""
        self.model.train()
        self._shuffle.manual_seed(self.seed + self.epoch)  # the same shuffle per epoch, also after --resume
        total, clean, adv = MetricAccumulator(), MetricAccumulator(), MetricAccumulator()
        bar = self._bar(self._loader(self.train_dataset, shuffle=True), f"epoch {self.epoch + 1} train")
        for inputs, labels in bar:
            inputs = inputs.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            n_adv = 0
            if self.adversarial.enabled:
                inputs, n_adv = self._adversarial_rows(inputs, labels)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, enabled=self.amp):
                outputs = self.model(inputs)
                loss = self.criterion(outputs, labels)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total.update(loss.item(), outputs.detach(), labels)
            if n_adv:
                per_sample = nn.functional.cross_entropy(outputs.detach(), labels, reduction="none")
                adv.update(per_sample[:n_adv].mean().item(), outputs[:n_adv].detach(), labels[:n_adv])
                if n_adv < len(labels):
                    clean.update(per_sample[n_adv:].mean().item(), outputs[n_adv:].detach(), labels[n_adv:])
            bar.set_postfix(loss=f"{total.avg_loss:.4f}", acc=f"{total.accuracy:.2f}%")
        self._last_adv_metrics = (clean.accuracy, adv.accuracy)
        return total.avg_loss, total.accuracy

    def evaluate_model_on_dataloader(self, dataset: Dataset) -> tuple[float, float]:
        """Evaluate on a dataset under torch.no_grad(); returns (average loss over samples, accuracy in percent)."""
        self.model.eval()
        acc = MetricAccumulator()
        with torch.no_grad():
            for inputs, labels in self._bar(self._loader(dataset, shuffle=False), "evaluate"):
                inputs = inputs.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                with torch.autocast(self.device.type, enabled=self.amp):
                    outputs = self.model(inputs)
                    loss = self.criterion(outputs, labels)
                acc.update(loss.item(), outputs.float(), labels)
        return acc.avg_loss, acc.accuracy

    def validate(self) -> tuple[float, float]:
        return self.evaluate_model_on_dataloader(self.validation_dataset)

    def test(self) -> tuple[float, float]:
        return self.evaluate_model_on_dataloader(self.test_dataset)

    # ---- the run ----------------------------------------------------------------------------------------------
    def paths(self, logging_parameters: LoggingParameters) -> dict[str, Path]:
        name = logging_parameters.run_name
        return {
            "json": self.out_dir / f"{name}.json",
            "best": self.checkpoint_dir / f"{name}.pt",
            "last": self.checkpoint_dir / f"{name}_last.pt",
        }

    def _checkpoint(self, lp: LoggingParameters, record: dict) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "model_name": lp.model_name,
            "model_kwargs": self.model_kwargs,
            "logging_parameters": asdict(lp),
            "record": record,
            "format": "fmd-checkpoint-v1",
        }

    def _restore(self, paths: dict[str, Path], lp: LoggingParameters) -> dict:
        """Load the _last checkpoint for --resume; returns the run record to continue."""
        if not paths["last"].is_file():
            raise UserError(f"--resume: no checkpoint {paths['last']} to resume from; run once without --resume")
        ckpt = torch.load(paths["last"], map_location=self.device, weights_only=False)
        saved = LoggingParameters(**ckpt["logging_parameters"])
        if (saved.model_name, saved.dataset_name, saved.optimizer_name) != (lp.model_name, lp.dataset_name, lp.optimizer_name):
            raise UserError(f"--resume: {paths['last']} is a {saved.run_name} run, not {lp.run_name}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"])
        return ckpt["record"]

    def write_output(self, logging_parameters: LoggingParameters, record: dict) -> Path:
        """Insert or replace this run's record (by run_id) in the JSON list; a corrupt log is kept aside, not lost."""
        path = self.paths(logging_parameters)["json"]
        records: list[dict] = []
        if path.is_file():
            try:
                records = json.loads(path.read_text())
                if not isinstance(records, list):
                    raise ValueError("not a list")
            except ValueError:
                backup = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
                shutil.move(path, backup)
                print(f"warning: {path} was not a JSON list of runs; moved it to {backup} and started a new log")
                records = []
        records = [r for r in records if r.get("run_id") != record["run_id"]] + [record]
        atomic_write_json(path, records)
        return path

    def run(self, epochs: int, logging_parameters: LoggingParameters, resume: bool = False) -> dict:
        """Train for `epochs` epochs (in total, counting resumed ones); returns the run record written to the log."""
        lp = logging_parameters
        paths = self.paths(lp)
        if resume:
            record = self._restore(paths, lp)
            print(f"resuming {lp.run_name} after epoch {self.epoch} of {epochs}")
        else:
            record = {
                "model": lp.model_name,
                "dataset": lp.dataset_name,
                "optimizer": {"name": lp.optimizer_name, "params": lp.optimizer_params},
                **{key: [] for key in HISTORY_KEYS},
                "tag": lp.tag,
                "run_id": uuid.uuid4().hex[:12],
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "seed": self.seed,
                "config": self.run_config,
                "epoch_time_s": [],
                "best_epoch": None,
                "best_val_acc": None,
                "test_acc_at_best_val": None,
            }
            if self.adversarial.enabled:
                record["adversarial"] = asdict(self.adversarial)
                record.update({key: [] for key in ADV_HISTORY_KEYS})
        while self.epoch < epochs:
            start = time.perf_counter()
            train_loss, train_acc = self.train_one_epoch()
            val_loss, val_acc = self.validate()
            test_loss, test_acc = self.test()
            self.epoch += 1
            for key, value in zip(HISTORY_KEYS, (train_loss, train_acc, val_loss, val_acc, test_loss, test_acc)):
                record[key].append(value)
            if self.adversarial.enabled:
                for key, value in zip(ADV_HISTORY_KEYS, self._last_adv_metrics):
                    record[key].append(None if math.isnan(value) else value)
            record["epoch_time_s"].append(round(time.perf_counter() - start, 2))
            improved = record["best_val_acc"] is None or val_acc > record["best_val_acc"]
            if improved:
                record.update(best_epoch=self.epoch, best_val_acc=val_acc, test_acc_at_best_val=test_acc)
            print(
                f"epoch {self.epoch}/{epochs}: train loss {train_loss:.4f} acc {train_acc:.2f}% | "
                f"val loss {val_loss:.4f} acc {val_acc:.2f}% | test loss {test_loss:.4f} acc {test_acc:.2f}%"
                + (" *best*" if improved else "")
            )
            ckpt = self._checkpoint(lp, record)
            if improved:
                atomic_torch_save(ckpt, paths["best"])
            atomic_torch_save(ckpt, paths["last"])
            self.write_output(lp, record)
        return record
