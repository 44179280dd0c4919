"""Cross-dataset evaluation: every checkpoint on every data root's (and dataset's) test split, as a table and a heatmap.

    python tools/cross_eval.py --checkpoints checkpoints/fakes_dataset_EfficientNetLite0_Adam.pt \
        checkpoints/synthetic_dataset_EfficientNetLite0_Adam.pt --data-roots ../shared/data
    python tools/cross_eval.py --checkpoints A.pt B.pt --data-roots R1 R2 -d fakes_dataset

A detector's score on its own test split says little; the field judges it on other data (DeepfakeBench: Xception
trained on FF++ has AUC 0.964 in-domain and 0.737 on Celeb-DF-v2). Each cell holds AUC, EER, AP, the accuracy at a
threshold (--threshold: the checkpoint's own; real-far, the one that at most --far of the val real faces of every
dataset scored reach; or target-val), the share of real faces called fake there and, where the threshold has an
uncertain band, the share called uncertain; computed exactly as numerical_analysis.py does. Without -d every dataset found
under each root is used. Writes out/cross_eval.json, prints a markdown table, and draws figures/cross_eval_auc.png
(checkpoints x test sets, AUC in each cell).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from analysis import eer_threshold_on, get_soft_scores_and_true_labels
from cli import (
    UserError,
    add_batch_size_flag,
    add_device_flag,
    add_output_flags,
    add_progress_flag,
    cli_main,
    positive_int,
    probability,
    writable_dir,
)
from common import DATASETS, DEFAULT_SEED
from detector import Detector, load_model_from_checkpoint
from faces_dataset import load_dataset
from files import atomic_write_json
from metrics import DEFAULT_FAR, Threshold, detection_summary, real_face_threshold
from utils import get_device, new_figure, save_figure


def test_sets(roots: list[Path], dataset: str | None) -> list[tuple[Path, str]]:
    """(root, dataset) pairs to score: -d on every root, or every dataset each root holds; a root with none of them is
    refused before anything is scored (never silently dropped)."""
    pairs = []
    for root in roots:
        found = [(root, d) for d in ([dataset] if dataset else DATASETS) if (root / d / "test").is_dir()]
        if not found:
            wanted = dataset or "{" + ",".join(DATASETS) + "}"
            raise UserError(f"{root} has no {wanted}/test folder (the assignment layout: <root>/<dataset>/test/{{real,fake}}/)")
        pairs += found
    return pairs


def row_labels(checkpoints: list[Path]) -> list[str]:
    """A name per checkpoint: its file stem, with as many parent folders as it takes to tell apart two files of one
    name (runs/a/x.pt and runs/b/x.pt become a/x and b/x)."""
    parts = [p.resolve().with_suffix("").parts for p in checkpoints]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names) or depth == max(len(p) for p in parts):
            return names
    return names


def threshold_on_val_reals(detector: Detector, sets: list[tuple[Path, str]], args: argparse.Namespace, device) -> Threshold:
    """The threshold at --far on the val real faces of every dataset scored (each held to the rate), with its band:
    chosen where a threshold transfers, on real faces of more than one source, never on a test split."""
    reals = []
    for root, dataset in sets:
        val = load_dataset(dataset, "val", root, detector.image_size, args.limit, detector.normalization)
        _, scores, labels = get_soft_scores_and_true_labels(val, detector.module, args.batch_size, device,
                                                            not args.no_progress)
        reals.append(scores[labels == 0])
    return real_face_threshold(reals, args.far, "val real faces of " + " and ".join(f"{r.name}/{d}" for r, d in sets))


def target_threshold(detector: Detector, root: Path, dataset: str, args: argparse.Namespace, device) -> Threshold:
    """The detector's EER threshold on the val split of the test set's own root and dataset."""
    val = load_dataset(dataset, "val", root, detector.image_size, args.limit, detector.normalization)
    threshold = eer_threshold_on(val, detector.module, device, f"--threshold target-val: {root}/{dataset}/val", args.batch_size,
                                 not args.no_progress)
    return Threshold(threshold, f"EER on {root.name}/{dataset}/val")


def table_line(r: dict) -> str:
    """One markdown row of the printed table."""
    shares = " | ".join("n/a" if r.get(k) is None else f"{100 * r[k]:.1f} %" for k in ("false_alarms", "uncertain"))
    if r["auc"] is None:
        return (f"| {r['checkpoint']} | {r['test_set']} | {r['n']} | n/a | n/a | n/a | "
                f"{100 * r['accuracy']:.1f} % at {r['threshold']:.3f} ({r['note']}) | {shares} |")
    (auc_lo, auc_hi), (eer_lo, eer_hi) = r["ci95"]["auc"], r["ci95"]["eer"]
    return (f"| {r['checkpoint']} | {r['test_set']} | {r['n']} | {r['auc']:.4f} [{auc_lo:.3f}-{auc_hi:.3f}] | "
            f"{r['eer']:.4f} [{eer_lo:.3f}-{eer_hi:.3f}] | {r['ap']:.4f} | {100 * r['accuracy']:.1f} % at {r['threshold']:.3f} "
            f"| {shares} |")


def auc_grid(rows: list[dict], checkpoints: list[str], sets: list[str]) -> np.ndarray:
    """AUC per (checkpoint, test set); NaN where a cell was not scored or its AUC is undefined."""
    grid = np.full((len(checkpoints), len(sets)), np.nan)
    for r in rows:
        grid[checkpoints.index(r["checkpoint"]), sets.index(r["test_set"])] = np.nan if r["auc"] is None else r["auc"]
    return grid


def plot_heatmap(rows: list[dict], checkpoints: list[str], sets: list[str], path: Path) -> Path:
    """Checkpoints (rows) x test sets (columns), AUC written in each cell."""
    grid = auc_grid(rows, checkpoints, sets)
    fig, ax = new_figure(figsize=(2.2 + 1.9 * len(sets), 1.2 + 0.7 * len(checkpoints)))
    shown = ax.imshow(grid, vmin=0.5, vmax=1.0, cmap="viridis")
    for i in range(len(checkpoints)):
        for j in range(len(sets)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", color="white" if grid[i, j] < 0.8 else "black")
    ax.set_xticks(range(len(sets)), sets, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(checkpoints)), checkpoints, fontsize=8)
    ax.set_title("Cross-dataset test AUC (rows: trained model, columns: test set)")
    fig.colorbar(shown, ax=ax, fraction=0.046, label="AUC")
    return save_figure(fig, path)


@cli_main
def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", type=Path, required=True,
                   help="checkpoints written by train_main.py, or MesoNet's Keras .h5 weights (a published detector)")
    p.add_argument("--data-roots", nargs="+", type=Path, required=True, help="roots in the assignment layout")
    p.add_argument("-d", "--dataset", choices=DATASETS, help="only this dataset of each root (default: every one)")
    p.add_argument("--threshold", choices=("checkpoint", "real-far", "target-val"), default="checkpoint",
                   help="accuracy at the threshold saved with the checkpoint; at the one that at most --far of the val "
                   "real faces of every dataset scored reach (chosen on real faces of several sources); or at the EER "
                   "threshold on each test set's own val split (data like the target's; default: %(default)s)")
    p.add_argument("--far", type=probability, default=DEFAULT_FAR,
                   help="with --threshold real-far: the false-alarm rate on each source's real faces (default: %(default)s)")
    p.add_argument("--limit", type=positive_int, help="at most this many test images per set")
    add_batch_size_flag(p)
    p.add_argument("--bootstrap", type=positive_int, default=1000,
                   help="bootstrap resamples for the 95%% intervals of AUC and EER (default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the bootstrap (default: %(default)s)")
    add_device_flag(p)
    add_output_flags(p, out="for cross_eval.json", figures="for cross_eval_auc.png")
    add_progress_flag(p)
    args = p.parse_args(argv)
    device = get_device(args.device)
    sets = test_sets(args.data_roots, args.dataset)
    writable_dir(args.out_dir, "--out-dir")
    writable_dir(args.figures_dir, "--figures-dir")
    several_roots = len(args.data_roots) > 1
    names = row_labels(args.checkpoints)
    rows = []
    for path, name in zip(args.checkpoints, names):
        detector = load_model_from_checkpoint(path, device)
        shared = threshold_on_val_reals(detector, sets, args, device) if args.threshold == "real-far" else detector.threshold
        for root, dataset in sets:
            threshold = target_threshold(detector, root, dataset, args, device) if args.threshold == "target-val" else shared
            test = load_dataset(dataset, "test", root, detector.image_size, args.limit, detector.normalization)
            _, scores, labels = get_soft_scores_and_true_labels(test, detector.module, args.batch_size, device,
                                                                not args.no_progress)
            test_set = f"{root.name}/{dataset}" if several_roots else dataset
            rows.append({"checkpoint": name, "model": detector.name, "test_set": test_set, "threshold": threshold.value,
                         "threshold_source": threshold.source, "uncertain_band": threshold.to_entry()["band"],
                         **detection_summary(labels, scores, threshold, args.bootstrap, args.seed)})
            atomic_write_json(args.out_dir / "cross_eval.json", rows)  # every cell kept as soon as it is scored
    said = {"checkpoint": "the one saved with each checkpoint", "target-val": "the EER on each test set's own val split",
            "real-far": f"at most {100 * args.far:g} % of each dataset's val real faces called fake"}
    print(f"accuracy thresholds: {said[args.threshold]}")
    print("| checkpoint | test set | n | AUC [95 % CI] | EER [95 % CI] | AP | accuracy at its threshold | reals called "
          "fake | uncertain |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(table_line(r))
    sets_seen = list(dict.fromkeys(r["test_set"] for r in rows))
    plot_heatmap(rows, names, sets_seen, args.figures_dir / "cross_eval_auc.png")
    return rows


if __name__ == "__main__":
    main()
