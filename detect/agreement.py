"""How well a ranking agrees with known labels: ROC AUC and precision at top-k.

Small so ``detect`` (the demo, realdata checks) does not import ``train`` (whose
``train.metrics.roc_auc`` is the same statistic with input validation).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import rankdata


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half).

    Args:
        labels: 0/1 per item, shape ``(N,)``.
        scores: higher = more likely positive, shape ``(N,)``.

    Returns:
        AUC in ``[0, 1]``, or NaN when only one class is present.
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks: ties count half
    rank_sum = ranks[y == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def precision_at_k(labels_in_rank_order: Sequence[int], k: int) -> float:
    """Fraction of positives among the first ``k`` items of a ranked list (NaN when empty)."""
    top = list(labels_in_rank_order)[:k]
    if not top:
        return float("nan")
    return float(sum(1 for v in top if v == 1) / len(top))
