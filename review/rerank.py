"""Quick re-rank: refit a logistic score head on stored embeddings with the verdicts so far.

Never runs the CNN: ``sitewatch detect`` stored each assessable site's embedding in
``embeddings.npz``; this fits a correction to the run's own score,
``p = sigmoid(logit(score) + w . z(embedding) + b)``, with an L2 penalty on ``w``, on the reviewed
sites (L-BFGS, well under a second for thousands of sites), and scores every site with it, so the
unreviewed part of the queue can be re-ordered between batches of verdicts.

The run's score is an offset, not a free feature: verdicts come from a biased sample (the top of
the queue, or sites near the threshold), and a free coefficient on the score learnt from such a
sample can invert the ranking of everything else (measured on xBD Santa Rosa: AUC 0.04 after 50
verdicts from the uncertainty queue). With the offset, few or uninformative verdicts leave the
run's ranking as it was.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy.special import expit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rerank:
    """Re-ranked probabilities of every site with an embedding.

    Attributes:
        prob: site_id -> re-ranked probability of severe damage.
        labelled: sites the head was fitted on.
        positives: of which severe.
        train_accuracy: accuracy on the fitted sites (optimistic; for orientation only).
        based_on_verdict: id of the newest verdict used.
    """

    prob: Mapping[str, float]
    labelled: int
    positives: int
    train_accuracy: float
    based_on_verdict: int


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float, offset: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression, optionally around a fixed offset.

    Args:
        x: features of shape ``(N, D)`` float64 (standardised).
        y: labels of shape ``(N,)`` in {0, 1}.
        l2: penalty on the weights (not the bias).
        offset: ``(N,)`` logits added to ``x @ w + b`` (the prior), or None.

    Returns:
        ``(w (D,), b)``.
    """
    from scipy.optimize import minimize

    n, d = x.shape
    base = np.zeros(n) if offset is None else np.asarray(offset, dtype=np.float64)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        z = x @ w + b + base
        # log(1 + exp(z)) - y z, computed stably
        nll = np.sum(np.logaddexp(0.0, z) - y * z) / n + 0.5 * l2 * float(w @ w) / n
        p = expit(z)
        g = p - y
        grad_w = x.T @ g / n + l2 * w / n
        grad_b = g.sum() / n
        return float(nll), np.concatenate([grad_w, [grad_b]])

    res = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return res.x[:d], float(res.x[d])


def rerank(
    site_ids: Sequence[str],
    embeddings: np.ndarray,
    scores: np.ndarray,
    labels: Mapping[str, int],
    *,
    l2: float = 10.0,
    min_labels: int = 10,
    based_on_verdict: int = 0,
) -> Rerank | None:
    """Fit the head on the labelled sites and score all of them.

    Args:
        site_ids: ids of the rows of ``embeddings``.
        embeddings: ``(N, D)`` float array from ``embeddings.npz``.
        scores: ``(N,)`` the run's calibrated scores (the prior the head corrects; NaN -> 0.5).
        labels: site_id -> 1 (severe) / 0 (no damage) from the verdicts so far.
        l2: L2 penalty.
        min_labels: fewest labelled sites; each class needs at least two.
        based_on_verdict: recorded in the result.

    Returns:
        The re-rank, or None when there are too few labels of either class.
    """
    index = {s: i for i, s in enumerate(site_ids)}
    rows = [index[s] for s in labels if s in index]
    y = np.array([labels[site_ids[i]] for i in rows], dtype=np.float64)
    if len(rows) < min_labels or y.sum() < 2 or (len(y) - y.sum()) < 2:
        return None
    emb = np.asarray(embeddings, dtype=np.float64)
    mean = emb.mean(axis=0)
    std = emb.std(axis=0) + 1e-6
    prior = _logit(np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.5))
    x_all = (emb - mean) / std
    w, b = fit_logistic(x_all[rows], y, l2=l2, offset=prior[rows])
    prob = expit(x_all @ w + b + prior)
    acc = float(np.mean((prob[rows] >= 0.5) == (y == 1)))
    log.info("re-rank fitted on %d sites (%d severe), train accuracy %.3f", len(rows), int(y.sum()), acc)
    return Rerank(
        prob={s: float(p) for s, p in zip(site_ids, prob) if not math.isnan(p)},
        labelled=len(rows),
        positives=int(y.sum()),
        train_accuracy=acc,
        based_on_verdict=based_on_verdict,
    )
