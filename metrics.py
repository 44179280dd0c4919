"""Detection metrics on soft scores (pure functions; label 1 = fake is the positive class).

Shared by the Trainer (validation AUC for checkpoint selection, the EER threshold saved with the checkpoint) and the
analysis scripts (numerical_analysis.py).
"""
from __future__ import annotations

import numpy as np
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn import metrics


def safe_auc(labels: np.ndarray, fake_scores: np.ndarray) -> float | None:
    """ROC AUC, or None when only one class is present (AUC is undefined there)."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return None
    return float(metrics.roc_auc_score(labels, fake_scores))


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): the operating point where false-positive and false-negative rates are equal (interpolated)."""
    fpr, tpr, thresholds = metrics.roc_curve(labels, scores)
    eer = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
    threshold = float(interp1d(fpr, thresholds)(eer))
    return float(eer), min(threshold, 1.0)  # roc_curve's first threshold is +inf (nothing flagged): cap at 1


def compute_metrics(labels: np.ndarray, fake_scores: np.ndarray, threshold: float = 0.5) -> dict:
    """AUC, EER, average precision, accuracy and balanced accuracy at `threshold`, confusion matrix; 1 = fake."""
    labels = np.asarray(labels)
    predictions = (np.asarray(fake_scores) >= threshold).astype(int)
    eer, eer_threshold = equal_error_rate(labels, fake_scores)
    tn, fp, fn, tp = metrics.confusion_matrix(labels, predictions, labels=[0, 1]).ravel()
    return {
        "n_samples": int(labels.size),
        "n_real": int((labels == 0).sum()),
        "n_fake": int((labels == 1).sum()),
        "auc": float(metrics.roc_auc_score(labels, fake_scores)),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "average_precision": float(metrics.average_precision_score(labels, fake_scores)),
        "accuracy": float(metrics.accuracy_score(labels, predictions)),
        "balanced_accuracy": float(metrics.balanced_accuracy_score(labels, predictions)),
        "threshold": threshold,
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "ece": expected_calibration_error(labels, fake_scores),
        "brier": brier_score(labels, fake_scores),
    }


def bootstrap_intervals(
    labels: np.ndarray, fake_scores: np.ndarray, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, list[float]]:
    """Percentile bootstrap confidence intervals of AUC and EER: resample the test images with replacement (seeded).

    Resamples that miss a class are redrawn. Tells whether two models differ by more than the test split's noise.
    """
    labels, fake_scores = np.asarray(labels), np.asarray(fake_scores)
    rng = np.random.default_rng(seed)
    aucs, eers = [], []
    while len(aucs) < n_resamples:
        idx = rng.integers(0, len(labels), len(labels))
        y = labels[idx]
        if y.min() == y.max():
            continue
        aucs.append(metrics.roc_auc_score(y, fake_scores[idx]))
        eers.append(equal_error_rate(y, fake_scores[idx])[0])
    tail = 100 * (1 - level) / 2
    return {name: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))]
            for name, v in (("auc", aucs), ("eer", eers))}


def expected_calibration_error(labels: np.ndarray, fake_scores: np.ndarray, n_bins: int = 15) -> float:
    """ECE of P(fake): the sample-weighted mean |share of fakes - mean score| over equal-width score bins."""
    bins = reliability_bins(labels, fake_scores, n_bins)
    total = sum(b["count"] for b in bins)
    return float(sum(b["count"] / total * abs(b["fake_share"] - b["mean_score"]) for b in bins))


def brier_score(labels: np.ndarray, fake_scores: np.ndarray) -> float:
    """Mean squared error between P(fake) and the label."""
    return float(metrics.brier_score_loss(labels, fake_scores))


def youden_threshold(labels: np.ndarray, fake_scores: np.ndarray) -> float:
    """The threshold maximising Youden's J = TPR - FPR (the ROC point farthest above chance)."""
    fpr, tpr, thresholds = metrics.roc_curve(labels, fake_scores)
    return float(min(thresholds[int(np.argmax(tpr - fpr))], 1.0))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def fit_temperature(labels: np.ndarray, fake_scores: np.ndarray) -> float:
    """Temperature scaling (Guo et al., 2017): the T > 0 that minimises the NLL of sigmoid(logit(p) / T) on these
    (validation) scores. With two outputs, logit(P(fake)) is the difference of the model's logits."""
    from scipy.optimize import minimize_scalar

    z, y = _logit(fake_scores), np.asarray(labels, dtype=float)

    def nll(log_t: float) -> float:
        q = np.clip(1 / (1 + np.exp(-z / np.exp(log_t))), 1e-12, 1 - 1e-12)
        return float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-5, 5), method="bounded").x))


def apply_temperature(fake_scores: np.ndarray, temperature: float) -> np.ndarray:
    """P(fake) after dividing the logits by `temperature` (ranking, hence AUC, is unchanged)."""
    return 1 / (1 + np.exp(-_logit(fake_scores) / temperature))


def reliability_bins(labels: np.ndarray, fake_scores: np.ndarray, n_bins: int = 15) -> list[dict]:
    """Per equal-width score bin: its centre, count, mean P(fake) and the observed share of fakes (for the diagram)."""
    labels, fake_scores = np.asarray(labels, dtype=float), np.asarray(fake_scores, dtype=float)
    bins = np.minimum((fake_scores * n_bins).astype(int), n_bins - 1)  # a score of exactly 1 is in the last bin
    return [{"centre": (b + 0.5) / n_bins, "count": int((bins == b).sum()),
             "mean_score": float(fake_scores[bins == b].mean()), "fake_share": float(labels[bins == b].mean())}
            for b in range(n_bins) if (bins == b).any()]


# ---- per video: frame scores -> one score per source video (numerical_analysis.py, detect.py) -----------------------
AGGREGATES = ("mean", "confident")
# the DFDC winner's confident strategy (selimsef, 2020): >0.8 is confidently fake, <0.2 confidently real
CONFIDENT_FAKE, CONFIDENT_REAL, MIN_CONFIDENT_FRAMES, CONFIDENT_SHARE, REAL_SHARE = 0.8, 0.2, 11, 1 / 2.5, 0.9


def confident_strategy(scores: np.ndarray) -> float:
    """The DFDC winner's video score: the mean of the confidently fake frames when there are many (more than 11 and
    more than 40 % of the frames), else the mean of the confidently real ones when they are over 90 %, else the mean."""
    scores = np.asarray(scores, dtype=float)
    fakes = scores > CONFIDENT_FAKE
    if fakes.sum() > MIN_CONFIDENT_FRAMES and fakes.sum() > len(scores) * CONFIDENT_SHARE:
        return float(scores[fakes].mean())
    reals = scores < CONFIDENT_REAL
    if reals.sum() > REAL_SHARE * len(scores):
        return float(scores[reals].mean())
    return float(scores.mean())


def aggregate(scores: np.ndarray, how: str) -> float:
    """A video's P(fake) from its frames' scores: 'mean' or 'confident'."""
    return confident_strategy(scores) if how == "confident" else float(np.mean(scores))


def video_scores(
    sources: list[str], labels: np.ndarray, fake_scores: np.ndarray, how: str
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(videos, their labels, their aggregated P(fake)) from per-frame scores grouped by source video, in first-seen
    order. A video whose frames carry two labels is an error: its label would be ambiguous."""
    labels, fake_scores = np.asarray(labels), np.asarray(fake_scores, dtype=float)
    frames: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        frames.setdefault(source, []).append(i)
    videos = list(frames)
    video_labels = []
    for video in videos:
        found = set(labels[frames[video]].tolist())
        if len(found) > 1:
            raise ValueError(f"the frames of {video} carry both labels")
        video_labels.append(found.pop())
    return videos, np.array(video_labels), np.array([aggregate(fake_scores[frames[v]], how) for v in videos])
