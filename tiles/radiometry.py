"""Radiometry: raster values to ``[0, 1]``, and making the after epoch comparable to before.

Scaling to ``[0, 1]`` (documented in the README):

- ``uint8``: divided by 255.
- any other dtype: a robust per-scene, per-band stretch ``(x - p_low) / (p_high - p_low)``,
  clipped, with the 0.5th and 99.5th percentiles of valid pixels computed *once per scene* from a
  decimated read (GDAL uses overviews when present), never per chip. Float rasters whose values
  already lie in ``[0, 1]`` are used as they are.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["ScaleStats", "scale_to_unit", "stats_from_sample", "match_histograms_masked", "match_mean_std"]

ScaleStats = tuple[np.ndarray, np.ndarray]
"""Per-band ``(low, high)`` float32 arrays of shape ``(C,)``."""


def stats_from_sample(sample: np.ndarray, valid: np.ndarray, dtype: str) -> ScaleStats:
    """Per-band stretch limits from a decimated read of a scene.

    Args:
        sample: ``(C, h, w)`` raw values.
        valid: ``(h, w)`` bool.
        dtype: the raster's dtype name.

    Returns:
        ``(low, high)`` of shape ``(C,)``; for uint8 always ``(0, 255)``.
    """
    c = sample.shape[0]
    if dtype == "uint8":
        return np.zeros(c, np.float32), np.full(c, 255.0, np.float32)
    low = np.zeros(c, np.float32)
    high = np.ones(c, np.float32)
    for b in range(c):
        vals = sample[b][valid & np.isfinite(sample[b])].astype(np.float64)
        if vals.size == 0:
            continue
        lo, hi = np.percentile(vals, [0.5, 99.5])
        if np.issubdtype(np.dtype(dtype), np.floating) and vals.min() >= 0.0 and vals.max() <= 1.0:
            lo, hi = 0.0, 1.0
        if hi <= lo:
            hi = lo + 1.0
        low[b], high[b] = lo, hi
    return low, high


def scale_to_unit(data: np.ndarray, stats: ScaleStats) -> np.ndarray:
    """Raw ``(C, h, w)`` values to float32 in ``[0, 1]`` with per-band limits."""
    low, high = stats
    if data.dtype == np.uint8 and not low.any() and np.all(high == 255.0):
        return np.multiply(data, np.float32(1.0 / 255.0), dtype=np.float32)
    out = data.astype(np.float32, copy=False)
    out = (out - low[:, None, None]) / (high - low)[:, None, None]
    np.clip(out, 0.0, 1.0, out=out)
    return np.nan_to_num(out, copy=False, nan=0.0)


def match_histograms_masked(after: np.ndarray, before: np.ndarray, mask: np.ndarray, levels: int = 1024) -> np.ndarray:
    """Histogram-match each band of ``after`` to ``before`` using only pixels valid in both.

    Values are quantised to ``levels`` bins; the mapping sends each after level to the before
    value with the same cumulative frequency (piecewise linear between levels).

    Args:
        after, before: float32 ``(C, H, W)`` in ``[0, 1]``.
        mask: bool ``(H, W)``; pixels used to build both distributions.
        levels: histogram bins over ``[0, 1]``.

    Returns:
        The matched ``after``, float32 ``(C, H, W)`` in ``[0, 1]`` (``after`` if too few pixels).
    """
    n = int(mask.sum())
    if n < 16:
        return after
    top = levels - 1
    grid = _level_grid(levels)
    c = after.shape[0]
    # every band's levels and a spare bin in one index range (band b's level l at b * span + l),
    # so one bincount counts all bands and one take maps them; pixels outside the mask go to
    # their band's spare bin (no masked gathers) and are dropped after counting; a fully valid
    # pair needs no masking at all
    span = levels + 1
    qa, qb = _quantise(after, top, span), _quantise(before, top, span)
    if not mask.all():
        spare = (np.arange(c) * span + levels)[:, None, None]
        qa_counted, qb = np.where(mask, qa, spare), np.where(mask, qb, spare)
    else:
        qa_counted = qa
    count_a = np.bincount(qa_counted.reshape(-1), minlength=c * span).reshape(c, span)[:, :levels]
    count_b = np.bincount(qb.reshape(-1), minlength=c * span).reshape(c, span)[:, :levels]
    cdf_a = np.cumsum(count_a, axis=1) / n
    cdf_b = np.cumsum(count_b, axis=1) / n
    # centre each level's cumulative frequency within its own bin
    ca = cdf_a - 0.5 * _steps(cdf_a, 0.0)
    cb = cdf_b - 0.5 * _steps(cdf_b, 0.0)
    keep = _steps(cb, -1.0) > 0  # strictly increasing support for interp
    lut = np.zeros((c, span), np.float32)
    for b in range(c):
        lut[b, :levels] = np.interp(ca[b], cb[b][keep[b]], grid[keep[b]])
    return np.take(lut.reshape(-1), qa)


def _steps(x: np.ndarray, first: float) -> np.ndarray:
    """``np.diff(x, axis=1, prepend=first)`` for a 2-d ``x``: the same subtractions, without
    building the prepended copy."""
    out = np.empty_like(x)
    np.subtract(x[:, :1], first, out=out[:, :1])
    np.subtract(x[:, 1:], x[:, :-1], out=out[:, 1:])
    return out


@lru_cache(maxsize=4)
def _level_grid(levels: int) -> np.ndarray:
    """``np.linspace(0, 1, levels)`` (read-only, shared)."""
    grid = np.linspace(0.0, 1.0, levels)
    grid.flags.writeable = False
    return grid


def _quantise(x: np.ndarray, top: int, span: int = 0) -> np.ndarray:
    """``rint(clip(x, 0, 1) * top)`` as indices, in ``x``'s own precision (float32 for chips).

    With ``span``, band ``b``'s indices are offset by ``b * span`` (added while still float:
    whole numbers far below 2**24, so exactly).
    """
    q = np.clip(x, 0.0, 1.0)
    q *= top
    np.rint(q, out=q)
    if span:
        q += (np.arange(q.shape[0]) * span).astype(q.dtype)[:, None, None]
    return q.astype(np.intp)


def match_mean_std(after: np.ndarray, before: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-pair standardisation: give each band of ``after`` the mean and std of ``before``.

    Args:
        after, before: float32 ``(C, H, W)`` in ``[0, 1]``.
        mask: bool ``(H, W)`` of pixels valid in both.

    Returns:
        float32 ``(C, H, W)`` clipped to ``[0, 1]``.
    """
    if mask.sum() < 16:
        return after
    out = np.empty_like(after)
    for b in range(after.shape[0]):
        a, r = after[b][mask], before[b][mask]
        sa = float(a.std()) or 1.0
        out[b] = (after[b] - a.mean()) / sa * r.std() + r.mean()
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)
