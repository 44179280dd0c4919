"""Train a real/fake face detector (the assignment's main training script).

    python train_main.py -d fakes_dataset -m SimpleNet --lr 0.001 -b 32 -e 5 -o Adam
    python train_main.py -d synthetic_dataset -m XceptionBased --lr 0.001 -b 32 -e 2 -o Adam
    python train_main.py -d synthetic_dataset -m EfficientNetLite0 --lr 3e-4 -e 3 --scheduler cosine --select-by auc
    python train_main.py -d fakes_dataset -m SimpleNet -e 1 --limit 64             # a quick smoke run
    python train_main.py -d fakes_dataset -m SimpleNet --adv pgd --eps 0.0314       # adversarial training
    python train_main.py -d fakes_dataset -m SimpleNet -e 8 --resume                # continue to epoch 8
    python train_main.py -d fakes_dataset -m SimpleNet --tensorboard                # also log to runs/<run name>
    torchrun --nproc_per_node 2 train_main.py -d fakes_dataset -m SimpleNet         # 2 processes (DDP, see distributed.py)

Writes out/<dataset>_<model>_<opt>.json (one record appended per run) and checkpoints/<dataset>_<model>_<opt>.pt
(best validation epoch, by --select-by) plus ..._last.pt (for --resume). `-m Bonus` also publishes checkpoints/bonus.pt.
Adversarially trained runs add the suffix _advfgsm / _advpgd to those names, self-blended ones _selfblend or
_selfblend+dataset (and -<regions> with --blend-regions), so they never take the plain run's names; an earlier run's
checkpoints of the same name are moved to checkpoints/previous/<name>__<its run id>.pt, and a run whose name is
running already stops at once; --catalog runs are named after the catalog's folder. Every flag is checked before any image is read.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from attacks import AdversarialConfig, pgd_step_size
from checkpoints import WeightsMismatch
from cli import (
    UserError,
    add_batch_size_flag,
    add_data_flags,
    add_device_flag,
    add_output_flags,
    add_progress_flag,
    add_workers_flag,
    cli_main,
    comma_choices,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    writable_dir,
)
from common import (
    BALANCE,
    BONUS_CHECKPOINT,
    CHECKPOINT_DIR,
    DATASETS,
    DEFAULT_EPOCHS,
    DEFAULT_EPS,
    DEFAULT_LR,
    DEFAULT_MOMENTUM,
    DEFAULT_OPTIMIZER,
    DEFAULT_PGD_STEPS,
    DEFAULT_SEED,
    OPTIMIZERS,
    SCHEDULERS,
    SELECT_BY,
    SPLITS,
    TENSORBOARD_DIR,
)
from detector import load_weights_into
from distributed import World, setup, teardown
from faces_dataset import (
    AUGMENTATIONS,
    DECODERS,
    DEFAULT_DECODER,
    dataset_labels,
    is_demo_data,
)
from models import MODEL_NAMES, MODEL_SPECS, build_model, models_taking
from run_store import RunStore
from self_blend import FAKE_MODES, HULLS
from settings import TrainSettings, from_namespace
from splits import DataSettings, build_splits, training_framing
from trainer import LoggingParameters, Schedule, Trainer, TrainerConfig
from utils import get_device, get_nof_params, set_seed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_flags(p, dataset_default=DATASETS[0])
    p.add_argument("-m", "--model", choices=MODEL_NAMES, default="SimpleNet", help="model name (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=DEFAULT_LR, help="learning rate (default: %(default)s)")
    add_batch_size_flag(p, short=True)
    p.add_argument("-e", "--epochs", type=positive_int, default=DEFAULT_EPOCHS, help="epochs in total (default: %(default)s)")
    p.add_argument("-o", "--optimizer", choices=OPTIMIZERS, default=DEFAULT_OPTIMIZER, help="optimizer (default: %(default)s)")
    p.add_argument("--momentum", type=non_negative_float, default=DEFAULT_MOMENTUM, help="SGD momentum (default: %(default)s)")
    p.add_argument("--weight-decay", type=non_negative_float, default=0.0, help="weight decay (default: %(default)s)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="none", help="learning-rate schedule (default: %(default)s)")
    p.add_argument("--warmup-epochs", type=non_negative_int, default=0, help="linear warm-up epochs (default: %(default)s)")
    p.add_argument("--step-size", type=positive_int, default=1, help="--scheduler step: epochs per decay (default: 1)")
    p.add_argument("--gamma", type=positive_float, default=0.1, help="--scheduler step: decay factor (default: 0.1)")
    p.add_argument("--select-by", choices=SELECT_BY, default="acc",
                   help="validation metric that picks the best checkpoint (default: %(default)s, the assignment's)")
    p.add_argument("--augment", nargs="?", const=True, default=False, choices=AUGMENTATIONS,
                   help="train-time augmentation: artefacts (the default when the flag has no value: JPEG, blur and "
                   "colour jitter) or cnndetection (blur sigma 0-3 and JPEG 30-100, each half the time: for GAN faces)")
    p.add_argument("--random-crop", type=positive_int, metavar="N",
                   help="train on random N x N crops of the image at --image-size instead of the whole image "
                   "(CNNDetection: native resolution, e.g. --image-size 256 --random-crop 224; evaluation sees it whole)")
    p.add_argument("--fakes", choices=FAKE_MODES, default="dataset",
                   help="training fakes: the dataset's own, self-blends of its real faces (self_blend.py; validated on "
                   "self-blends of the val split's real faces, so no dataset fake is ever seen), or both (default: %(default)s)")
    p.add_argument("--real-faces", type=Path, help="with --fakes self-blend/both: a folder of real faces to self-blend "
                   "instead of the train split's real/ (searched recursively)")
    p.add_argument("--blend-regions", type=comma_choices(HULLS), default=list(HULLS), metavar=",".join(HULLS),
                   help="with --fakes self-blend/both: the landmark hulls a self-blend's mask is drawn from (default: all; "
                   "inner,eyes-nose-mouth keep the blend's boundary inside crops tighter than the face, which on "
                   "fakes_dataset did not transfer better: README, Generalization)")
    p.add_argument("--balance", choices=BALANCE, default="none",
                   help="imbalanced classes: loss weights or a balanced sampler for the train split (default: none)")

    p.add_argument("--catalog", type=Path, help="train on a catalog.csv of tools/face_preprocess.py instead of -d's "
                   "splits (its 'split' column picks the train/val/test rows)")
    p.add_argument("--image-size", type=positive_int,
                   help="input side in pixels (default: the model's own: 256, 224 for ResNet50/EfficientNetLite0, 260 Lite2)")
    p.add_argument("--limit", type=positive_int, help="use at most this many samples per split (quick runs)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default: %(default)s)")
    add_device_flag(p)
    add_workers_flag(p)
    p.add_argument("--decoder", choices=DECODERS, default=DEFAULT_DECODER,
                   help="JPEG decoder: Pillow or torchvision.io (default: %(default)s, the faster here)")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory layout for the model (EfficientNet-Lite0 "
                   "trains 1.5x faster on 2 CPU cores: 4.0 s against 6.0 s per batch of 32 at 224 px)")
    p.add_argument("--resume", action="store_true", help="continue the run from checkpoints/..._last.pt")
    p.add_argument("--init-from", type=Path, help="start from the weights of this checkpoint of the same model "
                   "(e.g. adversarial fine-tuning of a normally trained one)")
    p.add_argument("--no-pretrained", action="store_true", help="start ImageNet backbones from random weights")
    p.add_argument("--weights", type=Path, help="ImageNet weight file for XceptionBased/ResNet50")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the last block(s) and the head")
    p.add_argument("--backbone-lr-scale", type=positive_float, default=1.0,
                   help="the pretrained backbone's lr as a fraction of --lr, the new head's staying at --lr "
                   "(e.g. 0.1; default: %(default)s, one lr for all)")
    p.add_argument("--adv", choices=("none", "fgsm", "pgd"), default="none", help="adversarial training (default: none)")
    p.add_argument("--eps", type=non_negative_float, default=DEFAULT_EPS, help="attack budget, [0,1] pixels (default: 8/255)")
    p.add_argument("--alpha", type=positive_float, help="PGD step, [0,1] pixels (default: 2.5 * eps / steps)")
    p.add_argument("--steps", type=positive_int, default=DEFAULT_PGD_STEPS, help="PGD steps, at least 1 (default: %(default)s)")
    p.add_argument("--adv-ratio", type=non_negative_float, default=0.5, help="share of each batch made adversarial (default: %(default)s)")
    add_output_flags(p, out="JSON logs folder")
    p.add_argument("--checkpoint-dir", type=Path, default=CHECKPOINT_DIR, help="checkpoints folder (default: %(default)s)")
    add_progress_flag(p)
    p.add_argument("--tensorboard", nargs="?", const=TENSORBOARD_DEFAULT, metavar="DIR",
                   help="also log the per-epoch numbers to TensorBoard in DIR (default: runs/<run name>, under FMD_WORK_DIR)")
    args = p.parse_args(argv)
    if args.adv_ratio > 1:
        p.error("--adv-ratio must be between 0 and 1")
    if args.eps > 1:
        p.error("--eps is in [0,1] pixel units (8/255 = 0.0314); got a value outside [0,1]")
    for flag, option, given in (("--weights", "weights", args.weights is not None),
                                ("--freeze-backbone", "freeze_backbone", args.freeze_backbone),
                                ("--no-pretrained", "pretrained", args.no_pretrained),
                                ("--backbone-lr-scale", "pretrained", args.backbone_lr_scale != 1.0)):
        if given and option not in MODEL_SPECS[args.model].options:  # a flag the model cannot use is never ignored
            p.error(f"{flag} applies to {', '.join(models_taking(option))}, not {args.model}")
    if args.fakes != "dataset" and args.random_crop is not None:
        p.error(f"--random-crop does not apply to --fakes {args.fakes} (self-blended pairs are whole faces, augmented "
                "alike; a crop would apply to one image of a pair and not the other)")
    if args.fakes != "dataset" and args.balance != "none":
        p.error(f"--balance does not apply to --fakes {args.fakes} (its batches hold real/fake pairs)")
    if args.real_faces is not None and args.fakes == "dataset":
        p.error("--real-faces is for --fakes self-blend or both")
    if args.blend_regions != list(HULLS) and args.fakes == "dataset":
        p.error("--blend-regions is for --fakes self-blend or both")
    if args.real_faces is not None and not args.real_faces.is_dir():
        p.error(f"--real-faces {args.real_faces} is not a folder")
    if args.image_size is None:
        args.image_size = MODEL_SPECS[args.model].image_size
    if args.augment == "artefacts":  # the flag's default recipe, logged as True like before the recipes had names
        args.augment = True
    if args.random_crop is not None and args.random_crop > args.image_size:
        p.error(f"--random-crop {args.random_crop} is larger than the image ({args.image_size} px)")
    if args.alpha is None:
        args.alpha = pgd_step_size(args.eps, args.steps)
    args.blend_regions = tuple(args.blend_regions)
    return args


TENSORBOARD_DEFAULT = "runs/<run name>"


def tensorboard_dir(s: TrainSettings, run_name: str) -> Path | None:
    """Where --tensorboard writes (None without the flag); refuses, before training, a missing tensorboard package."""
    if s.tensorboard is None:
        return None
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
    except ImportError as err:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard") from err
    return TENSORBOARD_DIR / run_name if s.tensorboard == TENSORBOARD_DEFAULT else Path(s.tensorboard)


def lr_groups(model: nn.Module, head: tuple[str, ...], backbone_lr_scale: float) -> list[dict]:
    """The trainable parameters as optimizer groups: one, or with a backbone_lr_scale other than 1 the head's (at the
    lr) then the backbone's (at lr x backbone_lr_scale), each keeping its 'lr_scale' so a resumed schedule keeps the
    ratio."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if backbone_lr_scale == 1.0 or not head:
        return [{"params": [p for _, p in named]}]
    groups = [{"params": [p for name, p in named if name.startswith(head)], "lr_scale": 1.0},
              {"params": [p for name, p in named if not name.startswith(head)], "lr_scale": backbone_lr_scale}]
    return [group for group in groups if group["params"]]


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


def make_optimizer(name: str, groups: list[dict], lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW over parameter groups of lr_groups (each at lr x its lr_scale)."""
    params = [{**group, "lr": lr * group.get("lr_scale", 1.0)} for group in groups]
    if name == "SGD":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "Adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def init_weights(model: nn.Module, checkpoint: Path, model_name: str) -> None:
    """Load the weights of a checkpoint of the same architecture and input size into `model`."""
    try:
        load_weights_into(model, checkpoint, model_name)
    except WeightsMismatch as err:
        raise UserError(f"--init-from {checkpoint} does not fit this {model_name} (was it trained at another "
                        f"--image-size?): {err.detail}") from err
    print(f"initialised from {checkpoint}")


def data_settings(s: TrainSettings) -> DataSettings:
    """The run's data settings (what splits.build_splits reads)."""
    return DataSettings(s.dataset, s.data_root, s.catalog, s.image_size, s.limit, s.augment, s.decoder, s.random_crop,
                        s.fakes, s.real_faces, s.blend_regions, s.seed)


FAKE_TAGS = {"dataset": "", "self-blend": "selfblend", "both": "selfblend+dataset"}


def run_tag(s: TrainSettings) -> str:
    """The suffix of the run's file names for training variants (e.g. selfblend, selfblend-inner for --blend-regions
    inner, advpgd, selfblend_advpgd), so a variant never takes the plain run's names."""
    fakes = FAKE_TAGS[s.fakes]
    if fakes and s.blend_regions != tuple(HULLS):
        fakes += "-" + "+".join(s.blend_regions)
    return "_".join(t for t in (fakes, f"adv{s.adv}" if s.adv != "none" else "") if t)


def class_counts(dataset: Dataset) -> list[int] | None:
    """[real, fake] image counts of a split (logged for the report's class proportions); None for self-blend pairs,
    whose fakes are made on the fly."""
    try:
        labels = dataset_labels(dataset)
    except TypeError:
        return None
    return [labels.count(0), labels.count(1)]


def make_model(s: TrainSettings) -> nn.Module:
    """The model of -m, from ImageNet weights where it has them (unless --no-pretrained or --init-from)."""
    options = MODEL_SPECS[s.model].options  # parse_args refused the flags the model cannot use
    try:
        model = build_model(s.model, image_size=s.image_size,
                            pretrained=not s.no_pretrained and s.init_from is None if "pretrained" in options else None,
                            weights=s.weights, freeze_backbone=s.freeze_backbone if "freeze_backbone" in options else None)
    except ValueError as err:  # e.g. SimpleNet at an image size its three 7x7 conv/pool blocks cannot reduce
        raise UserError(f"{s.model} cannot be built as asked: {err}") from err
    if s.init_from is not None:
        init_weights(model, s.init_from, s.model)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if s.batch_size == 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise UserError(f"-b 1 cannot train {s.model}: its BatchNorm layers need at least 2 samples per batch")
    return model


@cli_main
def main(argv: list[str] | None = None) -> dict:
    settings = from_namespace(TrainSettings, parse_args(argv))  # the flags become typed settings once, here
    set_seed(settings.seed)
    world, device = setup(get_device(settings.device))  # joins torchrun's process group when launched by torchrun
    try:
        return train(settings, world, device)
    finally:
        teardown()


def train(s: TrainSettings, world: World, device: torch.device) -> dict:
    """Everything after parsing, under the run name's lock: data, model, Trainer, summary; only rank 0 prints and
    publishes."""
    writable_dir(s.out_dir, "--out-dir")  # before any epoch is spent, not after the first one
    writable_dir(s.checkpoint_dir, "--checkpoint-dir")
    data = data_settings(s)
    tag = run_tag(s)
    name = LoggingParameters(s.model, data.run_dataset_name, s.optimizer, tag=tag).run_name
    with RunStore(s.out_dir, s.checkpoint_dir, name).lock(world):
        return _train(s, data, world, device, tag)


def _train(s: TrainSettings, data: DataSettings, world: World, device: torch.device, tag: str) -> dict:
    say = print if world.main else lambda *_, **__: None
    dataset_name = data.run_dataset_name
    norm = MODEL_SPECS[s.model].norm
    splits = build_splits(data, norm, progress=not s.no_progress)
    train_ds, val_ds, test_ds = splits.train, splits.val, splits.test
    for note in splits.notes:
        say(f"note: {note}")
    if s.select_by == "auc" and len(set(dataset_labels(val_ds))) < 2:
        raise UserError(f"--select-by auc: the {dataset_name} val split holds one class only, so its AUC is undefined "
                        "and no epoch could be chosen; use --select-by acc or loss, or add the missing class")
    if s.catalog is None and is_demo_data(s.data_root):
        say(f"note: {s.data_root} holds the built-in synthetic demo data, not real faces")
    model = make_model(s)
    groups = lr_groups(model, MODEL_SPECS[s.model].head, s.backbone_lr_scale)
    optimizer = make_optimizer(s.optimizer, groups, s.lr, s.momentum, s.weight_decay)
    lp = LoggingParameters(s.model, dataset_name, s.optimizer, optimizer_params_for_log(optimizer), tag)
    board_dir = tensorboard_dir(s, lp.run_name)
    if board_dir is not None:
        writable_dir(board_dir, "--tensorboard")
    processes = f" x {world.size} processes (-b {s.batch_size} each)" if world.distributed else ""
    say(f"{s.model} ({get_nof_params(model):,d} trainable parameters) on {dataset_name}: "
        f"{len(train_ds) * getattr(train_ds, 'images_per_item', 1)} train / {len(val_ds)} val / {len(test_ds)} test "
        f"images at {s.image_size} px, device {device}" + processes)
    weight = None
    if s.balance == "weights":  # inverse class frequency, normalised so a balanced split gets weights 1
        counts = torch.bincount(torch.tensor(dataset_labels(train_ds)), minlength=2).float()
        weight = (counts.sum() / (2 * counts)).to(device)
    framing = training_framing(data, splits.train_faces, s.device)
    say(f"training faces framed at margin {framing.margin if framing.margin is None else f'{framing.margin:+.3f}'} "
        f"({framing.source})")
    facts = dict(framing=framing.to_dict(), n_params=get_nof_params(model),
                 n_params_total=sum(p.numel() for p in model.parameters()), device_used=str(device),
                 torch=torch.__version__, normalization=norm.to_dict(), world_size=world.size,
                 class_weights=weight.tolist() if weight is not None else None,
                 class_counts={split: class_counts(ds) for split, ds in zip(SPLITS, (train_ds, val_ds, test_ds))})
    config = TrainerConfig(
        device=device, num_workers=s.num_workers, seed=s.seed, out_dir=s.out_dir, checkpoint_dir=s.checkpoint_dir,
        amp=s.amp, adversarial=AdversarialConfig(s.adv, s.eps, s.alpha, s.steps, s.adv_ratio),
        progress=not s.no_progress, model_kwargs={"image_size": s.image_size}, run_settings=s, run_facts=facts,
        schedule=Schedule(s.scheduler, s.warmup_epochs, s.step_size, s.gamma), select_by=s.select_by,
        balanced_sampler=s.balance == "sampler", world=world, tensorboard_dir=board_dir, normalization=norm,
    )
    trainer = Trainer(model, optimizer, nn.CrossEntropyLoss(weight=weight), s.batch_size, train_ds, val_ds, test_ds, config)
    store = trainer.store(lp)
    try:
        record = trainer.run(s.epochs, lp, resume=s.resume)
    except KeyboardInterrupt:
        saved = f"epochs 1-{trainer.epoch} are saved in {store.last}" if trainer.epoch else "no epoch was finished"
        raise UserError(f"stopped by Ctrl-C during epoch {trainer.epoch + 1}; {saved}: "
                        + ("run the same command with --resume to go on" if trainer.epoch else "start it again")) from None
    auc = record.get("test_auc_at_best_val")
    say(f"best val ({s.select_by}) at epoch {record['best_epoch']}: val acc {record['best_val_acc']:.2f}%, "
        f"test acc {record['test_acc_at_best_val']:.2f}%" + (f", test AUC {auc:.4f}" if auc is not None else ""))
    say(f"log: {store.log}  checkpoint: {store.best}" + (f"  TensorBoard: {board_dir}" if board_dir else ""))
    if world.main and s.model == "Bonus" and s.dataset == "fakes_dataset" and not tag and s.catalog is None:
        bonus = s.checkpoint_dir / BONUS_CHECKPOINT.name
        shutil.copyfile(store.best, bonus)
        say(f"published the bonus model to {bonus}")
    return record


if __name__ == "__main__":
    main()
