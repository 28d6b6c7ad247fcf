"""Cautions: an assessed pair outside the model's training envelope, said visibly, never silently.

A caution is a list of reasons written into ``scores.csv``'s ``caution`` column (``;``-separated),
counted in ``report.html`` and shown on the review app's site page. It never changes a score, a
rank or a flag: the model still scored the pair, and people decide how far to trust it. (Pairs
that cannot be scored at all are ``cannot_assess`` with a reason instead, from the tiles stage.)

Reasons (thresholds in ``configs/detect.yaml``, the envelope from the checkpoint,
:func:`models.checkpoint.training_envelope`):

* ``gsd_outside_training:<GSD>m``: an epoch's native resolution (the STAC item's stated GSD,
  else the raster's own) is coarser than the envelope's coarsest times
  ``detect.caution_gsd_factor``, or finer than its finest over it; ``<GSD>`` is the epoch
  furthest out (e.g. ``gsd_outside_training:1.1m``).
* ``off_nadir_difference:<D>deg``: the epochs' off-nadir angles (STAC ``view:off_nadir``) differ
  by more than the envelope's largest difference plus ``detect.caution_off_nadir_margin_deg``
  (e.g. ``off_nadir_difference:28deg``; buildings lean differently, which the model can read as
  change). Plain GeoTIFFs carry no angle, so this is only checked for STAC inputs.

A bound the envelope does not know (a model trained only on real folders) raises no caution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from models.envelope import TrainingEnvelope

#: the ``scores.csv`` column (:mod:`detect.runfolder`) and its separator
SEPARATOR = ";"
#: reason names, in the order they are listed
REASONS = ("gsd_outside_training", "off_nadir_difference")


@dataclass(frozen=True)
class CautionPolicy:
    """When a caution is raised (``detect.caution_*``; None turns a rule off).

    Attributes:
        gsd_factor: tolerance factor around the envelope's native GSD range.
        off_nadir_margin_deg: degrees beyond the envelope's largest off-nadir difference.
    """

    gsd_factor: float | None = 1.5
    off_nadir_margin_deg: float | None = 5.0

    @classmethod
    def from_config(cls, detect: object) -> "CautionPolicy":
        """The policy of a :class:`detect.config.DetectConfig`."""
        return cls(gsd_factor=getattr(detect, "caution_gsd_factor"), off_nadir_margin_deg=getattr(detect, "caution_off_nadir_margin_deg"))


def _number(text: str | None) -> float:
    try:
        value = float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def epoch_gsd_m(cells: Mapping[str, str], epoch: str) -> float:
    """An epoch's native GSD from a ``scores.csv`` row: STAC's stated GSD, else the raster's (NaN if neither)."""
    stated = _number(cells.get(f"{epoch}_stated_gsd_m"))
    return stated if math.isfinite(stated) and stated > 0 else _number(cells.get(f"{epoch}_gsd_m"))


def caution_reasons(cells: Mapping[str, str], envelope: TrainingEnvelope, policy: CautionPolicy) -> list[str]:
    """The caution reasons of one assessed pair.

    Args:
        cells: the site's ``scores.csv`` row as text (its pair columns: ``before_gsd_m``,
            ``after_stated_gsd_m``, ``before_off_nadir``, ...).
        envelope: the model's training envelope.
        policy: the thresholds.

    Returns:
        Reasons like ``gsd_outside_training:1.8m`` in :data:`REASONS` order; empty when none.
    """
    out: list[str] = []
    if policy.gsd_factor is not None and envelope.gsd_max_m is not None:
        hi = envelope.gsd_max_m * policy.gsd_factor
        lo = (envelope.gsd_min_m if envelope.gsd_min_m is not None else envelope.gsd_max_m) / policy.gsd_factor
        worst, how_far = math.nan, 1.0
        for epoch in ("before", "after"):
            g = epoch_gsd_m(cells, epoch)
            if not (math.isfinite(g) and g > 0):
                continue
            ratio = g / hi if g > hi else (lo / g if g < lo else 1.0)
            if ratio > how_far:
                worst, how_far = g, ratio
        if math.isfinite(worst):
            out.append(f"gsd_outside_training:{worst:.3g}m")
    if policy.off_nadir_margin_deg is not None and envelope.off_nadir_difference_max_deg is not None:
        b, a = _number(cells.get("before_off_nadir")), _number(cells.get("after_off_nadir"))
        if math.isfinite(b) and math.isfinite(a):
            diff = abs(a - b)
            if diff > envelope.off_nadir_difference_max_deg + policy.off_nadir_margin_deg:
                out.append(f"off_nadir_difference:{diff:.0f}deg")
    return out


def caution_text(reasons: list[str]) -> str:
    """The ``caution`` cell: reasons joined by ``;`` (empty when none)."""
    return SEPARATOR.join(reasons)


def split_caution(text: str | None) -> list[str]:
    """The reasons of a ``caution`` cell (empty list for an empty cell or an older run without it)."""
    return [r for r in (text or "").split(SEPARATOR) if r]


def reason_name(reason: str) -> str:
    """``gsd_outside_training:1.8m`` -> ``gsd_outside_training``."""
    return reason.split(":", 1)[0]


class Cautions:
    """The cautions of a run: the model's envelope and the run's policy, applied row by row.

    Args:
        meta: the model's :class:`models.checkpoint.CheckpointMeta`.
        detect: the run's :class:`detect.config.DetectConfig` (``caution_*`` settings).
    """

    def __init__(self, meta: object, detect: object) -> None:
        from models.checkpoint import training_envelope

        self.envelope = training_envelope(meta)  # type: ignore[arg-type]
        self.policy = CautionPolicy.from_config(detect)

    def of(self, row: Mapping[str, str]) -> str:
        """The ``caution`` cell of a ranked ``scores.csv`` row ("" unless assessed)."""
        if row.get("status") != "ok":
            return ""
        return caution_text(caution_reasons(row, self.envelope, self.policy))
