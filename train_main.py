"""Train a real/fake face detector (the assignment's main training script).

    python train_main.py -d fakes_dataset -m SimpleNet --lr 0.001 -b 32 -e 5 -o Adam
    python train_main.py -d synthetic_dataset -m XceptionBased --lr 0.001 -b 32 -e 2 -o Adam
    python train_main.py -d fakes_dataset -m SimpleNet -e 1 --limit 64             # a quick smoke run
    python train_main.py -d fakes_dataset -m SimpleNet --adv pgd --eps 0.0314       # adversarial training
    python train_main.py -d fakes_dataset -m SimpleNet -e 8 --resume                # continue to epoch 8

Writes out/<dataset>_<model>_<opt>.json (one record appended per run) and checkpoints/<dataset>_<model>_<opt>.pt
(best validation accuracy) plus ..._last.pt (for --resume). `-m Bonus` also publishes checkpoints/bonus.pt.
Adversarially trained runs add the suffix _advfgsm / _advpgd to those names, so they never overwrite the plain run.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from torch import nn

from attacks import pgd_step_size
from common import (
    BONUS_CHECKPOINT,
    CHECKPOINT_DIR,
    DATA_ROOT,
    DATASETS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_EPS,
    DEFAULT_LR,
    DEFAULT_MOMENTUM,
    DEFAULT_OPTIMIZER,
    DEFAULT_PGD_STEPS,
    DEFAULT_SEED,
    IMAGE_SIZE,
    OPTIMIZERS,
    OUT_DIR,
)
from faces_dataset import CatalogDataset
from models import MODEL_NAMES, PRETRAINED_MODELS, build_model, load_model_from_checkpoint
from trainer import AdversarialConfig, LoggingParameters, Trainer, optimizer_params_for_log
from utils import (
    UserError,
    cli_main,
    evenly_spaced_subset,
    get_device,
    get_nof_params,
    get_transforms,
    is_demo_data,
    load_dataset,
    set_seed,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", choices=DATASETS, default=DATASETS[0], help="dataset name (default: %(default)s)")
    p.add_argument("-m", "--model", choices=MODEL_NAMES, default="SimpleNet", help="model name (default: %(default)s)")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help="learning rate (default: %(default)s)")
    p.add_argument("-b", "--batch_size", "--batch-size", dest="batch_size", type=int, default=DEFAULT_BATCH_SIZE,
                   help="batch size (default: %(default)s)")
    p.add_argument("-e", "--epochs", type=int, default=DEFAULT_EPOCHS, help="epochs in total (default: %(default)s)")
    p.add_argument("-o", "--optimizer", choices=OPTIMIZERS, default=DEFAULT_OPTIMIZER, help="optimizer (default: %(default)s)")
    p.add_argument("--momentum", type=float, default=DEFAULT_MOMENTUM, help="SGD momentum (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (default: %(default)s)")
    p.add_argument("--data-root", type=Path, default=DATA_ROOT, help="folder holding the datasets (default: %(default)s)")
    p.add_argument("--catalog", type=Path, help="train on a catalog.csv of tools/face_preprocess.py instead of -d's "
                   "train split (its 'split' column picks train/val/test rows when present)")
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="input side in pixels (default: %(default)s)")
    p.add_argument("--limit", type=int, help="use at most this many samples per split (quick runs)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument("--num-workers", type=int, help="DataLoader workers (default: half the CPU cores)")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    p.add_argument("--resume", action="store_true", help="continue the run from checkpoints/..._last.pt")
    p.add_argument("--init-from", type=Path, help="start from the weights of this checkpoint of the same model "
                   "(e.g. adversarial fine-tuning of a normally trained one)")
    p.add_argument("--no-pretrained", action="store_true", help="start ImageNet backbones from random weights")
    p.add_argument("--weights", type=Path, help="ImageNet weight file for XceptionBased/ResNet50")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the last block and the head")
    p.add_argument("--adv", choices=("none", "fgsm", "pgd"), default="none", help="adversarial training (default: none)")
    p.add_argument("--eps", type=float, default=DEFAULT_EPS, help="attack budget, [0,1] pixels (default: 8/255)")
    p.add_argument("--alpha", type=float, help="PGD step, [0,1] pixels (default: 2.5 * eps / steps)")
    p.add_argument("--steps", type=int, default=DEFAULT_PGD_STEPS, help="PGD steps (default: %(default)s)")
    p.add_argument("--adv-ratio", type=float, default=0.5, help="share of each batch made adversarial (default: %(default)s)")
    p.add_argument("--out-dir", type=Path, default=OUT_DIR, help="JSON logs folder (default: %(default)s)")
    p.add_argument("--checkpoint-dir", type=Path, default=CHECKPOINT_DIR, help="checkpoints folder (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    for name in ("lr", "batch_size", "epochs", "image_size"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if not 0 <= args.adv_ratio <= 1:
        p.error("--adv-ratio must be between 0 and 1")
    if args.eps < 0 or args.eps > 1:
        p.error("--eps is in [0,1] pixel units (8/255 = 0.0314); got a value outside [0,1]")
    return args


def make_optimizer(name: str, params, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW over the trainable parameters."""
    params = [p for p in params if p.requires_grad]
    if name == "SGD":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "Adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def init_weights(model: nn.Module, checkpoint: Path, model_name: str) -> None:
    """Copy the weights of a checkpoint of the same architecture and input size into `model`."""
    source, _ = load_model_from_checkpoint(checkpoint, "cpu", expected_model=model_name)
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as err:
        raise UserError(f"--init-from {checkpoint} does not fit this {model_name} (was it trained at another "
                        f"--image-size?): {str(err).splitlines()[0]}") from err
    print(f"initialised from {checkpoint}")


def catalog_splits(args: argparse.Namespace) -> tuple:
    """train/val/test datasets from a catalog.csv with a 'split' column (see tools/face_preprocess.py)."""
    splits = []
    for split in ("train", "val", "test"):
        ds = CatalogDataset(args.catalog, get_transforms(split == "train", args.image_size), split=split)
        splits.append(evenly_spaced_subset(ds, args.limit))
    return tuple(splits)


@cli_main
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    set_seed(args.seed)
    device = get_device(args.device)
    if args.catalog is not None:
        train_ds, val_ds, test_ds = catalog_splits(args)
    else:
        train_ds, val_ds, test_ds = (
            load_dataset(args.dataset, split, args.data_root, args.image_size, args.limit) for split in ("train", "val", "test")
        )
        if is_demo_data(args.data_root):
            print(f"note: {args.data_root} holds the built-in synthetic demo data, not real faces")
    model_kwargs: dict = {"image_size": args.image_size}
    build_kwargs: dict = {}
    if args.model in PRETRAINED_MODELS:
        build_kwargs = {"weights": args.weights, "freeze_backbone": args.freeze_backbone}
    model = build_model(args.model, pretrained=not args.no_pretrained and args.init_from is None, **model_kwargs,
                        **build_kwargs)
    if args.init_from is not None:
        init_weights(model, args.init_from, args.model)
    optimizer = make_optimizer(args.optimizer, model.parameters(), args.lr, args.momentum, args.weight_decay)
    print(
        f"{args.model} ({get_nof_params(model):,d} trainable parameters) on {args.dataset}: "
        f"{len(train_ds)} train / {len(val_ds)} val / {len(test_ds)} test images, device {device}"
    )
    alpha = args.alpha if args.alpha is not None else pgd_step_size(args.eps, args.steps)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config.update(alpha=alpha, n_params=get_nof_params(model), n_params_total=sum(p.numel() for p in model.parameters()),
                  device=str(device), torch=torch.__version__)
    trainer = Trainer(
        model, optimizer, nn.CrossEntropyLoss(), args.batch_size, train_ds, val_ds, test_ds,
        device=device, num_workers=args.num_workers, seed=args.seed, out_dir=args.out_dir,
        checkpoint_dir=args.checkpoint_dir, amp=args.amp, progress=not args.no_progress, model_kwargs=model_kwargs,
        adversarial=AdversarialConfig(args.adv, args.eps, alpha, args.steps, args.adv_ratio), run_config=config,
    )
    tag = f"adv{args.adv}" if args.adv != "none" else ""
    lp = LoggingParameters(args.model, args.dataset, args.optimizer, optimizer_params_for_log(optimizer), tag)
    record = trainer.run(args.epochs, lp, resume=args.resume)
    paths = trainer.paths(lp)
    print(f"best val acc {record['best_val_acc']:.2f}% at epoch {record['best_epoch']}, "
          f"test acc there {record['test_acc_at_best_val']:.2f}%")
    print(f"log: {paths['json']}  checkpoint: {paths['best']}")
    if args.model == "Bonus" and args.dataset == "fakes_dataset" and not tag and args.catalog is None:
        bonus = args.checkpoint_dir / BONUS_CHECKPOINT.name
        shutil.copyfile(paths["best"], bonus)
        print(f"published the bonus model to {bonus}")
    return record


if __name__ == "__main__":
    main()
