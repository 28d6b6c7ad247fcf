"""models.calibration: the split, sample-size errors, reliability intervals, a whole fit."""

from __future__ import annotations

import numpy as np
import pytest

from models.calibration import (
    check_sample,
    fit_calibration,
    fit_temperature,
    reliability_report,
    sigmoid,
    split_for_calibration,
)
from models.config import CalibrationConfig
from sitewatch.errors import InputError


def _event(n: int = 400, factor: float = 3.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(-1.5, 2.0, n)
    labels = (rng.random(n) < sigmoid(true_logit)).astype(int)
    return labels, true_logit * factor


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.r_[np.zeros(80, int), np.ones(20, int)]
    fit, rest = split_for_calibration(labels, 0.5, seed=3)
    assert set(fit).isdisjoint(rest) and len(fit) + len(rest) == 100
    assert labels[fit].sum() == 10 and labels[rest].sum() == 10
    again = split_for_calibration(labels, 0.5, seed=3)
    assert (again[0] == fit).all()
    both = split_for_calibration(labels, None, seed=3)
    assert (both[0] == np.arange(100)).all() and (both[1] == np.arange(100)).all()


def test_too_few_positives_says_how_many_are_needed():
    labels = np.r_[np.zeros(60, int), np.ones(3, int)]
    with pytest.raises(InputError, match=r"at least 8 damaged .* hold 3 .* label 5 more") as exc:
        check_sample(labels, CalibrationConfig(), what="the labels file x.csv")
    assert exc.value.setting == "calibration.min_positives"
    with pytest.raises(InputError, match="at least 30 labelled sites") as exc:
        check_sample(np.r_[np.zeros(10, int), np.ones(10, int)], CalibrationConfig())
    assert exc.value.setting == "calibration.min_labels"


def test_reliability_intervals_cover_the_truth_of_a_calibrated_model():
    rng = np.random.default_rng(1)
    probs = rng.uniform(0, 1, 3000)
    labels = (rng.random(3000) < probs).astype(int)
    rep = reliability_report(labels, probs, thresholds={"screening": 0.3}, bins=5, bootstrap=300, confidence=0.95)
    assert rep.n == 3000 and len(rep.bins) == 5
    covered = [b.positive_rate.low <= b.mean_probability <= b.positive_rate.high for b in rep.bins]
    assert sum(covered) >= 4  # 95 % intervals: at most one of five bins may miss
    for b in rep.bins:
        assert b.positive_rate.low <= b.positive_rate.value <= b.positive_rate.high
    assert rep.ece.value < 0.05 and rep.ece.low <= rep.ece.value <= rep.ece.high
    (pt,) = rep.points
    expected_recall = labels[probs >= 0.3].sum() / labels.sum()
    assert pt.recall.value == pytest.approx(expected_recall)
    assert pt.recall.low < pt.recall.value < pt.recall.high
    assert any("ECE" in line for line in rep.lines())


def test_intervals_widen_with_fewer_sites():
    rng = np.random.default_rng(2)
    probs = rng.uniform(0, 1, 2000)
    labels = (rng.random(2000) < probs).astype(int)
    big = reliability_report(labels, probs, bins=4, bootstrap=200)
    small = reliability_report(labels[:100], probs[:100], bins=4, bootstrap=200)
    width = lambda r: np.mean([b.positive_rate.high - b.positive_rate.low for b in r.bins])  # noqa: E731
    assert width(small) > 2 * width(big)


def test_fit_calibration_uses_separate_sites_and_recovers_the_temperature():
    labels, logits = _event(n=4000)
    fit = fit_calibration(labels, logits, CalibrationConfig(bootstrap=50), previous_temperature=1.0)
    assert set(fit.temperature_index).isdisjoint(fit.points_index)
    assert fit.temperature == pytest.approx(fit_temperature(labels[fit.temperature_index], logits[fit.temperature_index]))
    assert fit.temperature == pytest.approx(3.0, rel=0.2)
    assert fit.reliability.n == len(fit.points_index)
    # the recalibrated probabilities are more honest than the overconfident ones
    assert fit.reliability.ece.value < fit.reliability_before.ece.value / 2
    s = fit.points["screening"]
    assert s.recall >= 0.9 and s.threshold <= 0.5


def test_fit_calibration_policy_targets_come_from_config():
    labels, logits = _event(n=2000, seed=5)
    loose = fit_calibration(labels, logits, CalibrationConfig(screening_recall=0.6, bootstrap=0))
    strict = fit_calibration(labels, logits, CalibrationConfig(screening_recall=0.95, bootstrap=0))
    assert loose.points["screening"].threshold > strict.points["screening"].threshold
    assert strict.points["screening"].recall >= 0.95
