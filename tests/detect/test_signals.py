"""detect.signals: the scorer's signals as scores.csv cells and the reviewer-visible doubt."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from detect.config import DetectConfig
from detect.signals import doubts, signal_cells
from models.inference import ScoreBatch


def _batch(**signals):
    n = 3
    return ScoreBatch(prob=np.zeros(n), logit=np.zeros(n), heatmap=np.zeros((n, 4, 4), np.float32),
                      embedding=np.zeros((n, 2), np.float32), **signals)


def test_cells_and_doubt_follow_the_thresholds():
    cfg = DetectConfig(doubt_tta_spread=1.0, doubt_feature_distance=3.0, doubt_sharpness_ratio=2.0)
    b = _batch(tta_spread=np.array([0.2, 1.5, np.nan]), feature_distance=np.array([4.0, 1.0, 1.0]),
               sharpness_ratio=np.array([-2.5, 0.1, 2.5]))
    assert signal_cells(b, 0, cfg) == {"tta_spread": "0.2", "feature_distance": "4", "sharpness_ratio": "-2.5",
                                       "doubt": "feature_distance;sharpness_ratio"}
    assert signal_cells(b, 1, cfg)["doubt"] == "tta_spread"
    assert signal_cells(b, 2, cfg)["tta_spread"] == "" and signal_cells(b, 2, cfg)["doubt"] == "sharpness_ratio"
    never = dataclasses.replace(cfg, doubt_tta_spread=None, doubt_feature_distance=None, doubt_sharpness_ratio=None)
    assert signal_cells(b, 0, never)["doubt"] == ""


def test_signals_not_computed_give_empty_cells():
    cells = signal_cells(_batch(), 0, DetectConfig())
    assert cells == {"tta_spread": "", "feature_distance": "", "sharpness_ratio": "", "doubt": ""}
    assert doubts({}, DetectConfig()) == []


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="doubt_tta_spread"):
        DetectConfig(doubt_tta_spread=0)
    with pytest.raises(ValueError, match="adapt_pairs"):
        DetectConfig(adapt_pairs=1)
