"""Settings of the tiles stage (defaults live here and nowhere else)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class TilesConfig:
    """How a before/after pair is cut around each site.

    Attributes:
        chip_size_m: side of the square window on the ground, in metres, for a point site.
        chip_px: side of the resampled chip in pixels (the model's input size).
        radius_scale: a site with ``radius_m`` (or a footprint) gets a window of at least
            ``2 * radius_m * radius_scale`` metres, so the building fills the chip with context.
        max_chip_size_m: upper bound on the window side for large sites.
        bands: 1-based band indices read from every raster (RGB by default).
        resampling: resampling of native windows onto the chip grid.
        coregister: estimate the residual shift of after against before.
        max_shift_m: a shift larger than this is not applied (recorded, and the pair may be
            flagged ``misregistered``).
        min_coreg_confidence: minimum phase-correlation confidence to apply a shift.
        normalisation: how after is made radiometrically comparable to before.
        min_valid_fraction: below this fraction of valid pixels in either epoch the pair is
            ``cannot_assess`` (``mostly_nodata`` or ``outside_*_coverage``).
        max_cloud_fraction: above this fraction of pixels cloud-like in one epoch only (a
            bright flat roof is in both): ``cloud``.
        max_blank_fraction: above this blank/saturated fraction: ``blank``.
        misregistered_confidence: a confident shift larger than ``max_shift_m`` means the
            epochs do not line up: ``misregistered``.
        max_scenes_tried: per epoch, how many covering scenes are read at most (best first).
        mosaic: fill the best scene's invalid chip pixels (scene edge, nodata) from the next
            covering scenes of the same epoch; off: use the single scene with most valid pixels.
        max_open_files: datasets kept open per process (least recently used are closed).
        batch_size: sites whose coordinates are transformed together in one call.
    """

    chip_size_m: float = 64.0
    chip_px: int = 128
    radius_scale: float = 2.0
    max_chip_size_m: float = 512.0
    bands: tuple[int, ...] = (1, 2, 3)
    resampling: Literal["bilinear", "nearest", "cubic"] = "bilinear"
    coregister: bool = True
    max_shift_m: float = 6.0
    min_coreg_confidence: float = 0.15
    normalisation: Literal["histogram", "standardise", "none"] = "histogram"
    min_valid_fraction: float = 0.6
    max_cloud_fraction: float = 0.5
    max_blank_fraction: float = 0.6
    misregistered_confidence: float = 0.8
    max_scenes_tried: int = 3
    mosaic: bool = True
    max_open_files: int = 32
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.chip_size_m <= 0:
            raise ValueError("chip_size_m must be positive (metres)")
        if self.chip_px < 16:
            raise ValueError("chip_px must be at least 16")
        if self.max_chip_size_m < self.chip_size_m:
            raise ValueError("max_chip_size_m must be at least chip_size_m")
        if min(self.max_scenes_tried, self.max_open_files, self.batch_size) < 1:
            raise ValueError("max_scenes_tried, max_open_files and batch_size must be at least 1")
        if self.max_shift_m < 0:
            raise ValueError("max_shift_m must not be negative (metres)")
        if not self.bands:
            raise ValueError("bands must list at least one band index (1-based)")
        if any(b < 1 for b in self.bands):
            raise ValueError(f"bands are 1-based band indices, got {list(self.bands)}")
        for name in ("min_valid_fraction", "max_cloud_fraction", "max_blank_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {v}")

    @property
    def gsd_m(self) -> float:
        """Ground sample distance of a point site's chip, in metres per pixel."""
        return self.chip_size_m / self.chip_px
