"""Ranking and classification metrics for binary site scores, in plain numpy.

All functions take ``labels`` (N,) of 0/1 and ``scores`` (N,) of real numbers (higher = more
likely damaged). Ties in scores are handled the standard way (average ranks for ROC AUC, one
threshold per distinct score for precision-recall).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from models.calibration import check_binary as _check
from models.calibration import expected_calibration_error, precision_recall_curve, reliability_bins

__all__ = [
    "BinaryReport", "ThresholdCounts", "average_precision", "binary_report", "counts_at_threshold",
    "expected_calibration_error", "precision_recall_at_k", "precision_recall_curve", "reliability_bins", "roc_auc",
]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (probability that a random positive outranks a negative).

    Args:
        labels: (N,) 0/1.
        scores: (N,) higher = more likely positive.

    Returns:
        AUC in [0, 1]; NaN when only one class is present.
    """
    y, s = _check(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision: ``sum_n (R_n - R_{n-1}) P_n`` over descending thresholds.

    Returns:
        AP in [0, 1]; NaN when there is no positive.
    """
    y, s = _check(labels, scores)
    if y.sum() == 0:
        return float("nan")
    precision, recall, _ = precision_recall_curve(y, s)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class ThresholdCounts:
    """Confusion counts and derived figures at one threshold (``score >= threshold`` = positive)."""

    threshold: float
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    recall: float
    f1: float


def counts_at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> ThresholdCounts:
    """Precision, recall and F1 when ``score >= threshold`` is called positive."""
    y, s = _check(labels, scores)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ThresholdCounts(float(threshold), tp, fp, fn, tn, precision, recall, f1)


def precision_recall_at_k(labels: np.ndarray, scores: np.ndarray, k: int) -> tuple[float, float]:
    """Precision and recall among the ``k`` highest-scoring sites (the ones a reviewer checks).

    Ties at the cut are broken by input order (stable sort). ``k`` larger than N uses N.

    Returns:
        ``(precision@k, recall@k)``; recall is NaN without positives.
    """
    y, s = _check(labels, scores)
    k = int(min(max(k, 0), y.size))
    if k == 0:
        return float("nan"), float("nan")
    top = np.argsort(-s, kind="mergesort")[:k]
    hits = int(y[top].sum())
    n_pos = int(y.sum())
    return hits / k, (hits / n_pos if n_pos else float("nan"))


@dataclass(frozen=True)
class BinaryReport:
    """The figures reported for one model (or baseline) on one labelled set."""

    n: int
    positives: int
    roc_auc: float
    average_precision: float
    threshold: float
    precision: float
    recall: float
    f1: float
    top_k: int
    precision_at_k: float
    recall_at_k: float
    ece: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-safe; NaN becomes None)."""
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}

    def summary(self) -> str:
        """One line: ``AUC 0.912 AP 0.701 F1@0.50 0.64 P@50 0.82``."""
        text = (
            f"AUC {self.roc_auc:.3f} AP {self.average_precision:.3f} "
            f"F1@{self.threshold:.2f} {self.f1:.3f} P@{self.top_k} {self.precision_at_k:.3f} "
            f"R@{self.top_k} {self.recall_at_k:.3f}"
        )
        if self.ece is not None:
            text += f" ECE {self.ece:.3f}"
        return text


def binary_report(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    threshold: float,
    top_k: int = 50,
    probabilities: bool = True,
    bins: int = 10,
) -> BinaryReport:
    """All metrics at once.

    Args:
        labels: (N,) 0/1.
        scores: (N,) scores; probabilities in [0, 1] when ``probabilities`` (then ECE is given).
        threshold: positive when ``score >= threshold`` for F1 / precision / recall.
        top_k: k for precision/recall at top-k.
        probabilities: whether ``scores`` are calibrated probabilities (adds ECE).
        bins: ECE bins.
    """
    y, s = _check(labels, scores)
    c = counts_at_threshold(y, s, threshold)
    pk, rk = precision_recall_at_k(y, s, top_k)
    return BinaryReport(
        n=int(y.size),
        positives=int(y.sum()),
        roc_auc=roc_auc(y, s),
        average_precision=average_precision(y, s),
        threshold=float(threshold),
        precision=c.precision,
        recall=c.recall,
        f1=c.f1,
        top_k=int(min(top_k, y.size)),
        precision_at_k=pk,
        recall_at_k=rk,
        ece=expected_calibration_error(y, s, bins) if probabilities else None,
    )
