"""Settings of the tiles stage (defaults live here and nowhere else)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from sitewatch.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from tiles.incident import IncidentWindow


def _invalid(name: str, text: str) -> ConfigError:
    """An error about ``tiles.<name>`` that names the dotted setting (COMMON.md)."""
    return ConfigError(f"tiles.{name}: {text}", setting=f"tiles.{name}")


def _default_kind_radius() -> dict[str, float]:
    return {"hospital": 100.0, "school": 60.0, "market": 50.0}


@dataclass(frozen=True)
class PartsConfig:
    """How a facility is split into parts at the model's own scale, and its context ring.

    Used by :mod:`tiles.parts` (pure geometry) when ``detect.parts`` / ``detect.context`` are on.
    A site is larger than one chip when its footprint, its ``radius_m`` or the default radius of
    its ``kind`` spans more than ``tiles.chip_size_m``.

    Attributes:
        overlap: share of a chip's side that two neighbouring parts have in common (0 = edge
            to edge); the grid stride is ``chip_size_m * (1 - overlap)``.
        max_parts: at most this many parts per site. When the grid at the nominal stride has
            more, the stride is widened in 10 % steps until it fits (recorded as
            ``parts_stride_m`` in the run; past ``chip_size_m`` the parts leave gaps).
        kind_radius_m: radius in metres assumed for a site of this ``kind`` (matched without
            case) that has neither a footprint nor a ``radius_m``.
        clip_to_footprint: keep only the parts whose window meets the footprint polygon.
        context_inner_m: the context ring starts this far beyond the site's edge (the half
            extent of its footprint or radius; half a chip for a point site), in metres.
        context_outer_m: ... and ends this far beyond it (chip centres lie between the two).
        context_count: chips sampled on the ring (evenly spread in angle and distance).
    """

    overlap: float = 0.25
    max_parts: int = 25
    kind_radius_m: dict[str, float] = field(default_factory=_default_kind_radius)
    clip_to_footprint: bool = True
    context_inner_m: float = 100.0
    context_outer_m: float = 300.0
    context_count: int = 12

    def __post_init__(self) -> None:
        def bad(name: str, text: str) -> ConfigError:
            return ConfigError(f"tiles.parts.{name}: {text}", setting=f"tiles.parts.{name}")

        if not 0.0 <= self.overlap < 0.9:
            raise bad("overlap", f"must be in [0, 0.9) (share of a chip side), got {self.overlap:g}")
        if not 1 <= self.max_parts <= 400:
            raise bad("max_parts", f"must be between 1 and 400, got {self.max_parts}")
        for kind, radius in self.kind_radius_m.items():
            if not (math.isfinite(radius) and radius > 0):
                raise bad(f"kind_radius_m.{kind}", f"must be a positive number of metres, got {radius}")
        if not (math.isfinite(self.context_inner_m) and self.context_inner_m >= 0):
            raise bad("context_inner_m", f"must be 0 or more (metres), got {self.context_inner_m:g}")
        if not (math.isfinite(self.context_outer_m) and self.context_outer_m >= self.context_inner_m):
            raise bad(
                "context_outer_m",
                f"{self.context_outer_m:g} must be at least tiles.parts.context_inner_m ({self.context_inner_m:g})",
            )
        if not 1 <= self.context_count <= 64:
            raise bad("context_count", f"must be between 1 and 64, got {self.context_count}")

    def radius_for_kind(self, kind: str | None) -> float | None:
        """The default radius of a site kind, or None (kind unknown or not given)."""
        if not kind:
            return None
        wanted = kind.strip().lower()
        for name, radius in self.kind_radius_m.items():
            if name.strip().lower() == wanted:
                return float(radius)
        return None


@dataclass(frozen=True)
class TilesConfig:
    """How a before/after pair is cut around each site.

    Attributes:
        chip_size_m: side of the square window on the ground, in metres, for a point site.
        chip_px: side of the resampled chip in pixels (the model's input size).
        radius_scale: a site with ``radius_m`` (or a footprint) gets a window of at least
            ``2 * radius_m * radius_scale`` metres, so the building fills the chip with context.
        max_chip_size_m: upper bound on the window side for large sites.
        bands: 1-based band indices read as the chip's channels (R, G, B by default) from
            rasters whose colour interpretation does not say where R, G and B are (see
            ``colour_interpretation``).
        colour_interpretation: with three ``bands``, take R, G and B from a raster's GDAL colour
            interpretation, else from its band descriptions (``Red``, ``Green``, ``Blue``), when
            they name each exactly once (BGRN deliveries); off: ``bands`` for every raster.
        resampling: resampling of native windows onto the chip grid.
        coregister: estimate the residual shift of after against before.
        max_shift_m: a shift larger than this is not applied (recorded, and the pair may be
            flagged ``misregistered``).
        min_coreg_confidence: minimum phase-correlation confidence to apply a shift.
        normalisation: how after is made radiometrically comparable to before.
        black_border_nodata: in rasters without a nodata value or mask, pixels that are exactly
            0 in every band and connected to the scene edge (black collars) are nodata.
        max_native_gsd_ratio: a pair whose native GSD (either epoch) is coarser than this
            multiple of the chip GSD is ``cannot_assess`` / ``too_coarse``; finer scenes are
            preferred whenever one covers the site.
        gsd_mismatch_ratio: native GSDs of the two epochs that differ by more than this factor
            are flagged (``gsd_mismatch``) in the pair's metadata.
        min_valid_fraction: below this fraction of valid pixels in either epoch the pair is
            ``cannot_assess`` (``mostly_nodata`` or ``outside_*_coverage``).
        max_cloud_fraction: above this fraction of pixels cloud-like in one epoch only (a
            bright flat roof is in both): ``cloud``.
        max_blank_fraction: above this blank/saturated fraction: ``blank``.
        blank_level: a pixel whose every band is at most this (in [0, 1]) is blank (black).
        saturated_level: a pixel whose every band is at least this is saturated.
        cloud_min_brightness: cloud-like pixels have a band mean of at least this ...
        cloud_max_band_range: ... a band range (max - min) of at most this (nearly grey) ...
        cloud_max_texture: ... and a standard deviation of the band mean over
            ``cloud_texture_px`` x ``cloud_texture_px`` pixels of at most this (smooth).
        cloud_texture_px: side of that window, in chip pixels.
        misregistered_confidence: a confident shift larger than ``max_shift_m`` means the
            epochs do not line up: ``misregistered``.
        max_scenes_tried: per epoch, how many covering scenes are read at most (best first).
        mosaic: fill the best scene's invalid chip pixels (scene edge, nodata) from the next
            covering scenes of the same epoch; off: use the single scene with most valid pixels.
        max_open_files: datasets kept open per process (least recently used are closed).
        batch_size: sites whose coordinates are transformed together in one call.
        incident_window: the run's default incident window ``START/END`` (ISO dates, UTC;
            ``--incident-window``) for sites without their own ``incident_start`` /
            ``incident_end``: the before scene must be acquired before it starts, the after
            scene after it ends (:mod:`tiles.incident`); None: no window, the latest before and
            earliest after scene are preferred as always.
        max_incident_gap_days: with a window, a scene farther than this many days from it is
            not used (``no_timely_before`` / ``no_timely_after``); None: any distance.
        parts: how facilities are split into parts and where their context ring lies
            (:class:`PartsConfig`; only used when ``detect.parts`` / ``detect.context`` are on).
    """

    chip_size_m: float = 64.0
    chip_px: int = 128
    radius_scale: float = 2.0
    max_chip_size_m: float = 512.0
    bands: tuple[int, ...] = (1, 2, 3)
    colour_interpretation: bool = True
    resampling: Literal["bilinear", "nearest", "cubic"] = "bilinear"
    coregister: bool = True
    max_shift_m: float = 6.0
    min_coreg_confidence: float = 0.15
    normalisation: Literal["histogram", "standardise", "none"] = "histogram"
    black_border_nodata: bool = True
    max_native_gsd_ratio: float = 2.5
    gsd_mismatch_ratio: float = 2.0
    min_valid_fraction: float = 0.6
    max_cloud_fraction: float = 0.5
    max_blank_fraction: float = 0.6
    blank_level: float = 0.02
    saturated_level: float = 0.98
    cloud_min_brightness: float = 0.75
    cloud_max_band_range: float = 0.12
    cloud_max_texture: float = 0.04
    cloud_texture_px: int = 5
    misregistered_confidence: float = 0.8
    max_scenes_tried: int = 3
    mosaic: bool = True
    max_open_files: int = 32
    batch_size: int = 256
    incident_window: str | None = None
    max_incident_gap_days: float | None = None
    parts: PartsConfig = field(default_factory=PartsConfig)

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise _invalid(name, f"must be a finite number, got {value}")
        if self.chip_size_m <= 0:
            raise _invalid("chip_size_m", f"must be positive (metres), got {self.chip_size_m:g}")
        if self.chip_px < 16:
            raise _invalid("chip_px", f"must be at least 16, got {self.chip_px}")
        if self.max_chip_size_m < self.chip_size_m:
            raise _invalid(
                "max_chip_size_m", f"{self.max_chip_size_m:g} must be at least tiles.chip_size_m ({self.chip_size_m:g})"
            )
        for name in ("max_scenes_tried", "max_open_files", "batch_size", "cloud_texture_px"):
            if getattr(self, name) < 1:
                raise _invalid(name, f"must be at least 1, got {getattr(self, name)}")
        if self.max_shift_m < 0:
            raise _invalid("max_shift_m", f"must not be negative (metres), got {self.max_shift_m:g}")
        if not self.bands:
            raise _invalid("bands", "must list at least one band index (1-based), e.g. [1, 2, 3]")
        if any(b < 1 for b in self.bands):
            raise _invalid("bands", f"band indices are 1-based, got {list(self.bands)}")
        for name in ("max_native_gsd_ratio", "gsd_mismatch_ratio"):
            if getattr(self, name) < 1.0:
                raise _invalid(name, f"is a ratio of GSDs and must be at least 1, got {getattr(self, name):g}")
        for name in (
            "min_valid_fraction", "max_cloud_fraction", "max_blank_fraction", "blank_level", "saturated_level",
            "cloud_min_brightness", "cloud_max_band_range", "cloud_max_texture",
        ):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise _invalid(name, f"must be between 0 and 1, got {v:g}")
        if self.incident_window is not None:
            from tiles.incident import parse_window

            try:
                parse_window(self.incident_window)
            except ValueError as exc:
                raise _invalid("incident_window", str(exc)) from None
        if self.max_incident_gap_days is not None and self.max_incident_gap_days < 0:
            raise _invalid("max_incident_gap_days", f"must not be negative (days), got {self.max_incident_gap_days:g}")
        if self.blank_level >= self.saturated_level:
            raise _invalid(
                "blank_level", f"{self.blank_level:g} must be below tiles.saturated_level ({self.saturated_level:g})"
            )

    @property
    def default_window(self) -> "IncidentWindow | None":
        """:attr:`incident_window` parsed (None when unset)."""
        from tiles.incident import parse_window

        return None if self.incident_window is None else parse_window(self.incident_window)

    @property
    def gsd_m(self) -> float:
        """Ground sample distance of a point site's chip, in metres per pixel."""
        return self.chip_size_m / self.chip_px
