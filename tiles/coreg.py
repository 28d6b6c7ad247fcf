"""Co-registration: the residual shift of the after chip against the before chip.

Sub-pixel phase correlation (``skimage.registration.phase_cross_correlation``) on the mean of the
bands, with invalid pixels filled by the mean and a Hann window against edge effects. The
confidence is the Pearson correlation of the two chips over their common valid pixels once the
shift is applied (1 = identical up to gain/offset, 0 = unrelated); the same correlation without
the shift is returned too, so a caller applies the shift only when it helps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["ShiftEstimate", "estimate_shift", "masked_correlation"]


@dataclass(frozen=True)
class ShiftEstimate:
    """Shift that registers after onto before.

    Attributes:
        dy, dx: chip pixels; shifting after by ``(dy, dx)`` (``ndimage.shift`` convention)
            aligns it with before. The after content itself sits at ``(-dy, -dx)``.
        confidence: correlation over common valid pixels with the shift applied (NaN if
            there was too little overlap or texture).
        confidence_unshifted: the same without the shift.
    """

    dy: float
    dx: float
    confidence: float
    confidence_unshifted: float


def masked_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of two ``(H, W)`` images over ``mask`` (NaN with too little data)."""
    if mask.sum() < 64:
        return float("nan")
    x = a[mask].astype(np.float64)
    y = b[mask].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    if den < 1e-12:
        return float("nan")
    return float((x * y).sum() / den)


def estimate_shift(
    before: np.ndarray,
    after: np.ndarray,
    valid_before: np.ndarray,
    valid_after: np.ndarray,
    *,
    upsample_factor: int = 20,
    min_overlap: float = 0.3,
) -> ShiftEstimate:
    """Estimate the sub-pixel shift of ``after`` relative to ``before``.

    Args:
        before, after: float32 ``(C, H, W)`` chips in ``[0, 1]``.
        valid_before, valid_after: bool ``(H, W)``.
        upsample_factor: sub-pixel precision is ``1 / upsample_factor`` pixels.
        min_overlap: minimum fraction of common valid pixels to try at all.

    Returns:
        A :class:`ShiftEstimate` (zeros and NaN confidence when it cannot be estimated).
    """
    from skimage.registration import phase_cross_correlation

    mask = valid_before & valid_after
    if mask.mean() < min_overlap:
        return ShiftEstimate(0.0, 0.0, float("nan"), float("nan"))
    gb = before.mean(axis=0)
    ga = after.mean(axis=0)
    if gb[mask].std() < 1e-3 or ga[mask].std() < 1e-3:
        return ShiftEstimate(0.0, 0.0, float("nan"), float("nan"))
    h, w = gb.shape
    window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    fb = np.where(mask, gb - gb[mask].mean(), 0.0) * window
    fa = np.where(mask, ga - ga[mask].mean(), 0.0) * window
    shift, _, _ = phase_cross_correlation(fb, fa, upsample_factor=upsample_factor, normalization="phase")
    dy, dx = float(shift[0]), float(shift[1])
    conf0 = masked_correlation(gb, ga, mask)
    moved = ndimage.shift(ga, (dy, dx), order=1, mode="constant", cval=0.0)
    moved_valid = ndimage.shift(valid_after.astype(np.float32), (dy, dx), order=1, mode="constant", cval=0.0) > 0.999
    conf = masked_correlation(gb, moved, valid_before & moved_valid)
    return ShiftEstimate(dy, dx, conf, conf0)
