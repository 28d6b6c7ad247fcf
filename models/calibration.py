"""Calibration maths in one place: temperature, operating points, reliability with intervals.

A model's raw logit ``z`` becomes the reported probability ``sigmoid(z / T)``. ``T`` is fitted by
minimising the negative log-likelihood on labelled pairs the model was not trained on (training:
the validation split; ``sitewatch calibrate``: a new event's verified sites). Operating points are
thresholds on that probability chosen for a target recall (``screening``: find most damaged sites)
or a target precision (``evidence``: flag only sites that are very likely damaged).

The policy (targets, minimum sample sizes, which labelled sites fit the temperature and which
choose the operating points and measure the reliability) is :class:`models.config.CalibrationConfig`.
Plain numpy and scipy; ``train`` and ``detect`` import this module, never the reverse.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from scipy.stats import beta

from models.config import CalibrationConfig
from sitewatch.errors import InputError

log = logging.getLogger(__name__)

#: temperatures are searched in [exp(-4), exp(4)] ~ [0.018, 55]
LOG_TEMPERATURE_BOUNDS = (-4.0, 4.0)


# ---- basic functions ------------------------------------------------------------------------


def check_binary(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(labels int64 (N,), scores float64 (N,))`` checked: same length, 0/1 labels, finite scores.

    Raises:
        ValueError: lengths differ, a label is not 0/1, or a score is NaN/infinite.
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    return y, s


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float64."""
    return expit(np.asarray(x, dtype=np.float64))


def binary_nll(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against 0/1 ``labels``."""
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    # log(1 + exp(-|z|)) + max(z, 0) - y z
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(labels: np.ndarray, logits: np.ndarray, *, fallback: float = 1.0) -> float:
    """The temperature ``T > 0`` minimising the NLL of ``sigmoid(logits / T)``.

    When every positive's logit is at least every negative's (the held-out pairs are perfectly
    separated, common on an easy synthetic validation split or a small verified sample), the NLL
    keeps falling as ``T -> 0``: the "fit" would be the search bound (~0.018) and would turn every
    later score into 0 or 1. No temperature can be fitted from such pairs, so ``fallback`` is kept
    (with a warning) instead.

    Args:
        labels: (N,) 0/1 labels of held-out pairs.
        logits: (N,) raw model logits for the same pairs.
        fallback: the temperature kept when none can be fitted (too few pairs, one class only,
            perfectly separated classes); e.g. the temperature the scores carry already.

    Returns:
        T, or ``fallback`` when it cannot be fitted.
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    z = np.asarray(logits, dtype=np.float64).ravel()
    if y.size < 4 or y.min() == y.max():
        log.warning("calibration: %d pairs with one class only; keeping temperature %.3g", y.size, fallback)
        return float(fallback)
    if z[y == 1].min() >= z[y == 0].max():
        log.warning(
            "calibration: the %d held-out pairs are perfectly separated by the model (every damaged "
            "logit >= every intact one), so no temperature can be fitted from them; keeping %.3g",
            y.size, fallback,
        )
        return float(fallback)
    res = minimize_scalar(lambda lt: binary_nll(y, z / np.exp(lt)), bounds=LOG_TEMPERATURE_BOUNDS, method="bounded")
    return float(np.exp(res.x))


def precision_recall_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score used as threshold (``score >= t``).

    Returns:
        ``(precision (T,), recall (T,), thresholds (T,))`` with thresholds descending, so recall
        is non-decreasing along the arrays.
    """
    y, s = check_binary(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(1 - y_sorted)
    # last index of each run of equal scores
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1] if s_sorted.size else np.array([], int)
    tp, fp = tp[distinct], fp[distinct]
    n_pos = max(int(y.sum()), 1)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / n_pos
    return precision, recall, s_sorted[distinct]


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width reliability bins over [0, 1].

    Returns:
        ``(mean_confidence (bins,), positive_rate (bins,), count (bins,))``; empty bins hold NaN.
    """
    y, p = check_binary(labels, probs)
    if (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must lie in [0, 1]")
    idx = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=p, minlength=bins) / count
        rate = np.bincount(idx, weights=y, minlength=bins) / count
    return conf, rate, count


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE: count-weighted mean of ``|positive rate - mean probability|`` over equal-width bins."""
    conf, rate, count = reliability_bins(labels, probs, bins)
    n = count.sum()
    if n == 0:
        return float("nan")
    used = count > 0
    return float(np.sum(count[used] * np.abs(rate[used] - conf[used])) / n)


# ---- operating points -----------------------------------------------------------------------


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
    screening_recall: float = CalibrationConfig.screening_recall,
    evidence_precision: float = CalibrationConfig.evidence_precision,
    screening_max: float = CalibrationConfig.screening_max_threshold,
    recall_confidence: float | None = CalibrationConfig.screening_recall_confidence,
) -> dict[str, CalibratedPoint]:
    """Choose the "screening" and "evidence" thresholds on calibration data.

    * screening: the highest threshold whose recall reaches ``screening_recall`` (fewest
      false alarms for that recall) -- with ``recall_confidence``, whose one-sided
      Clopper-Pearson lower bound on recall at that level reaches it (the lowest positive's
      score when no threshold does: ``met`` False) --, but never above ``screening_max`` (0.5 by default,
      ``calibration.screening_max_threshold``): a screening pass always flags a site the model
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
    if recall_confidence is None:
        ok = np.nonzero(recall >= screening_recall)[0]
        i = int(ok[0]) if ok.size else len(thresholds) - 1
    else:
        n_pos = int(y.sum())
        lower = recall_lower_bound(np.rint(recall * n_pos).astype(np.int64), n_pos, recall_confidence)
        ok = np.nonzero(lower >= screening_recall)[0]
        i = int(ok[0]) if ok.size else int(np.nonzero(recall >= 1.0)[0][0])
    screening = CalibratedPoint(
        "screening", float(thresholds[i]), float(precision[i]), float(recall[i]),
        f"recall>={screening_recall}", bool(ok.size),
    )
    if screening.threshold > screening_max:
        screening = point_at("screening", y, p, screening_max, screening.target, lambda pr, rc: rc >= screening_recall)
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
        evidence = point_at("evidence", y, p, floor, evidence.target, lambda pr, rc: pr >= evidence_precision)
    return {"screening": screening, "evidence": evidence}


def operating_points_for(labels: np.ndarray, probs: np.ndarray, policy: CalibrationConfig) -> dict[str, CalibratedPoint]:
    """:func:`choose_operating_points` with the targets of ``policy``."""
    return choose_operating_points(
        labels, probs, screening_recall=policy.screening_recall, evidence_precision=policy.evidence_precision,
        screening_max=policy.screening_max_threshold, recall_confidence=policy.screening_recall_confidence,
    )


def recall_lower_bound(flagged_positives: np.ndarray | int, positives: int, confidence: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower confidence bound on recall at level ``confidence``.

    ``flagged_positives`` of ``positives`` damaged sites flagged: the bound is the
    ``1 - confidence`` quantile of Beta(x, n - x + 1) (0 when x = 0). With every one flagged it is
    ``(1 - confidence) ** (1 / n)``: 0.32 for 2 of 2 at 0.9, 0.79 for 10 of 10.
    """
    x = np.asarray(flagged_positives, dtype=np.float64)
    n = float(positives)
    if n <= 0:
        return np.zeros_like(x)
    with np.errstate(invalid="ignore"):
        low = beta.ppf(1.0 - confidence, np.maximum(x, 1e-300), n - x + 1.0)
    return np.where(x > 0, low, 0.0)


@dataclass(frozen=True)
class ScreeningRule:
    """Which rule set the ``screening`` threshold of a fit (recorded in the run's manifest).

    Attributes:
        rule: ``"fitted"`` (enough damaged sites: the recall-based threshold), ``"held"`` (too few:
            the fitted threshold was stricter than the parent's, so the parent's is used),
            ``"fitted, not stricter"`` (too few, but the fitted threshold flags at least what the
            parent's did, so it is kept) or ``"fitted, no parent"`` (too few and no earlier
            screening threshold to hold at).
        positives: damaged sites in the operating-point part.
        trust_positives: the policy's ``calibration.trust_positives``.
        fitted_threshold: the recall-based threshold chosen on the operating-point part.
        parent_threshold: the parent's screening threshold on the new probability scale (None: none).
        parent_threshold_before: the same on the scale the scores carried before.
        recall: recall of the chosen threshold on the operating-point part (``flagged`` of ``positives``).
        recall_lower_bound: its one-sided Clopper-Pearson lower bound at ``confidence``.
        confidence: the level of that bound (``calibration.confidence``).
        text: one sentence for the CLI, the report and the review app.
    """

    rule: str
    positives: int
    trust_positives: int
    fitted_threshold: float
    parent_threshold: float | None
    parent_threshold_before: float | None
    recall: float
    recall_lower_bound: float
    confidence: float
    text: str


def parent_threshold_on(threshold: float, previous_temperature: float, temperature: float) -> float:
    """A threshold on ``sigmoid(z / previous_temperature)`` as the same logit on ``sigmoid(z / temperature)``."""
    if threshold <= 0.0 or threshold >= 1.0:
        return float(threshold)  # flags everything / nothing on any scale
    return float(sigmoid(previous_temperature * float(logit(float(threshold))) / temperature))


def few_positives_screening(
    labels: np.ndarray,
    probs: np.ndarray,
    fitted: CalibratedPoint,
    policy: CalibrationConfig,
    *,
    parent: float | None,
    parent_before: float | None = None,
) -> tuple[CalibratedPoint, ScreeningRule]:
    """Apply ``calibration.trust_positives`` to a fitted ``screening`` point.

    With fewer than ``trust_positives`` damaged sites among ``labels`` (the operating-point
    part), the recall-based threshold rests on the score of one or two damaged sites; it may not
    make screening stricter than the parent's threshold ``parent`` (already on the new scale):
    the threshold becomes ``min(fitted, parent)``, so calibrating on a small random sample of a
    rare-damage event never drops a site the run flagged before.

    Returns:
        The screening point to use (precision/recall on ``(labels, probs)``) and the rule record.
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    k = int(y.sum())
    point, rule = fitted, "fitted"
    if k < policy.trust_positives:
        if parent is None:
            rule = "fitted, no parent"
        elif fitted.threshold > parent:
            rule = "held"
            point = point_at("screening", y, p, parent, fitted.target, lambda pr, rc: rc >= policy.screening_recall)
        else:
            rule = "fitted, not stricter"
    flagged = int(((p >= point.threshold) & (y == 1)).sum())
    lower = float(recall_lower_bound(flagged, k, policy.confidence)) if k else float("nan")
    level = f"{100 * policy.confidence:.0f} %"
    evidence = (f"{flagged} of {k} damaged flagged there, one-sided {level} lower bound on recall {lower:.2f}"
                if k else "no damaged site there")
    few = (f"only {k} damaged site{'' if k == 1 else 's'} among the {y.size} that chose the operating points "
           f"(fewer than calibration.trust_positives {policy.trust_positives})")
    parent_text = ""
    if parent is not None:
        parent_text = f"p >= {parent:.4f}"
        if parent_before is not None and abs(parent_before - parent) > 5e-5:  # the scale changed
            parent_text += f" (p >= {parent_before:.4f} before)"
    text = {
        "fitted": f"screening p >= {point.threshold:.4f} fitted for recall {policy.screening_recall} on {k} damaged sites ({evidence})",
        "held": f"screening held at the run's previous threshold {parent_text}: {few}; the fitted p >= {fitted.threshold:.4f} would have been stricter ({evidence})",
        "fitted, not stricter": f"screening p >= {point.threshold:.4f} fitted on {few}; kept as it flags at least what the previous {parent_text} did ({evidence})",
        "fitted, no parent": f"screening p >= {point.threshold:.4f} fitted on {few}, with no previous screening threshold to hold at: poorly determined ({evidence})",
    }[rule]
    return point, ScreeningRule(
        rule=rule, positives=k, trust_positives=policy.trust_positives, fitted_threshold=float(fitted.threshold),
        parent_threshold=None if parent is None else float(parent),
        parent_threshold_before=None if parent_before is None else float(parent_before),
        recall=flagged / k if k else float("nan"), recall_lower_bound=lower, confidence=policy.confidence, text=text,
    )


def point_at(name: str, y: np.ndarray, p: np.ndarray, threshold: float, target: str,
             meets: Callable[[float, float], bool]) -> CalibratedPoint:
    """The operating point ``score >= threshold`` with its precision and recall on ``(y, p)``."""
    flagged = p >= threshold
    tp = int((flagged & (y == 1)).sum())
    precision = tp / max(int(flagged.sum()), 1) if flagged.any() else float("nan")
    recall = tp / max(int(y.sum()), 1)
    return CalibratedPoint(name, float(threshold), float(precision), float(recall), target, bool(meets(precision, recall)))


# ---- sample sizes and the split -------------------------------------------------------------


def check_sample(labels: np.ndarray, policy: CalibrationConfig, *, what: str = "labelled sites") -> None:
    """Raise :class:`InputError` when ``labels`` are too few for ``policy`` (says how many more).

    Raises:
        InputError: fewer than ``min_labels`` sites, ``min_positives`` positives or
            ``min_negatives`` negatives (``setting="calibration.min_..."``).
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    n, pos = int(y.size), int(y.sum())
    neg = n - pos
    for have, need, kind, setting in (
        (n, policy.min_labels, "labelled sites", "calibration.min_labels"),
        (pos, policy.min_positives, "damaged (major-damage/destroyed) sites", "calibration.min_positives"),
        (neg, policy.min_negatives, "intact (no-damage/minor-damage) sites", "calibration.min_negatives"),
    ):
        if have < need:
            raise InputError(
                f"{setting}: calibration needs at least {need} {kind} but the {what} hold {have} "
                f"({n} labelled, {pos} damaged, {neg} intact); label {need - have} more "
                f"(or lower {setting})",
                setting=setting,
            )


def split_for_calibration(labels: np.ndarray, share: float | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(fit_temperature, choose_points)``: a seeded split stratified by class.

    ``share`` of each class (at least one site of each class on each side when the class has
    two or more) fits the temperature; the rest chooses the operating points and measures the
    reliability. ``share=None``: both are every index.
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    everything = np.arange(y.size)
    if share is None:
        return everything, everything
    rng = np.random.default_rng(seed)
    fit, rest = [], []
    for cls in (0, 1):
        idx = everything[y == cls]
        idx = idx[rng.permutation(idx.size)]
        k = int(round(share * idx.size))
        if idx.size >= 2:
            k = min(max(k, 1), idx.size - 1)
        fit.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(rest))


# ---- reliability with confidence intervals --------------------------------------------------


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


@dataclass(frozen=True)
class Interval:
    """A figure and its bootstrap confidence interval (NaN where undefined)."""

    value: float
    low: float
    high: float

    def text(self, fmt: str = "{:.3f}") -> str:
        """``0.912 [0.871, 0.950]`` (``n/a`` for undefined parts)."""
        def f(v: float) -> str:
            return "n/a" if not math.isfinite(v) else fmt.format(v)

        return f"{f(self.value)} [{f(self.low)}, {f(self.high)}]"


@dataclass(frozen=True)
class ReliabilityBin:
    """One equal-width probability bin: ``[low, high)``; the positive rate with its interval."""

    low: float
    high: float
    count: int
    mean_probability: float
    positive_rate: Interval


@dataclass(frozen=True)
class PointFigures:
    """What an operating point achieves on a labelled sample (intervals by bootstrap)."""

    name: str
    threshold: float
    recall: Interval
    false_alarm_share: Interval
    precision: Interval
    flagged: int


@dataclass(frozen=True)
class ReliabilityReport:
    """How honest the probabilities are on a labelled sample.

    Attributes:
        n, positives: the sample.
        bins: the reliability table.
        ece: expected calibration error with its interval.
        nll: mean negative log-likelihood (no interval).
        brier: mean squared error of the probabilities.
        points: figures of each operating point on the sample.
        confidence: two-sided level of the intervals; ``bootstrap`` resamples drew them.
    """

    n: int
    positives: int
    bins: tuple[ReliabilityBin, ...]
    ece: Interval
    nll: float
    brier: float
    points: tuple[PointFigures, ...]
    confidence: float
    bootstrap: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (NaN becomes None)."""
        return _nan_to_none(asdict(self))

    def lines(self) -> list[str]:
        """The report as text lines (a table per bin, then ECE and the operating points)."""
        level = f"{100 * self.confidence:.0f} %"
        out = [
            f"{self.n} labelled sites ({self.positives} damaged); intervals: {level} bootstrap over sites ({self.bootstrap} resamples)",
            f"{'probability':>13} {'sites':>6} {'mean p':>7} {'damaged share [' + level + ' interval]':>34}",
        ]
        for b in self.bins:
            if b.count == 0:
                out.append(f"{b.low:5.2f}-{b.high:<7.2f} {0:>6} {'':>7} {'(no site)':>34}")
                continue
            out.append(f"{b.low:5.2f}-{b.high:<7.2f} {b.count:>6} {b.mean_probability:7.3f} {b.positive_rate.text():>34}")
        out.append(f"ECE {self.ece.text()}  NLL {self.nll:.3f}  Brier {self.brier:.3f}")
        for pt in self.points:
            out.append(
                f"{pt.name} (p >= {pt.threshold:.4f}): recall {pt.recall.text()}, intact flagged "
                f"{pt.false_alarm_share.text()}, precision {pt.precision.text()}, {pt.flagged} flagged"
            )
        return out


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size < 2:
        return float("nan"), float("nan")
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(v, [a, 1.0 - a])
    return float(lo), float(hi)


def reliability_report(
    labels: np.ndarray,
    probs: np.ndarray,
    *,
    thresholds: dict[str, float] | None = None,
    bins: int = CalibrationConfig.bins,
    bootstrap: int = CalibrationConfig.bootstrap,
    confidence: float = CalibrationConfig.confidence,
    seed: int = CalibrationConfig.seed,
) -> ReliabilityReport:
    """Reliability of calibrated probabilities with percentile-bootstrap intervals over sites.

    Args:
        labels: (N,) 0/1.
        probs: (N,) calibrated probabilities in [0, 1].
        thresholds: operating point name -> threshold; their recall, intact-flagged share and
            precision are reported too.
        bins: equal-width bins.
        bootstrap: resamples (0 = no intervals: NaN bounds).
        confidence: two-sided level.
        seed: seeds the resampling.
    """
    y, p = check_binary(labels, probs)
    n = int(y.size)
    conf, rate, count = reliability_bins(y, p, bins)
    idx_bin = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(bootstrap, n)) if (bootstrap and n) else np.zeros((0, n), np.int64)
    # per resample: counts and positives per bin
    boot_rate = np.full((draws.shape[0], bins), np.nan)
    boot_ece = np.full(draws.shape[0], np.nan)
    for r, d in enumerate(draws):
        cnt = np.bincount(idx_bin[d], minlength=bins)
        pos = np.bincount(idx_bin[d], weights=y[d], minlength=bins)
        psum = np.bincount(idx_bin[d], weights=p[d], minlength=bins)
        used = cnt > 0
        boot_rate[r, used] = pos[used] / cnt[used]
        boot_ece[r] = float(np.sum(np.abs(pos[used] - psum[used])) / n)
    table = []
    for b in range(bins):
        lo, hi = _interval(boot_rate[:, b], confidence) if count[b] else (float("nan"), float("nan"))
        table.append(ReliabilityBin(
            low=b / bins, high=(b + 1) / bins, count=int(count[b]), mean_probability=float(conf[b]),
            positive_rate=Interval(float(rate[b]), lo, hi),
        ))
    ece = expected_calibration_error(y, p, bins) if n else float("nan")
    eps = 1e-12
    nll = float(-np.mean(y * np.log(np.clip(p, eps, 1)) + (1 - y) * np.log(np.clip(1 - p, eps, 1)))) if n else float("nan")
    brier = float(np.mean((p - y) ** 2)) if n else float("nan")
    points = []
    for name, thr in (thresholds or {}).items():
        def figures(yy: np.ndarray, pp: np.ndarray) -> tuple[float, float, float]:
            f = pp >= thr
            npos, nneg, nf = int(yy.sum()), int((1 - yy).sum()), int(f.sum())
            tp = int((f & (yy == 1)).sum())
            return (tp / npos if npos else float("nan"), (nf - tp) / nneg if nneg else float("nan"),
                    tp / nf if nf else float("nan"))

        rec, fa, prec = figures(y, p)
        boot = np.array([figures(y[d], p[d]) for d in draws]) if len(draws) else np.zeros((0, 3))
        ivs = [Interval(v, *(_interval(boot[:, k], confidence) if len(boot) else (float("nan"), float("nan"))))
               for k, v in enumerate((rec, fa, prec))]
        points.append(PointFigures(name, float(thr), ivs[0], ivs[1], ivs[2], int((p >= thr).sum())))
    return ReliabilityReport(
        n=n, positives=int(y.sum()), bins=tuple(table), ece=Interval(ece, *_interval(boot_ece, confidence)),
        nll=nll, brier=brier, points=tuple(points), confidence=confidence, bootstrap=int(draws.shape[0]),
    )


# ---- a whole calibration --------------------------------------------------------------------


@dataclass(frozen=True)
class FittedCalibration:
    """A temperature and operating points fitted on labelled sites under a policy.

    Attributes:
        temperature: probability = ``sigmoid(logit / temperature)``.
        points: the ``screening`` and ``evidence`` operating points (chosen on ``points_index``).
        temperature_index: indices of the sites that fitted the temperature.
        points_index: indices of the sites that chose the operating points; the reliability is
            measured on them (the same as ``temperature_index`` when ``temperature_share`` is null).
        reliability: the reliability report on ``points_index`` with the fitted temperature.
        reliability_before: the same sites with the probabilities as they were before
            (``sigmoid(logit / previous_temperature)``).
        screening_rule: which rule set the ``screening`` threshold (:func:`few_positives_screening`).
        policy: the policy used.
    """

    temperature: float
    points: dict[str, CalibratedPoint]
    temperature_index: np.ndarray
    points_index: np.ndarray
    reliability: ReliabilityReport
    reliability_before: ReliabilityReport
    screening_rule: ScreeningRule
    policy: CalibrationConfig = field(default_factory=CalibrationConfig)

    @property
    def thresholds(self) -> dict[str, float]:
        """Operating point name -> threshold."""
        return {k: float(v.threshold) for k, v in self.points.items()}


def fit_calibration(
    labels: np.ndarray,
    logits: np.ndarray,
    policy: CalibrationConfig,
    *,
    previous_temperature: float = 1.0,
    previous_points: dict[str, float] | None = None,
    parent_screening: float | None = None,
    what: str = "labelled sites",
) -> FittedCalibration:
    """Fit a temperature on one part of the labelled sites and the operating points on the other.

    Args:
        labels: (N,) 0/1 labels.
        logits: (N,) raw logits of the same sites.
        policy: targets, sample sizes, the split, the intervals.
        previous_temperature: the temperature the scores carried before (for the "before" report).
        previous_points: the thresholds the scores were flagged at before (reported "before").
        parent_screening: the screening threshold the scores carried before, on the
            ``previous_temperature`` scale; with fewer than ``policy.trust_positives`` damaged
            sites in the operating-point part, screening is never stricter than it (mapped onto
            the new scale through its logit). None = nothing to hold at.
        what: how the sites are named in errors ("the labels file x.csv").

    Raises:
        InputError: too few labelled sites, positives or negatives for ``policy`` (or for its
            split: each part needs a positive and a negative).
    """
    y, z = check_binary(labels, logits)
    check_sample(y, policy, what=what)
    t_idx, p_idx = split_for_calibration(y, policy.temperature_share, policy.seed)
    temperature = fit_temperature(y[t_idx], z[t_idx], fallback=previous_temperature)
    probs = sigmoid(z / temperature)
    points = operating_points_for(y[p_idx], probs[p_idx], policy)
    parent = None if parent_screening is None else parent_threshold_on(parent_screening, previous_temperature, temperature)
    points["screening"], rule = few_positives_screening(
        y[p_idx], probs[p_idx], points["screening"], policy, parent=parent, parent_before=parent_screening,
    )
    rel = dict(bins=policy.bins, bootstrap=policy.bootstrap, confidence=policy.confidence, seed=policy.seed)
    after = reliability_report(y[p_idx], probs[p_idx], thresholds={k: v.threshold for k, v in points.items()}, **rel)
    before = reliability_report(y[p_idx], sigmoid(z[p_idx] / previous_temperature), thresholds=previous_points or {}, **rel)
    return FittedCalibration(
        temperature=temperature, points=points, temperature_index=t_idx, points_index=p_idx,
        reliability=after, reliability_before=before, screening_rule=rule, policy=policy,
    )
