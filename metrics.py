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
    }
