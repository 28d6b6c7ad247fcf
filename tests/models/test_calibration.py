"""models.calibration: the split, sample-size errors, reliability intervals, a whole fit."""

from __future__ import annotations

import numpy as np
import pytest

from scipy.stats import binom

from models.calibration import (
    CalibratedPoint,
    check_sample,
    choose_operating_points,
    few_positives_screening,
    fit_calibration,
    fit_temperature,
    parent_threshold_on,
    recall_lower_bound,
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
    labels = np.r_[np.zeros(60, int), np.ones(2, int)]
    with pytest.raises(InputError, match=r"at least 3 damaged .* hold 2 .* label 1 more") as exc:
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


# ---- the few-positives screening rule ---------------------------------------------------------


def _rare_event(n_neg: int = 96, pos_logits=(0.8, 1.5, 2.0, 3.0), seed: int = 0):
    """~100 verified sites of a rare-damage event: 4 damaged, all scored fairly high."""
    rng = np.random.default_rng(seed)
    logits = np.r_[rng.normal(-2.0, 1.5, n_neg), np.asarray(pos_logits, float)]
    return np.r_[np.zeros(n_neg, int), np.ones(len(pos_logits), int)], logits


def test_recall_lower_bound_is_clopper_pearson():
    # every one of n flagged: (1 - c) ** (1 / n)
    assert recall_lower_bound(2, 2, 0.9) == pytest.approx(0.1 ** 0.5)
    assert recall_lower_bound(10, 10, 0.9) == pytest.approx(0.1 ** 0.1)
    assert recall_lower_bound(0, 10, 0.9) == 0.0
    # the defining property: at recall = the bound, seeing x or more of n has probability 1 - c
    for x, n in ((7, 10), (18, 20), (1, 3)):
        low = float(recall_lower_bound(x, n, 0.9))
        assert binom.sf(x - 1, n, low) == pytest.approx(0.1, abs=1e-9)
    lows = recall_lower_bound(np.arange(0, 11), 10, 0.9)
    assert (np.diff(lows) > 0).all()


def test_parent_threshold_maps_through_its_logit():
    assert parent_threshold_on(0.5, 1.0, 7.0) == pytest.approx(0.5)  # logit 0 on every scale
    t = parent_threshold_on(0.2, 1.0, 4.0)
    # the same logit: sigmoid(1.0 * logit(0.2) / 4.0)
    assert t == pytest.approx(1 / (1 + np.exp(-np.log(0.2 / 0.8) / 4.0)))
    assert 0.2 < t < 0.5  # a hotter temperature pulls a low threshold toward 0.5
    assert parent_threshold_on(0.0, 1.0, 3.0) == 0.0 and parent_threshold_on(1.0, 1.0, 3.0) == 1.0


def test_few_damaged_sites_never_make_screening_stricter_than_the_parent():
    labels, logits = _rare_event()
    policy = CalibrationConfig(bootstrap=0)
    loose = fit_calibration(labels, logits, policy, previous_temperature=1.0, parent_screening=0.1)
    rule = loose.screening_rule
    assert rule.positives == 2 < policy.trust_positives  # 4 damaged: 2 chose the operating points
    assert rule.rule == "held"
    parent = parent_threshold_on(0.1, 1.0, loose.temperature)
    assert loose.points["screening"].threshold == pytest.approx(parent) == pytest.approx(rule.parent_threshold)
    assert rule.fitted_threshold > parent
    # every site the parent flagged is still flagged: the held threshold is the same logit
    z = logits
    assert ((sigmoid(z / loose.temperature) >= loose.points["screening"].threshold) == (sigmoid(z) >= 0.1)).all()
    assert "held" in rule.text and "only 2 damaged sites" in rule.text and "trust_positives 10" in rule.text
    assert rule.recall == 1.0 and rule.recall_lower_bound == pytest.approx(0.1 ** 0.5)
    # evidence still flags a subset of screening
    assert loose.points["evidence"].threshold >= loose.points["screening"].threshold
    # a parent stricter than the fit: the fitted threshold is kept (it flags at least as much)
    strict = fit_calibration(labels, logits, policy, previous_temperature=1.0, parent_screening=0.9)
    assert strict.screening_rule.rule == "fitted, not stricter"
    assert strict.points["screening"].threshold == pytest.approx(strict.screening_rule.fitted_threshold)
    # no parent: fitted, and the record says it is poorly determined
    none = fit_calibration(labels, logits, policy, previous_temperature=1.0)
    assert none.screening_rule.rule == "fitted, no parent" and "poorly determined" in none.screening_rule.text
    # trust_positives 0: the old behaviour (always the fitted threshold)
    always = fit_calibration(labels, logits, CalibrationConfig(bootstrap=0, trust_positives=0), parent_screening=0.1)
    assert always.screening_rule.rule == "fitted"
    assert always.points["screening"].threshold == pytest.approx(always.screening_rule.fitted_threshold)
    assert always.points["screening"].threshold > parent


def test_enough_damaged_sites_may_tighten_screening():
    labels, logits = _event(n=600, seed=4)
    fit = fit_calibration(labels, logits, CalibrationConfig(bootstrap=0), parent_screening=0.01)
    rule = fit.screening_rule
    assert rule.positives >= 10 and rule.rule == "fitted"
    assert fit.points["screening"].threshold == pytest.approx(rule.fitted_threshold)
    assert fit.points["screening"].threshold > rule.parent_threshold
    assert "fitted for recall 0.9" in rule.text


def test_the_rule_on_the_points_half_with_no_damaged_site():
    y = np.zeros(50, int)
    p = np.linspace(0.01, 0.9, 50)
    fitted = CalibratedPoint("screening", 0.5, float("nan"), float("nan"), "recall>=0.9", False)
    point, rule = few_positives_screening(y, p, fitted, CalibrationConfig(), parent=0.3)
    assert rule.rule == "held" and point.threshold == 0.3 and rule.positives == 0
    assert "no damaged site" in rule.text


def test_clopper_pearson_screening_is_more_conservative():
    labels, logits = _event(n=1000, seed=6)
    probs = sigmoid(logits / 3.0)
    plain = choose_operating_points(labels, probs)["screening"]
    cp = choose_operating_points(labels, probs, recall_confidence=0.9)["screening"]
    assert cp.threshold <= plain.threshold and cp.recall >= plain.recall
    n_pos = int(labels.sum())
    assert recall_lower_bound(round(cp.recall * n_pos), n_pos, 0.9) >= 0.9
    # too few damaged sites to reach the bound at all: the lowest damaged score, target not met
    y = np.r_[np.zeros(40, int), np.ones(5, int)]
    p = np.r_[np.linspace(0.0, 0.3, 40), [0.35, 0.4, 0.45, 0.46, 0.48]]
    few = choose_operating_points(y, p, recall_confidence=0.9)["screening"]
    assert few.threshold == pytest.approx(0.35) and not few.met and few.recall == 1.0


def test_policy_rejects_bad_few_positives_settings():
    with pytest.raises(ValueError, match="trust_positives"):
        CalibrationConfig(trust_positives=-1)
    with pytest.raises(ValueError, match="screening_recall_confidence"):
        CalibrationConfig(screening_recall_confidence=1.0)


def test_fit_calibration_keeps_the_scores_temperature_when_the_sample_is_separated():
    # a small verified sample that the model ranks perfectly: no temperature can be fitted from
    # it, so the run keeps the temperature its scores carry instead of collapsing to ~0.018
    rng = np.random.default_rng(5)
    labels = np.r_[np.zeros(90, int), np.ones(10, int)]
    logits = np.r_[rng.uniform(-5.0, 0.0, 90), rng.uniform(0.5, 4.0, 10)]
    fit = fit_calibration(labels, logits, CalibrationConfig(bootstrap=20), previous_temperature=1.3)
    assert fit.temperature == pytest.approx(1.3)
