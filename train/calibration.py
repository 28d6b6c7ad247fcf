"""Temperature scaling and operating points on held-out (calibration) data.

A model's raw logit ``z`` becomes the reported probability ``sigmoid(z / T)``. ``T`` is fitted
by minimising the negative log-likelihood on validation pairs the model was not trained on.
Operating points are thresholds on that calibrated probability chosen for a target recall
("screening": find most damaged sites) or a target precision ("evidence": flag only sites that
are very likely damaged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from scipy.optimize import minimize_scalar

from train.config import TrainConfig
from train.metrics import precision_recall_curve

log = logging.getLogger(__name__)

#: temperatures are searched in [exp(-4), exp(4)] ~ [0.018, 55]
_LOG_T_BOUNDS = (-4.0, 4.0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float64."""
    return expit(np.asarray(x, dtype=np.float64))


def binary_nll(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against 0/1 ``labels``."""
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    # log(1 + exp(-|z|)) + max(z, 0) - y z
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """The temperature ``T > 0`` minimising the NLL of ``sigmoid(logits / T)``.

    Args:
        labels: (N,) 0/1 labels of held-out pairs.
        logits: (N,) raw model logits for the same pairs.

    Returns:
        T (1.0 when there are too few pairs or only one class to fit on).
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    z = np.asarray(logits, dtype=np.float64).ravel()
    if y.size < 4 or y.min() == y.max():
        log.warning("calibration: %d pairs with one class only; keeping temperature 1.0", y.size)
        return 1.0
    res = minimize_scalar(lambda lt: binary_nll(y, z / np.exp(lt)), bounds=_LOG_T_BOUNDS, method="bounded")
    t = float(np.exp(res.x))
    return t


@dataclass(frozen=True)
class CalibratedPoint:
    """An operating point chosen on calibration data: a threshold on the calibrated probability,
    its target and what it achieved there. (Detect's ``detect.ranking.OperatingPoint`` is the
    threshold a run flags at; this is where such a threshold comes from.)"""

    name: str
    threshold: float
    precision: float
    recall: float
    target: str
    met: bool


def choose_operating_points(
    labels: np.ndarray,
    probs: np.ndarray,
    *,
    screening_recall: float = TrainConfig.screening_recall,
    evidence_precision: float = TrainConfig.evidence_precision,
    screening_max: float = TrainConfig.screening_max_threshold,
) -> dict[str, CalibratedPoint]:
    """Choose the "screening" and "evidence" thresholds on calibration data.

    * screening: the highest threshold whose recall reaches ``screening_recall`` (fewest
      false alarms for that recall), but never above ``screening_max`` (0.5 by default,
      ``train.screening_max_threshold``): a screening pass always flags a site the model
      thinks more likely damaged than not.
    * evidence: the lowest threshold whose precision reaches ``evidence_precision`` (most
      recall for that precision), but never below ``evidence_precision`` itself (on a
      calibrated score, p >= 0.9 means about 0.9 precision among the flagged) and never below
      the screening threshold. If no threshold reaches it, the threshold of the best precision
      is used and ``met`` is False.

    Why the two floors/caps: calibration data is often easier than the imagery the model meets
    later (the bundled model is calibrated on synthetic scenes it separates almost perfectly),
    so the edge of the admissible range sits deep inside the positives' scores. On such data
    both points would collapse onto one strict threshold (0.989 for the default model, which on
    real xBD imagery meant recall 0.61 for "screening"). The caps keep each point's meaning on
    the calibrated scale when the calibration data cannot pin it down.

    Args:
        labels: (N,) 0/1 labels.
        probs: (N,) calibrated probabilities.

    Returns:
        ``{"screening": CalibratedPoint, "evidence": CalibratedPoint}``.
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if y.size == 0 or y.sum() == 0:
        log.warning("operating points: no positive calibration pairs; using 0.5 for both")
        return {
            name: CalibratedPoint(name, 0.5, float("nan"), float("nan"), target, False)
            for name, target in (
                ("screening", f"recall>={screening_recall}"),
                ("evidence", f"precision>={evidence_precision}"),
            )
        }
    precision, recall, thresholds = precision_recall_curve(y, p)
    # thresholds descend, recall non-decreasing
    ok = np.nonzero(recall >= screening_recall)[0]
    i = int(ok[0]) if ok.size else len(thresholds) - 1
    screening = CalibratedPoint(
        "screening", float(thresholds[i]), float(precision[i]), float(recall[i]),
        f"recall>={screening_recall}", bool(ok.size),
    )
    if screening.threshold > screening_max:
        screening = _point_at("screening", y, p, screening_max, screening.target, lambda pr, rc: rc >= screening_recall)
    ok = np.nonzero(precision >= evidence_precision)[0]
    if ok.size:
        j = int(ok[-1])
        met = True
    else:
        j = int(np.argmax(precision))
        met = False
        log.warning(
            "operating points: no threshold reaches precision %.2f on calibration data (best %.2f); "
            "'evidence' uses the best-precision threshold", evidence_precision, precision[j],
        )
    evidence = CalibratedPoint(
        "evidence", float(thresholds[j]), float(precision[j]), float(recall[j]),
        f"precision>={evidence_precision}", met,
    )
    # never below its own precision target, never less strict than screening ("evidence"
    # flags a subset of the screening flags)
    floor = max(evidence_precision, screening.threshold)
    if evidence.threshold < floor:
        evidence = _point_at("evidence", y, p, floor, evidence.target, lambda pr, rc: pr >= evidence_precision)
    return {"screening": screening, "evidence": evidence}


def _point_at(name: str, y: np.ndarray, p: np.ndarray, threshold: float, target: str, meets) -> CalibratedPoint:
    """The operating point ``score >= threshold`` with its precision and recall on ``(y, p)``."""
    flagged = p >= threshold
    tp = int((flagged & (y == 1)).sum())
    precision = tp / max(int(flagged.sum()), 1) if flagged.any() else float("nan")
    recall = tp / max(int(y.sum()), 1)
    return CalibratedPoint(name, float(threshold), float(precision), float(recall), target, bool(meets(precision, recall)))
