"""Ranking scored sites and turning scores into flags at an operating point.

Order of ``scores.csv``: assessable sites by descending written score (ties by ``site_id``), each
with a 1-based ``rank``; then the ``cannot_assess`` sites by ``site_id``, without rank or score.
"""

from __future__ import annotations

import logging
import math
from typing import Iterable, Iterator, Mapping

from detect.runfolder import OperatingPoint  # the manifest's type, one class for both (re-exported)
from sitewatch.errors import ConfigError

log = logging.getLogger(__name__)

#: the probability used when a model carries no calibrated operating points (an untrained model).
FALLBACK_THRESHOLD = 0.5




def resolve_operating_point(spec: str, operating_points: Mapping[str, float]) -> OperatingPoint:
    """Pick the operating point named by ``spec`` from the model's calibration.

    Args:
        spec: a name from ``operating_points`` or a probability such as ``"0.7"``.
        operating_points: the model's ``meta.operating_points`` (name -> threshold).

    Raises:
        ConfigError: an unknown name (the message lists the valid ones) or a number outside
            [0, 1]; ``setting="detect.operating_point"``.
    """
    spec = spec.strip()
    if spec in operating_points:
        return OperatingPoint(spec, float(operating_points[spec]), "model calibration")
    try:
        value = float(spec)
    except ValueError:
        value = None
    if value is not None:
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise ConfigError(
                f"detect.operating_point: {spec!r}: a probability must be between 0 and 1",
                setting="detect.operating_point",
            )
        return OperatingPoint("custom", value, "given as a probability")
    if not operating_points:
        log.warning(
            "the model carries no calibrated operating points; flagging at score >= %.2f "
            "(train or calibrate a model to get 'screening' and 'evidence' thresholds)",
            FALLBACK_THRESHOLD,
        )
        return OperatingPoint(spec, FALLBACK_THRESHOLD, "fallback: the model has no calibrated operating points")
    names = ", ".join(sorted(operating_points))
    raise ConfigError(
        f"detect.operating_point: {spec!r}: the model has no operating point of that name; valid "
        f"names: {names}, or a probability between 0 and 1",
        setting="detect.operating_point",
    )


def _score_of(row: Mapping[str, str]) -> float | None:
    text = row.get("score", "")
    if row.get("status") != "ok" or text == "":
        return None
    return float(text)


def sort_key(row: Mapping[str, str]) -> tuple[int, float, str]:
    """The order of ``scores.csv``: assessed sites by written score descending, then ``site_id``;
    then the others by ``site_id``."""
    score = _score_of(row)
    if score is None:
        return (1, 0.0, row["site_id"])
    return (0, -score, row["site_id"])


def assign_ranks(ordered: Iterable[Mapping[str, str]], operating_point: OperatingPoint) -> Iterator[dict[str, str]]:
    """Fill ``rank`` and ``flagged`` of rows already in ``scores.csv`` order (streamed; the one
    ranking code, used by :func:`rank_rows` and by :func:`detect.run.rank_and_write`).

    Assessed rows get ranks 1, 2, ... and ``flagged = score >= threshold``; the others no score,
    no rank and ``flagged`` false.
    """
    rank = 0
    for row in ordered:
        row = dict(row)
        score = _score_of(row)
        if score is None:
            row["score"], row["rank"], row["flagged"] = "", "", "false"
        else:
            rank += 1
            row["rank"] = str(rank)
            row["flagged"] = "true" if score >= operating_point.threshold else "false"
        yield row


def rank_rows(
    rows: Iterable[Mapping[str, str]], operating_point: OperatingPoint
) -> list[dict[str, str]]:
    """Sort rows, fill ``rank`` and ``flagged`` (rows held in memory).

    Args:
        rows: one mapping per site with at least ``site_id``, ``status`` and ``score`` (the
            written score text; empty for ``cannot_assess``).
        operating_point: threshold for ``flagged``.

    Returns:
        New row dicts in output order.
    """
    return list(assign_ranks(sorted(rows, key=sort_key), operating_point))
