"""Fuse several detectors into one: scores standardised on real faces, a rule chosen and fitted on validation splits only,
and a threshold at a stated false-alarm rate on each dataset's validation real faces; writes a .fused.json (fusion.py).

    python tools/fuse_detectors.py --members dfdc.pt stylegan.pt --data-root ../shared/data --out fused/pair.fused.json
    python tools/fuse_detectors.py --members A.pt B.pt Meso4_DF.h5 --data-root ../shared/data --rule max --far 0.05 \\
        --out weights/generalist.fused.json --copy-members --half

Every number is fitted on the val splits of the datasets under --data-root (never a test split): each member's logit
mean and std on the val real faces of all datasets together, then the rule (--rule auto compares max, mean and
logistic by two-fold cross-validation on val, each dataset's AUC weighing alike, and keeps the best), then the
threshold that at most --far of each dataset's val real faces reach (with the uncertain band at 2 x and 1/2 x that
rate). Members are named by file and SHA-256, relative to the fused file: --copy-members copies them beside it
(--half stores their weights in float16 when that moves no dataset's val AUC by 0.002 or more, else float32, and says
which). Writes <out> and prints what it chose.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from analysis import get_soft_scores_and_true_labels
from checkpoints import read_checkpoint, save_checkpoint
from cli import (
    UserError,
    add_batch_size_flag,
    add_data_flags,
    add_device_flag,
    add_progress_flag,
    cli_main,
    crop_margin,
    positive_int,
    probability,
    writable_dir,
)
from common import DATASETS
from detector import Detector, file_sha256, load_model_from_checkpoint
from faces_dataset import dataset_labels, load_dataset
from fusion import FUSED_SUFFIX, RULES, FusedModule, MemberScale, fit_logistic, fused_logits, write_fused_spec
from mesonet import is_keras_file
from metrics import DEFAULT_FAR, real_face_threshold, safe_auc
from normalization import PIXELS
from utils import get_device

HALF_AUC_TOLERANCE = 0.002


def member_logits(members: list[Detector], dataset, batch_size: int, device: torch.device, progress: bool) -> np.ndarray:
    """Each member's logit of P(fake) (n, M) on a split, through the fused module's own input path (so the scales fitted
    here are those it applies)."""
    module = FusedModule([m.module for m in members], [m.image_size for m in members], [m.normalization for m in members],
                         [MemberScale(0.0, 1.0)] * len(members), {"kind": "mean"}, [str(m.path) for m in members])
    out = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))]).to(device)
            out.append(module.member_logits(batch).cpu())
            if progress:
                print(f"\r  scored {min(start + batch_size, len(dataset))}/{len(dataset)}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    return torch.cat(out).numpy()


def mean_dataset_auc(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """The mean over datasets of each dataset's AUC (each weighs alike, whatever its size)."""
    return float(np.mean([safe_auc(labels[groups == g], scores[groups == g]) for g in np.unique(groups)]))


def choose_rule(z: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int) -> tuple[str, dict[str, float]]:
    """The rule with the best two-fold cross-validated mean dataset AUC on val (folds stratified by dataset and label)."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(labels), dtype=int)
    for g in np.unique(groups):
        for y in (0, 1):
            idx = np.flatnonzero((groups == g) & (labels == y))
            fold[rng.permutation(idx)[: len(idx) // 2]] = 1
    results = {}
    for kind in RULES:
        fused = np.zeros(len(labels))
        for k in (0, 1):
            train, held = fold != k, fold == k
            rule = fit_logistic(z[train], labels[train], groups[train]) if kind == "logistic" else {"kind": kind}
            fused[held] = fused_logits(z[held], rule)
        results[kind] = mean_dataset_auc(fused, labels, groups)
    return max(results, key=results.get), results


def slim_copy(src: Path, dst: Path, half: bool) -> None:
    """A member's checkpoint with nothing but what loading needs (no optimizer state), its floating-point weights in
    float16 when `half`."""
    ckpt = read_checkpoint(src)
    slim = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scaler", "record", "logging_parameters")}
    slim["model"] = {k: v.half() if half and v.is_floating_point() else v for k, v in ckpt["model"].items()}
    slim["record"] = {key: ckpt.get("record", {}).get(key) for key in ("run_id", "config", "best_epoch")} if ckpt.get("record") else None
    save_checkpoint(slim, dst)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", nargs="+", type=Path, required=True, help="checkpoints of train_main.py or MesoNet .h5 files")
    add_data_flags(p, dataset=False, root_help="root of the datasets whose val splits fit the fusion")
    p.add_argument("--rule", choices=("auto", *RULES), default="auto", help="fusion rule (default: %(default)s)")
    p.add_argument("--far", type=probability, default=DEFAULT_FAR,
                   help="false-alarm rate on each dataset's val real faces that sets the threshold (default: %(default)s)")
    p.add_argument("--margin", type=crop_margin, help="how the fused detector frames faces for detect.py (default: the mean of "
                   "the members' recorded framings; members trained on unlike framings want one chosen on val: "
                   "tools/framing_cost.py --split val -cpp FUSED --margins ...)")
    p.add_argument("--limit", type=positive_int, help="at most this many val images per dataset")
    p.add_argument("--out", type=Path, required=True, help=f"the fused detector to write (ends in {FUSED_SUFFIX})")
    p.add_argument("--copy-members", action="store_true", help="copy the members beside --out (else they are named "
                   "where they are, which must be inside --out's folder)")
    p.add_argument("--half", action="store_true", help="with --copy-members: float16 weights where val AUC moves < 0.002")
    add_batch_size_flag(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds (default: %(default)s)")
    add_device_flag(p)
    add_progress_flag(p)
    args = p.parse_args(argv)
    if not str(args.out).endswith(FUSED_SUFFIX):
        p.error(f"--out must end in {FUSED_SUFFIX}")
    if args.half and not args.copy_members:
        p.error("--half converts the copies: add --copy-members")
    return args


@cli_main
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = get_device(args.device)
    writable_dir(args.out.parent, "--out's folder")
    if args.out.exists():
        raise UserError(f"{args.out} exists; remove it or pass another --out (a fused detector is never written over)")
    members = [load_model_from_checkpoint(path, device) for path in args.members]
    if any(m.is_fused for m in members):
        raise UserError("a member is itself a fused detector; name its members instead")
    datasets = [d for d in DATASETS if (args.data_root / d / "val").is_dir()]
    if not datasets:
        raise UserError(f"{args.data_root} holds no <dataset>/val split to fit the fusion on")
    size = max(m.image_size for m in members)
    logits, labels, groups = [], [], []
    for k, dataset in enumerate(datasets):
        val = load_dataset(dataset, "val", args.data_root, size, args.limit, norm=PIXELS)
        print(f"scoring {dataset}/val ({len(val)} images) with {len(members)} members")
        logits.append(member_logits(members, val, args.batch_size, device, not args.no_progress))
        labels.append(np.array(dataset_labels(val)))
        groups.append(np.full(len(val), k))
    logits, labels, groups = np.concatenate(logits), np.concatenate(labels), np.concatenate(groups)
    scales = [MemberScale.fit(logits[labels == 0, j]) for j in range(len(members))]
    z = (logits - np.array([s.mean for s in scales])) / np.array([s.std for s in scales])
    for j, member in enumerate(members):
        print(f"member {member.path.name}: val AUC " + ", ".join(
            f"{d} {safe_auc(labels[groups == k], z[groups == k, j]):.4f}" for k, d in enumerate(datasets)))
    cv = {}
    kind = args.rule
    if kind == "auto":
        kind, cv = choose_rule(z, labels, groups, args.seed)
        print("two-fold cross-validated mean val AUC: " + ", ".join(f"{r} {a:.4f}" for r, a in cv.items()) + f" -> {kind}")
    rule = fit_logistic(z, labels, groups) if kind == "logistic" else {"kind": kind}
    fused = fused_logits(z, rule)
    probs = 1 / (1 + np.exp(-fused))
    threshold = real_face_threshold([probs[(groups == k) & (labels == 0)] for k in range(len(datasets))], args.far,
                                    "val real faces of " + " and ".join(datasets))
    val_auc = {d: safe_auc(labels[groups == k], fused[groups == k]) for k, d in enumerate(datasets)}
    print(f"fused ({kind}): val AUC " + ", ".join(f"{d} {a:.4f}" for d, a in val_auc.items()) + f"; threshold {threshold.describe()}")
    margins = [m.framing.margin for m in members if m.framing.margin is not None]
    if args.margin is not None:
        framing = {"margin": args.margin, "source": "chosen when fusing (tools/fuse_detectors.py --margin)"}
    elif margins:
        framing = {"margin": round(float(np.mean(margins)), 3), "source": "the mean of its members' training framings"}
    else:
        framing = None
    files = place_members(args, members, datasets, device)
    spec = {"members": [{"file": name, "sha256": file_sha256(args.out.parent / name), "model": m.name,
                         "scale": s.to_dict(), "framing": m.framing.to_dict(), "threshold_alone": m.threshold.to_entry(),
                         "source_sha256": m.sha256}
                        for m, s, name in zip(members, scales, files)],
            "rule": rule, "threshold": {**threshold.to_entry(), "rule": f"real-far:{args.far:g}"}, "framing": framing,
            "fitted_on": {"data_root": str(args.data_root), "splits": [f"{d}/val" for d in datasets],
                          "n": {d: int(np.sum(groups == k)) for k, d in enumerate(datasets)}, "val_auc": val_auc,
                          "cross_validated_mean_val_auc": cv}}
    write_fused_spec(args.out, spec)
    print(f"wrote {args.out}")
    return spec


def place_members(args: argparse.Namespace, members: list[Detector], datasets: list[str], device: torch.device) -> list[str]:
    """The members' file names relative to --out's folder: copies there with --copy-members (float16 with --half where
    the val AUC of no dataset moves by HALF_AUC_TOLERANCE or more), else where they are (which must be inside it)."""
    folder = args.out.parent.resolve()
    names = []
    for member in members:
        if not args.copy_members:
            try:
                names.append(member.path.resolve().relative_to(folder).as_posix())
            except ValueError as err:
                raise UserError(f"member {member.path} is not inside {folder}; pass --copy-members") from err
            continue
        target = folder / member.path.name
        if target.exists():
            raise UserError(f"{target} exists; a member copy is never written over (remove it or pick another --out)")
        if is_keras_file(member.path):
            shutil.copyfile(member.path, target)
        elif args.half:
            slim_copy(member.path, target, half=True)
            moved = half_auc_change(member, load_model_from_checkpoint(target, device), args, datasets, device)
            if max(moved.values()) >= HALF_AUC_TOLERANCE:
                slim_copy(member.path, target, half=False)
                print(f"member {member.path.name}: float16 moved val AUC by "
                      + ", ".join(f"{d} {v:.4f}" for d, v in moved.items()) + "; kept float32")
            else:
                print(f"member {member.path.name}: float16 (val AUC moved by at most {max(moved.values()):.5f})")
        else:
            slim_copy(member.path, target, half=False)
        names.append(target.name)
    return names


def half_auc_change(full: Detector, half: Detector, args: argparse.Namespace, datasets: list[str],
                    device: torch.device) -> dict[str, float]:
    """|val AUC in float32 - val AUC in float16 weights| per dataset, each member alone at its own size."""
    change = {}
    for dataset in datasets:
        val = load_dataset(dataset, "val", args.data_root, full.image_size, args.limit, full.normalization)
        aucs = []
        for member in (full, half):
            _, scores, labels = get_soft_scores_and_true_labels(val, member.module, args.batch_size, device, False)
            aucs.append(safe_auc(labels, scores))
        change[dataset] = abs(aucs[0] - aucs[1])
    return change


if __name__ == "__main__":
    main()
