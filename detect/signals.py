"""The scorer's "out of its depth" signals as ``scores.csv`` columns, and the ``doubt`` flag.

:class:`models.inference.Scorer` with ``signals=True`` returns, per pair, the logit spread over
the 8 flips/rotations, the embedding's distance from the training pairs (when the checkpoint
stores their statistics) and the sharpness ratio of the epochs. Detect writes them beside the
score and lists in ``doubt`` every signal above its ``detect.doubt_*`` threshold, for the
reviewer. Measured on the real sets, none separates the model's errors well enough to withhold a
score (README), so a doubt never turns a site into ``cannot_assess``.
"""

from __future__ import annotations

import math
from typing import Any

from detect.config import DetectConfig

#: the signal columns, in the order they are written
SIGNAL_COLUMNS = ("tta_spread", "feature_distance", "sharpness_ratio", "doubt")


def signal_values(result: Any, j: int) -> dict[str, float | None]:
    """``{signal: value or None}`` of pair ``j`` of a :class:`models.inference.ScoreBatch`."""
    out: dict[str, float | None] = {}
    for name in SIGNAL_COLUMNS[:-1]:
        arr = getattr(result, name, None)
        value = None if arr is None else float(arr[j])
        out[name] = value if value is not None and math.isfinite(value) else None
    return out


def doubts(values: dict[str, float | None], cfg: DetectConfig) -> list[str]:
    """The signals of one site above their thresholds (``detect.doubt_*``), in column order."""
    out = []
    for name, threshold, value in (
        ("tta_spread", cfg.doubt_tta_spread, values.get("tta_spread")),
        ("feature_distance", cfg.doubt_feature_distance, values.get("feature_distance")),
        ("sharpness_ratio", cfg.doubt_sharpness_ratio, None if values.get("sharpness_ratio") is None else abs(values["sharpness_ratio"])),  # type: ignore[arg-type]
    ):
        if threshold is not None and value is not None and value > threshold:
            out.append(name)
    return out


def signal_cells(result: Any, j: int, cfg: DetectConfig) -> dict[str, str]:
    """The ``scores.csv`` cells of pair ``j``: each signal (4 significant digits, "" when not
    computed) and ``doubt`` (``;``-joined names, "" when none)."""
    values = signal_values(result, j)
    cells = {k: ("" if v is None else f"{v:.4g}") for k, v in values.items()}
    cells["doubt"] = ";".join(doubts(values, cfg))
    return cells
