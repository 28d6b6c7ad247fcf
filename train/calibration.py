"""Calibration for training: the maths lives in :mod:`models.calibration` (one place for
training, ``sitewatch calibrate`` and detect); this module keeps the names training code and
older callers import."""

from __future__ import annotations

from models.calibration import (
    CalibratedPoint,
    binary_nll,
    choose_operating_points,
    fit_temperature,
    operating_points_for,
    sigmoid,
)

__all__ = ["CalibratedPoint", "binary_nll", "choose_operating_points", "fit_temperature", "operating_points_for", "sigmoid"]
