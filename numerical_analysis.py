"""ROC and DET curves, AUC, EER and friends of a trained detector on the test split.

    python numerical_analysis.py -m SimpleNet -cpp checkpoints/fakes_dataset_SimpleNet_Adam.pt -d fakes_dataset

One pass over the test set collects both soft scores (softmax output 0 = "real" score, group A; output 1 = "fake"
score, group B) and the labels (1 = fake is the positive class). Writes figures/<dataset>_<model>_roc_curve.png,
figures/<dataset>_<model>_det_curve.png, figures/<dataset>_<model>_reliability.png (calibration) and
figures/<dataset>_<model>_metrics.json; prints the metrics.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn import metrics

from analysis import add_analysis_args, analysis_inputs_from_flags, get_soft_scores_and_true_labels
from cli import UserError, cli_main, positive_int, probability
from faces_dataset import dataset_sources, load_dataset
from files import atomic_write_json
from metrics import (
    AGGREGATES,
    apply_temperature,
    bootstrap_intervals,
    compute_metrics,
    equal_error_rate,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    safe_auc,
    video_scores,
    youden_threshold,
)
from models import MODEL_NAMES
from utils import new_figure, save_figure

SCORE_GROUPS = {"A: real score (output 0)": 0, "B: fake score (output 1)": 1}


def plot_roc_and_det(labels: np.ndarray, scores: dict[str, np.ndarray], title: str, roc_path: Path, det_path: Path,
                     provenance: dict[str, str] | None = None) -> None:
    """ROC and DET curves of every score group, with AUC (ROC) and EER (DET) in the legends."""
    fig, ax = new_figure(figsize=(5.6, 5.2))
    for name, s in scores.items():
        metrics.RocCurveDisplay.from_predictions(labels, s, pos_label=1, ax=ax, name=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="chance (AUC = 0.5)")
    ax.set_title(f"ROC: {title}")
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, roc_path, provenance)
    fig, ax = new_figure(figsize=(5.6, 5.2))
    for name, s in scores.items():
        eer, _ = equal_error_rate(labels, s)
        metrics.DetCurveDisplay.from_predictions(labels, s, pos_label=1, ax=ax, name=f"{name} (EER = {eer:.3f})")
    ax.set_title(f"DET: {title}")
    ax.legend(loc="upper right", fontsize=8)
    save_figure(fig, det_path, provenance)


def plot_reliability(bins: dict[str, list[dict]], title: str, path: Path, provenance: dict[str, str] | None = None) -> Path:
    """Observed share of fakes against mean P(fake) per score bin (the diagonal is perfect calibration)."""
    fig, ax = new_figure(figsize=(5.4, 5.2))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfectly calibrated")
    for name, rows in bins.items():
        ax.plot([r["mean_score"] for r in rows], [r["fake_share"] for r in rows], "o-", label=name)
    ax.set_xlabel("mean P(fake) in the bin")
    ax.set_ylabel("share of fakes in the bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return save_figure(fig, path, provenance)


def per_video_metrics(sources: list[str], labels: np.ndarray, fake_scores: np.ndarray, threshold: float) -> dict:
    """Video-level AUC and accuracy at `threshold` for each aggregate of a video's frame scores (mean, confident)."""
    by_aggregate = {}
    for how in AGGREGATES:
        videos, video_labels, scores = video_scores(sources, labels, fake_scores, how)
        by_aggregate[how] = {"auc": safe_auc(video_labels, scores),
                             "accuracy": float(np.mean((scores >= threshold) == video_labels))}
    return {"n_videos": len(videos), "n_fake_videos": int(video_labels.sum()), "by_aggregate": by_aggregate}


THRESHOLD_RULES = ("checkpoint", "val-eer", "val-youden")


def threshold_arg(text: str) -> str | float:
    """--threshold: a probability, 'checkpoint' (the threshold saved with it) or 'val-eer' / 'val-youden' (chosen on
    the validation split)."""
    if text in THRESHOLD_RULES:
        return text
    try:
        return probability(text)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"must be {', '.join(THRESHOLD_RULES)} or a probability in [0, 1], got {text}") from err


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_analysis_args(p, MODEL_NAMES)
    p.add_argument("--threshold", type=threshold_arg, default="checkpoint", help="second operating point, beside 0.5: "
                   "checkpoint (the one saved with it: for train_main.py runs, what at most 5 %% of the validation real "
                   "faces reach), val-eer, val-youden (chosen on the validation split) or a probability (default: %(default)s)")
    p.add_argument("--calibrate", action="store_true", help="fit temperature scaling on the validation split and "
                   "report the calibration error before and after")
    p.add_argument("--bootstrap", type=positive_int, default=1000, help="bootstrap resamples for the 95%% intervals "
                   "of AUC and EER (default: %(default)s)")
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    inputs = analysis_inputs_from_flags(args)
    model, test_dataset, device = inputs.model, inputs.dataset, inputs.device
    detector = inputs.detector
    real_scores, fake_scores, labels = get_soft_scores_and_true_labels(test_dataset, model, args.batch_size, device,
                                                                       not args.no_progress, args.num_workers)
    if len(np.unique(labels)) < 2:
        raise UserError("the test set holds only one class; ROC/DET need real and fake images")
    result = compute_metrics(labels, fake_scores, 0.5)
    result["auc_group_a_real_score"] = float(metrics.roc_auc_score(labels, real_scores))
    # the test split's class ratio may differ from training's: also report accuracy at a threshold chosen on the
    # validation split (by default the EER threshold the checkpoint stores), and bootstrap intervals of AUC and EER
    val_scores = val_labels = None
    if args.threshold in ("val-eer", "val-youden") or args.calibrate:
        val = load_dataset(inputs.dataset_name, "val", args.data_root, detector.image_size, args.limit,
                           detector.normalization, catalog=args.catalog)
        _, val_scores, val_labels = get_soft_scores_and_true_labels(val, model, args.batch_size, device,
                                                                    not args.no_progress, args.num_workers)
        if len(np.unique(val_labels)) < 2:
            wanted = "--calibrate" if args.calibrate else f"--threshold {args.threshold}"
            raise UserError(f"{wanted} is fitted on the validation split, which holds only "
                            f"{'real' if val_labels[0] == 0 else 'fake'} images; it needs both classes")
    if args.threshold == "checkpoint":
        value, source = detector.threshold.value, detector.threshold.source
    elif args.threshold == "val-eer":
        value, source = equal_error_rate(val_labels, val_scores)[1], "validation EER"
    elif args.threshold == "val-youden":
        value, source = youden_threshold(val_labels, val_scores), "validation Youden J"
    else:
        value, source = float(args.threshold), "--threshold"
    at_val = compute_metrics(labels, fake_scores, value)
    result.update(val_threshold=value, val_threshold_source=source, accuracy_at_val_threshold=at_val["accuracy"],
                  balanced_accuracy_at_val_threshold=at_val["balanced_accuracy"],
                  ci95=bootstrap_intervals(labels, fake_scores, args.bootstrap, args.seed))
    bins = {"as trained": reliability_bins(labels, fake_scores)}
    if args.calibrate:
        temperature = fit_temperature(val_labels, val_scores)
        calibrated = apply_temperature(fake_scores, temperature)
        result.update(temperature=temperature, ece_calibrated=expected_calibration_error(labels, calibrated))
        bins[f"temperature {temperature:.2f} (fitted on val)"] = reliability_bins(labels, calibrated)
    sources = dataset_sources(test_dataset)
    if sources is not None:  # frames of videos (a catalog): one score per video, as DeepfakeBench reports beside frames
        result["video"] = per_video_metrics(sources, labels, fake_scores, value)
    result.update(model=detector.name, dataset=inputs.dataset_name, checkpoint=str(args.checkpoint_path),
                  checkpoint_sha256=detector.sha256, run_id=inputs.provenance["Run id"] or None)
    prefix = inputs.prefix
    plot_roc_and_det(
        labels, {name: (real_scores, fake_scores)[i] for name, i in SCORE_GROUPS.items()}, f"{detector.name} on {inputs.dataset_name}",
        args.figures_dir / f"{prefix}_roc_curve.png", args.figures_dir / f"{prefix}_det_curve.png", inputs.provenance,
    )
    plot_reliability(bins, f"Reliability: {detector.name} on {inputs.dataset_name} (ECE {result['ece']:.3f})",
                     args.figures_dir / f"{prefix}_reliability.png", inputs.provenance)
    atomic_write_json(args.figures_dir / f"{prefix}_metrics.json", result)
    ci = result["ci95"]
    print(f"AUC (group B, fake score): {result['auc']:.4f} (95% CI {ci['auc'][0]:.3f}-{ci['auc'][1]:.3f})   "
          f"AUC (group A, real score): {result['auc_group_a_real_score']:.4f}")
    print(f"accuracy {100 * result['accuracy']:.2f}% at 0.5, {100 * result['accuracy_at_val_threshold']:.2f}% "
          f"at {value:.3f} ({source}); ECE {result['ece']:.4f}, Brier {result['brier']:.4f}"
          + (f", ECE after temperature scaling {result['ece_calibrated']:.4f}" if args.calibrate else ""))
    for how, video in result.get("video", {}).get("by_aggregate", {}).items():
        auc = "undefined (one class)" if video["auc"] is None else f"{video['auc']:.4f}"
        print(f"per video ({how} of its frames): AUC {auc}, accuracy {100 * video['accuracy']:.2f}% at {value:.3f} "
              f"over {result['video']['n_videos']} videos")
    print(json.dumps({k: v for k, v in result.items() if k not in ("model", "dataset", "checkpoint")}, indent=2))
    return result


if __name__ == "__main__":
    main()
