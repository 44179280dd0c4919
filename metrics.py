"""Detection metrics on soft scores (pure functions; label 1 = fake is the positive class).

Shared by the Trainer (validation AUC for checkpoint selection, the EER threshold saved with the checkpoint) and the
analysis scripts (numerical_analysis.py).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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


# ---- decision thresholds that travel: chosen on real faces at a stated false-alarm rate --------------------------------
DEFAULT_FAR = 0.05  # the share of real faces a shipped threshold may call fake, on each source it was chosen on
VERDICTS = ("real", "uncertain", "fake")


def real_far_threshold(real_scores: Sequence[float], far: float) -> float:
    """The lowest threshold on P(fake) at which at most `far` of these real faces score at or above it (are called
    fake): with k = floor(far * n) false alarms allowed, the midpoint between the (k+1)-th highest score, which must
    stay below, and the next higher distinct score. Ties are never split: all tied reals stay on the same side, so
    fewer than k may be flagged. far >= 1 flags every face (the lowest score); no score above the (k+1)-th: just above it."""
    scores = np.sort(np.asarray(real_scores, dtype=float))[::-1]
    if scores.size == 0:
        raise ValueError("no real-face score to choose a threshold on")
    if not 0 <= far <= 1 or math.isnan(far):
        raise ValueError(f"the false-alarm rate must be in [0, 1], got {far}")
    k = int(math.floor(far * scores.size + 1e-9))
    if k >= scores.size:
        return float(scores[-1])
    kept_below = scores[k]
    higher = scores[scores > kept_below]
    if higher.size == 0:
        return float(np.nextafter(kept_below, np.inf))
    return float((kept_below + higher.min()) / 2)


def per_source_far_threshold(real_scores_by_source: Sequence[Sequence[float]], far: float) -> float:
    """The threshold that at most `far` of the real faces of *each* source reach: the highest of the per-source ones
    (a pooled rate would let the largest source hide a smaller one that fires far more often)."""
    if not real_scores_by_source:
        raise ValueError("no source of real faces to choose a threshold on")
    return max(real_far_threshold(scores, far) for scores in real_scores_by_source)


@dataclass(frozen=True)
class Threshold:
    """A decision threshold on P(fake) and how it was chosen; with a band (lo, hi) around it, scores in [lo, hi) are
    'uncertain' instead of a verdict the data cannot back (a score >= hi is fake, < lo real)."""

    value: float
    source: str
    band: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.band is not None and not self.band[0] <= self.value <= self.band[1]:
            raise ValueError(f"the uncertain band {self.band} does not hold the threshold {self.value}")

    def binary(self, score: float) -> str:
        """'fake' at or above the threshold, else 'real' (what accuracy is measured at)."""
        return "fake" if score >= self.value else "real"

    def verdict(self, score: float) -> str:
        """real, uncertain or fake: the band when there is one, else the threshold alone."""
        if self.band is None:
            return self.binary(score)
        lo, hi = self.band
        return "fake" if score >= hi else "real" if score < lo else "uncertain"

    def describe(self) -> str:
        text = f"{self.value:.3f} ({self.source})"
        if self.band is not None:
            text += f"; uncertain from {self.band[0]:.3f} to {self.band[1]:.3f}"
        return text

    def to_entry(self) -> dict:
        return {"value": self.value, "source": self.source, "band": None if self.band is None else list(self.band)}

    @classmethod
    def from_entry(cls, entry: object) -> Threshold:
        """From a checkpoint's or fused detector's 'threshold' entry; without one, 0.5 says so (and why, when the
        entry carries a warning) in its source."""
        if isinstance(entry, dict) and entry.get("value") is not None:
            band = entry.get("band")
            return cls(float(entry["value"]), str(entry.get("source", "checkpoint")),
                       None if band is None else (float(band[0]), float(band[1])))
        why = entry.get("warning") if isinstance(entry, dict) else None
        return cls(0.5, f"default 0.5: {why or 'the file stores no threshold'}")


def real_face_threshold(real_scores_by_source: Sequence[Sequence[float]], far: float = DEFAULT_FAR,
                        what: str = "validation real faces") -> Threshold:
    """The threshold at false-alarm rate `far` on each source of real faces, with the uncertain band between the
    thresholds at twice and half that rate (2 far of the reals reach its lower edge, far / 2 its upper one)."""
    value = per_source_far_threshold(real_scores_by_source, far)
    lo = per_source_far_threshold(real_scores_by_source, min(1.0, 2 * far))
    hi = per_source_far_threshold(real_scores_by_source, far / 2)
    sizes = " + ".join(str(len(s)) for s in real_scores_by_source)
    return Threshold(value, f"at most {100 * far:g} % of {what} ({sizes}) called fake", (min(lo, value), max(hi, value)))


def validation_threshold(labels: np.ndarray, scores: np.ndarray, far: float = DEFAULT_FAR) -> dict | None:
    """The decision threshold a checkpoint carries, as its entry, from the val split's labels and P(fake) scores: the
    score that at most `far` of its real faces reach (real faces are what a user's media shares with ours; the user's kind of fake is not), with its
    uncertain band and, for reference, the val EER threshold. A val split without a real face gives no threshold but
    an entry that says so (readers then fall back to 0.5 and tell the user why)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    reals = scores[labels == 0]
    if reals.size == 0:
        return {"value": None, "source": None, "warning": "the validation split holds no real face, so no threshold "
                "could be chosen on real faces; verdicts use 0.5"}
    chosen = real_face_threshold([reals], far, "the validation split's real faces")
    eer = equal_error_rate(labels, scores)[1] if len(np.unique(labels)) == 2 else None
    return {**chosen.to_entry(), "rule": f"real-far:{far:g}", "eer_threshold": eer}


def is_better(select_by: str, value: float | None, best: float | None) -> bool:
    """Whether a validation value beats the best so far: higher accuracy / AUC, lower loss; None never wins."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best if select_by == "loss" else value > best


def verdict_shares(labels: np.ndarray, scores: np.ndarray, threshold: Threshold) -> dict:
    """At the threshold: the share of real faces called fake (false alarms), and with its band the share of faces
    called 'uncertain' and the accuracy on the others (None where a share has no face to count)."""
    verdicts = np.array([threshold.verdict(float(s)) for s in scores])
    reals = labels == 0
    decided = verdicts != "uncertain"
    return {"false_alarms": float(np.mean(scores[reals] >= threshold.value)) if reals.any() else None,
            "uncertain": float(np.mean(~decided)) if threshold.band is not None and labels.size else None,
            "accuracy_decided": float(np.mean((verdicts[decided] == "fake") == (labels[decided] == 1)))
            if threshold.band is not None and decided.any() else None}


def detection_summary(labels: np.ndarray, scores: np.ndarray, threshold: Threshold, n_resamples: int, seed: int) -> dict:
    """AUC, EER, AP (with bootstrap intervals), accuracy and verdict shares of scores at a threshold; AUC, EER, AP and
    their intervals are None (with a note) when the set holds one class."""
    shares = verdict_shares(labels, scores, threshold)
    if len(np.unique(labels)) < 2:
        only = "real" if labels.size and labels[0] == 0 else "fake"
        accuracy = float(np.mean((scores >= threshold.value).astype(int) == labels)) if labels.size else None
        return {"n": int(labels.size), "auc": None, "eer": None, "ap": None, "accuracy": accuracy, **shares,
                "ci95": None, "note": f"only {only} images: AUC and EER are undefined"}
    m = compute_metrics(labels, scores, threshold.value)
    return {"n": m["n_samples"], "auc": m["auc"], "eer": m["eer"], "ap": m["average_precision"],
            "accuracy": m["accuracy"], **shares, "ci95": bootstrap_intervals(labels, scores, n_resamples, seed)}


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
