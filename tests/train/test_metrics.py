from __future__ import annotations

import numpy as np
import pytest

from train.metrics import (
    average_precision,
    binary_report,
    counts_at_threshold,
    expected_calibration_error,
    precision_recall_at_k,
    reliability_bins,
    roc_auc,
)


def test_roc_auc_known_answer():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # ties count half
    assert roc_auc([0, 0, 1], [0.1, 0.2, 0.9]) == 1.0
    assert np.isnan(roc_auc([1, 1], [0.1, 0.2]))


def test_roc_auc_equals_pairwise_definition():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 1)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
    assert roc_auc(y, s) == pytest.approx(pairwise)


def test_average_precision_known_answer():
    # ranking: 1, 0, 1, 0 -> 0.5 * 1 + 0.5 * 2/3
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.5 + 1 / 3)
    assert average_precision([0, 1, 1], [0.0, 1.0, 0.9]) == pytest.approx(1.0)


def test_threshold_counts_and_top_k():
    c = counts_at_threshold([1, 1, 0, 0, 1], [0.9, 0.6, 0.7, 0.1, 0.2], 0.5)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 1)
    assert c.precision == pytest.approx(2 / 3) and c.recall == pytest.approx(2 / 3) and c.f1 == pytest.approx(2 / 3)
    assert precision_recall_at_k([1, 1, 0, 0, 1], [0.9, 0.6, 0.7, 0.1, 0.2], 2) == (0.5, pytest.approx(1 / 3))


def test_ece_known_answer():
    y = np.array([1, 0] * 50)
    p = np.full(100, 0.9)
    assert expected_calibration_error(y, p, 10) == pytest.approx(0.4)
    conf, rate, count = reliability_bins(y, p, 10)
    assert count[9] == 100 and rate[9] == pytest.approx(0.5) and np.isnan(conf[0])


def test_report_and_bad_input():
    rep = binary_report([0, 1, 1, 0], [0.2, 0.8, 0.6, 0.3], threshold=0.5, top_k=2)
    assert rep.roc_auc == 1.0 and rep.f1 == 1.0 and rep.precision_at_k == 1.0
    assert "AUC 1.000" in rep.summary()
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([0, 1], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.1, float("nan")])
