"""Per-epoch pixel quality of a chip: blank, saturated and cloud-like fractions.

All fractions are of the chip's *valid* pixels, computed on the ``[0, 1]`` values before
normalisation, with the thresholds of :class:`~tiles.config.TilesConfig` (defaults in brackets):

- blank: every band at most ``blank_level`` [0.02] (black fill that the raster did not declare
  as nodata);
- saturated: every band at least ``saturated_level`` [0.98];
- cloud-like: bright (band mean at least ``cloud_min_brightness`` [0.75]), nearly grey (band
  range at most ``cloud_max_band_range`` [0.12]), not saturated, and smooth (standard deviation
  of the band mean over ``cloud_texture_px`` [5] pixels square at most ``cloud_max_texture``
  [0.04]).

Bright flat roofs look cloud-like too, but in both epochs at the same place; a cloud is in one
epoch only. So a pair's cloud fraction (:func:`pair_cloud_fraction`) counts the pixels that are
cloud-like in one epoch and not in the other, and a pair is ``cloud`` only when most of the chip
is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tiles.config import TilesConfig

__all__ = ["ChipQuality", "band_range", "chip_quality", "cloud_like", "pair_cloud_fraction"]


@dataclass(frozen=True)
class ChipQuality:
    """Quality of one epoch's chip; fractions in ``[0, 1]``."""

    valid_fraction: float
    blank_fraction: float
    saturated_fraction: float
    cloud_fraction: float


def band_range(chip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ``(min, max)`` over the bands of a ``(C, H, W)`` chip (shared by the tests below)."""
    return chip.min(axis=0), chip.max(axis=0)


def chip_quality(
    chip: np.ndarray,
    valid: np.ndarray,
    config: TilesConfig,
    *,
    cloud: np.ndarray | None = None,
    lo_hi: tuple[np.ndarray, np.ndarray] | None = None,
) -> ChipQuality:
    """Quality fractions of one chip.

    Args:
        chip: float32 ``(C, H, W)`` in ``[0, 1]``.
        valid: bool ``(H, W)``.
        config: the thresholds (``blank_level``, ``saturated_level``, the ``cloud_*`` ones).
        cloud: :func:`cloud_like` of this chip when the caller has it already.
        lo_hi: :func:`band_range` of this chip when the caller has it already.
    """
    n_valid = int(valid.sum())
    vf = n_valid / valid.size
    if n_valid == 0:
        return ChipQuality(0.0, 0.0, 0.0, 0.0)
    lo, hi = band_range(chip) if lo_hi is None else lo_hi
    blank = (hi <= config.blank_level) & valid
    saturated = (lo >= config.saturated_level) & valid
    if cloud is None:
        cloud = cloud_like(chip, valid, config, lo_hi=(lo, hi))
    return ChipQuality(
        valid_fraction=float(vf),
        blank_fraction=float(blank.sum() / n_valid),
        saturated_fraction=float(saturated.sum() / n_valid),
        cloud_fraction=float(cloud.sum() / n_valid),
    )


def cloud_like(
    chip: np.ndarray,
    valid: np.ndarray,
    config: TilesConfig,
    *,
    lo_hi: tuple[np.ndarray, np.ndarray] | None = None,
    mean: np.ndarray | None = None,
) -> np.ndarray:
    """Bool ``(H, W)``: valid pixels that are bright, grey and smooth (not saturated).

    Args:
        chip: float32 ``(C, H, W)`` in ``[0, 1]``.
        valid: bool ``(H, W)``.
        config: the thresholds (the ``cloud_*`` settings and ``saturated_level``).
        lo_hi: :func:`band_range` of this chip when the caller has it already.
        mean: ``chip.mean(axis=0)`` when the caller has it already (co-registration takes it).
    """
    lo, hi = band_range(chip) if lo_hi is None else lo_hi
    if mean is None:
        mean = chip.mean(axis=0)
    cloud = (
        (mean >= config.cloud_min_brightness)
        & ((hi - lo) <= config.cloud_max_band_range)
        & valid
        & (lo < config.saturated_level)
    )
    if cloud.any():  # the smoothness test only where bright grey pixels exist
        m1 = ndimage.uniform_filter(mean, config.cloud_texture_px)
        m2 = ndimage.uniform_filter(mean * mean, config.cloud_texture_px)
        cloud &= np.sqrt(np.clip(m2 - m1 * m1, 0, None)) <= config.cloud_max_texture
    return cloud


def pair_cloud_fraction(
    before: np.ndarray,
    valid_before: np.ndarray,
    after: np.ndarray,
    valid_after: np.ndarray,
    config: TilesConfig,
    *,
    cloud_before: np.ndarray | None = None,
    cloud_after: np.ndarray | None = None,
) -> float:
    """Largest fraction, over the two epochs, of valid pixels cloud-like in that epoch only.

    Args:
        before, after: float32 ``(C, H, W)`` in ``[0, 1]``.
        valid_before, valid_after: bool ``(H, W)``.
        config: the cloud thresholds.
        cloud_before, cloud_after: their :func:`cloud_like` masks when the caller has them.
    """
    cb = cloud_like(before, valid_before, config) if cloud_before is None else cloud_before
    ca = cloud_like(after, valid_after, config) if cloud_after is None else cloud_after
    fractions = []
    for own, other, valid in ((cb, ca, valid_before), (ca, cb, valid_after)):
        n = int(valid.sum())
        fractions.append(float((own & ~other).sum() / n) if n else 0.0)
    return max(fractions)
