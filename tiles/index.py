"""The columns that describe how a pair was made, shared by ``index.csv`` and ``scores.csv``."""

from __future__ import annotations

import math
from datetime import datetime

from tiles.types import Pair, PairMeta

__all__ = ["PAIR_META_COLUMNS", "pair_meta_row", "format_value"]

#: column order of :func:`pair_meta_row`.
PAIR_META_COLUMNS = (
    "status",
    "reason",
    "before_scene",
    "after_scene",
    "before_extra_scenes",
    "after_extra_scenes",
    "before_time",
    "after_time",
    "before_time_source",
    "after_time_source",
    "before_bands",
    "after_bands",
    "before_band_source",
    "after_band_source",
    "before_gsd_m",
    "after_gsd_m",
    "chip_gsd_m",
    "chip_size_m",
    "gsd_ratio",
    "gsd_mismatch",
    "shift_dy_px",
    "shift_dx_px",
    "shift_m",
    "shift_applied",
    "coreg_confidence",
    "normalisation",
    "valid_fraction",
    "cloud_fraction",
    "blank_fraction",
    "saturated_fraction",
    "incident_window",
    "before_gap_days",
    "after_gap_days",
    "before_platform",
    "after_platform",
    "before_stated_gsd_m",
    "after_stated_gsd_m",
    "before_off_nadir",
    "after_off_nadir",
    "before_cloud_cover",
    "after_cloud_cover",
    "before_credit",
    "after_credit",
    "detail",
)


def format_value(value: object) -> str:
    """A CSV cell: ISO 8601 times, 4 significant decimals, empty for None/NaN."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return f"{value:.4f}".rstrip("0").rstrip(".") if value != 0 else "0"
    return str(value)


def pair_meta_row(pair: Pair | PairMeta) -> dict[str, str]:
    """The pair's metadata as CSV cells, keyed by :data:`PAIR_META_COLUMNS` (no site columns)."""
    meta = pair.meta if isinstance(pair, Pair) else pair
    return {col: format_value(getattr(meta, col)) for col in PAIR_META_COLUMNS}
