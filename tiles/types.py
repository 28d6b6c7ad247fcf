"""Values that travel between stages: a site, and a before/after pair with its metadata.

Contract (DESIGN.md): a pair's ``image`` is shaped ``(2, C, H, W)`` (time first: before, after),
float32 in ``[0, 1]``, on one grid centred on the site; ``valid`` is ``(2, H, W)`` bool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Mapping

import numpy as np

from tiles.incident import IncidentWindow

Status = Literal["ok", "cannot_assess"]

#: xBD joint damage scale; positives for "likely destroyed" are major-damage and destroyed.
DAMAGE_CLASSES = ("no-damage", "minor-damage", "major-damage", "destroyed", "un-classified")
POSITIVE_DAMAGE = frozenset({"major-damage", "destroyed"})
NEGATIVE_DAMAGE = frozenset({"no-damage"})


def damage_to_label(damage: str | None) -> int | None:
    """1 for major-damage/destroyed, 0 for no-damage, None for anything else (left out)."""
    if damage in POSITIVE_DAMAGE:
        return 1
    if damage in NEGATIVE_DAMAGE:
        return 0
    return None


@dataclass(frozen=True, slots=True)
class Site:
    """One site from the input list.

    Attributes:
        site_id: unique id from the input.
        lon, lat: WGS84 degrees (NaN when the row was invalid; see ``problem``).
        row: 1-based data row in the source file (header excluded), or feature index + 1.
        name, kind: optional descriptive fields.
        radius_m: optional radius of the facility in metres (widens the chip).
        footprint: optional GeoJSON geometry (WGS84) of the facility's footprint.
        damage: optional xBD damage label for labelled datasets.
        extra: the input's other columns, passed through to outputs unchanged.
        problem: why this row cannot be used (e.g. ``"lat 123.4 out of range [-90, 90]"``), or
            None. Rows with a problem flow through the batch as ``cannot_assess``.
        incident: the site's own incident window (``incident_start`` / ``incident_end``), or
            None (the run's ``tiles.incident_window`` applies, if set). The two cells also stay
            in ``extra`` so they travel to the outputs as given.
    """

    site_id: str
    lon: float
    lat: float
    row: int = 0
    name: str | None = None
    kind: str | None = None
    radius_m: float | None = None
    footprint: Mapping[str, Any] | None = None
    damage: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    problem: str | None = None
    incident: IncidentWindow | None = None


@dataclass(frozen=True)
class PairMeta:
    """Everything known about how a pair was made; one row of ``index.csv``.

    Shift is in chip pixels ``(dy, dx)`` of after relative to before (positive = after content
    sits lower/right), plus its size in metres. ``before_scene``/``after_scene`` is the primary
    scene of each epoch; ``before_extra_scenes``/``after_extra_scenes`` list (``;``-separated)
    the scenes that filled the primary's holes when a chip straddles scene edges.
    ``gsd_ratio`` is the coarser primary scene's native GSD over the finer one's (1 = same
    resolution; NaN when nothing was read) and ``gsd_mismatch`` says it exceeds
    ``tiles.gsd_mismatch_ratio``. ``before_bands``/``after_bands`` are the 1-based band indices
    of the primary scene read as the chip's channels (``"3,2,1"`` for a BGRN raster) and
    ``*_band_source`` says how they were found (``tiles.bands.BAND_SOURCES``).
    ``incident_window`` is the window the scenes were chosen for (``START/END``, empty when
    none applies) and ``before_gap_days``/``after_gap_days`` how far each primary scene lies
    from it. ``*_platform``, ``*_stated_gsd_m``, ``*_off_nadir`` (degrees), ``*_cloud_cover``
    (percent) and ``*_credit`` (licence and providers) come from a STAC catalogue's items (empty
    for plain files).
    """

    site_id: str
    status: Status
    reason: str = ""
    before_scene: str = ""
    after_scene: str = ""
    before_time: datetime | None = None
    after_time: datetime | None = None
    before_time_source: str = "unknown"
    after_time_source: str = "unknown"
    before_gsd_m: float = float("nan")
    after_gsd_m: float = float("nan")
    chip_gsd_m: float = float("nan")
    chip_size_m: float = float("nan")
    gsd_ratio: float = float("nan")
    gsd_mismatch: bool = False
    shift_dy_px: float = 0.0
    shift_dx_px: float = 0.0
    shift_m: float = 0.0
    shift_applied: bool = False
    coreg_confidence: float = float("nan")
    normalisation: str = "none"
    valid_fraction: float = 0.0
    cloud_fraction: float = 0.0
    blank_fraction: float = 0.0
    saturated_fraction: float = 0.0
    detail: str = ""
    before_extra_scenes: str = ""
    after_extra_scenes: str = ""
    before_bands: str = ""
    after_bands: str = ""
    before_band_source: str = ""
    after_band_source: str = ""
    incident_window: str = ""
    before_gap_days: float = float("nan")
    after_gap_days: float = float("nan")
    before_platform: str = ""
    after_platform: str = ""
    before_stated_gsd_m: float = float("nan")
    after_stated_gsd_m: float = float("nan")
    before_off_nadir: float = float("nan")
    after_off_nadir: float = float("nan")
    before_cloud_cover: float = float("nan")
    after_cloud_cover: float = float("nan")
    before_credit: str = ""
    after_credit: str = ""


@dataclass(frozen=True)
class Pair:
    """A before/after pair around one site.

    Attributes:
        site: the input site.
        meta: how it was made and whether it can be assessed.
        image: float32 array of shape ``(2, C, H, W)`` in ``[0, 1]`` (before, after), or None when
            nothing could be read (e.g. outside coverage).
        valid: bool array of shape ``(2, H, W)``; False where an epoch has no data.
    """

    site: Site
    meta: PairMeta
    image: np.ndarray | None = None
    valid: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return self.meta.status == "ok"

    @classmethod
    def cannot_assess(
        cls,
        site: Site,
        reason: str,
        detail: str = "",
        *,
        image: np.ndarray | None = None,
        valid: np.ndarray | None = None,
        **meta_fields: Any,
    ) -> "Pair":
        """The one way to make a ``cannot_assess`` pair.

        Args:
            site: the input site.
            reason: why the pair cannot be assessed (one of ``tiles.cut.REASONS``, or a reason
                of the calling stage such as detect's ``cut_failed``); must not be empty.
            detail: a sentence for people (what was found, what to do).
            image, valid: the chips when something could be read (so people can look), else
                None.
            **meta_fields: any other :class:`PairMeta` field (scenes, times, GSD, quality).

        Raises:
            ValueError: ``reason`` is empty.
            TypeError: ``meta_fields`` names a field PairMeta does not have.
        """
        if not reason:
            raise ValueError("a cannot_assess pair needs a reason")
        meta = PairMeta(site_id=site.site_id, status="cannot_assess", reason=reason, detail=detail, **meta_fields)
        return cls(site=site, meta=meta, image=image, valid=valid)
