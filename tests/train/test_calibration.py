from __future__ import annotations

import numpy as np
import pytest

from train.calibration import binary_nll, choose_operating_points, fit_temperature, sigmoid
from train.metrics import expected_calibration_error


def _overconfident(n: int = 4000, factor: float = 4.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0.0, 1.5, n)
    labels = (rng.random(n) < sigmoid(true_logit)).astype(int)
    return labels, true_logit * factor  # a model whose logits are 4x too large


def test_temperature_recovers_known_overconfidence():
    labels, logits = _overconfident()
    t = fit_temperature(labels, logits)
    assert t == pytest.approx(4.0, rel=0.15)
    assert binary_nll(labels, logits / t) < binary_nll(labels, logits)


def test_calibration_reduces_ece():
    labels, logits = _overconfident()
    before = expected_calibration_error(labels, sigmoid(logits))
    after = expected_calibration_error(labels, sigmoid(logits / fit_temperature(labels, logits)))
    assert before > 0.08
    assert after < before / 2


def test_one_class_keeps_temperature_one():
    assert fit_temperature(np.zeros(10), np.linspace(-1, 1, 10)) == 1.0


def test_operating_points_meet_targets():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 2000)
    probs = np.clip(labels * 0.5 + rng.random(2000) * 0.6, 0, 1)
    points = choose_operating_points(labels, probs, screening_recall=0.9, evidence_precision=0.9)
    s, e = points["screening"], points["evidence"]
    assert s.met and s.recall >= 0.9 and e.met and e.precision >= 0.9
    assert e.threshold >= s.threshold
    # screening is the highest threshold that still reaches the recall
    above = probs >= s.threshold
    assert (labels[above] == 1).sum() / labels.sum() >= 0.9


def test_separable_calibration_data_keeps_the_two_points_apart():
    # Calibration data the model separates perfectly (as synthetic validation is): the
    # recall-0.9 edge lies deep inside the positives. Screening is capped at 0.5 and evidence
    # floored at its own precision target, so the two points keep their meaning.
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(300, int), np.ones(100, int)]
    probs = np.r_[rng.uniform(0.0, 0.05, 300), rng.uniform(0.985, 1.0, 100)]
    points = choose_operating_points(labels, probs, screening_recall=0.9, evidence_precision=0.9)
    s, e = points["screening"], points["evidence"]
    assert s.threshold == 0.5 and s.met and s.recall == 1.0
    assert e.threshold == 0.9 and e.met and e.precision == 1.0
    assert e.threshold > s.threshold


def test_caps_do_not_move_points_that_are_already_inside():
    # the plain rules' thresholds lie inside the bounds here (screening below 0.5, evidence
    # above 0.9): the chosen points must be exactly the plain rules' thresholds
    rng = np.random.default_rng(4)
    labels = np.r_[np.zeros(3000, int), np.zeros(300, int), np.ones(1000, int)]
    probs = np.r_[rng.uniform(0.0, 0.45, 3000), rng.uniform(0.85, 0.95, 300), rng.uniform(0.2, 1.0, 1000)]
    candidates = np.unique(probs)
    flagged = probs[None, :] >= candidates[:, None]  # (thresholds, pairs)
    tp = (flagged & (labels == 1)).sum(axis=1)
    recall, precision = tp / labels.sum(), tp / flagged.sum(axis=1)
    plain_screening = candidates[recall >= 0.9].max()
    plain_evidence = candidates[precision >= 0.9].min()
    assert plain_screening < 0.5 and plain_evidence > 0.9
    points = choose_operating_points(labels, probs, screening_recall=0.9, evidence_precision=0.9)
    assert points["screening"].threshold == plain_screening
    assert points["evidence"].threshold == plain_evidence
    assert points["screening"].met and points["evidence"].met and points["evidence"].precision >= 0.9


def test_screening_cap_comes_from_the_setting():
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(300, int), np.ones(100, int)]
    probs = np.r_[rng.uniform(0.0, 0.05, 300), rng.uniform(0.985, 1.0, 100)]
    assert choose_operating_points(labels, probs, screening_max=0.4)["screening"].threshold == 0.4


def test_undefined_metrics_print_as_na():
    from train.trainer import EpochSummary, format_metric

    assert format_metric(None) == "n/a" and format_metric(float("nan")) == "n/a"
    assert format_metric(0.93125) == "0.9313"
    line = EpochSummary(epoch=1, train_loss=0.5, val_loss=0.4, val_auc=None, val_ap=None, lr=1e-3,
                        seconds=2.0, pairs_per_s=10.0, best=True).line(3)
    assert "AUC n/a AP n/a" in line


def test_perfectly_separated_pairs_keep_the_fallback_temperature(caplog):
    # every damaged logit above every intact one: the NLL keeps falling as T -> 0, so a "fit"
    # would return the search bound (~0.018) and saturate every later probability to 0 or 1
    labels = np.r_[np.zeros(50), np.ones(10)]
    logits = np.r_[np.linspace(-6.0, 0.5, 50), np.linspace(0.5, 4.0, 10)]
    with caplog.at_level("WARNING"):
        assert fit_temperature(labels, logits) == 1.0
        assert fit_temperature(labels, logits, fallback=1.7) == 1.7
    assert "perfectly separated" in caplog.text
    # one intact pair above one damaged pair: fitted again, and inside the search bounds
    logits[0] = 1.0
    t = fit_temperature(labels, logits)
    assert 0.05 < t < 20.0
