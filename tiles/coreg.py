"""Co-registration: the residual shift of the after chip against the before chip.

Phase correlation (integer peak; the same arithmetic as
``skimage.registration.phase_cross_correlation(..., normalization="phase")``, without its error
metrics, which are not used) on the mean of the bands, with invalid pixels filled by the mean and a Hann window against edge effects, then
refined to sub-pixel precision by a few Gauss-Newton (Lucas-Kanade) steps on the common valid
pixels, started both from the correlation peak and from no shift; the start that ends with the
higher correlation wins (skimage's upsampled-DFT refinement gives the same answer but is several times slower
under BLAS thread contention). The
confidence is the Pearson correlation of the two chips over their common valid pixels once the
shift is applied (1 = identical up to gain/offset, 0 = unrelated); the same correlation without
the shift is returned too, so a caller applies the shift only when it helps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["ShiftEstimate", "estimate_shift", "masked_correlation", "phase_peak", "shift_bilinear"]


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
    return _correlation(a[mask], b[mask])


def _correlation(xm: np.ndarray, ym: np.ndarray) -> float:
    """Pearson correlation of two 1-d samples already taken under a mask of >= 64 pixels."""
    x = xm.astype(np.float64)
    y = ym.astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    if den < 1e-12:
        return float("nan")
    return float((x * y).sum() / den)


def _take(a: np.ndarray, oy: int, ox: int) -> np.ndarray:
    """``out[r, c] = a[r + oy, c + ox]``, zero where that falls outside ``a``."""
    n0, n1 = a.shape
    out = np.zeros_like(a)
    r0, r1 = max(0, -oy), min(n0, n0 - oy)
    c0, c1 = max(0, -ox), min(n1, n1 - ox)
    if r0 < r1 and c0 < c1:
        out[r0:r1, c0:c1] = a[r0 + oy : r1 + oy, c0 + ox : c1 + ox]
    return out


def shift_bilinear(image: np.ndarray, valid: np.ndarray, dy: float, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """Move ``(H, W)`` content by ``(dy, dx)`` pixels (``scipy.ndimage.shift`` convention).

    Returns:
        ``(shifted float32 (H, W), valid bool (H, W))``; pixels that needed data from outside
        the image or from invalid pixels are invalid.
    """
    sy, sx = -dy, -dx
    iy, ix = int(np.floor(sy)), int(np.floor(sx))
    fy, fx = sy - iy, sx - ix
    img = image.astype(np.float32, copy=False)
    taps = [
        (oy, ox, wt)
        for oy, ox, wt in ((iy, ix, (1 - fy) * (1 - fx)), (iy, ix + 1, (1 - fy) * fx),
                           (iy + 1, ix, fy * (1 - fx)), (iy + 1, ix + 1, fy * fx))
        if wt > 1e-9
    ]
    out = np.zeros(img.shape, np.float32)
    for oy, ox, wt in taps:
        out += np.float32(wt) * _take(img, oy, ox)
    if valid.all():  # the valid region is the rectangle every tap reaches
        n0, n1 = img.shape
        ok = np.zeros(img.shape, bool)
        r0 = max(0, -min(t[0] for t in taps))
        r1 = min(n0, n0 - max(t[0] for t in taps))
        c0 = max(0, -min(t[1] for t in taps))
        c1 = min(n1, n1 - max(t[1] for t in taps))
        if r0 < r1 and c0 < c1:
            ok[r0:r1, c0:c1] = True
        return out, ok
    vf = valid.astype(np.float32)
    wsum = np.zeros(img.shape, np.float32)
    for oy, ox, wt in taps:
        wsum += np.float32(wt) * _take(vf, oy, ox)
    return out, wsum > 0.999


def _refine_subpixel(
    gb: np.ndarray,
    ga: np.ndarray,
    vb: np.ndarray,
    va: np.ndarray,
    grad: tuple[np.ndarray, np.ndarray],
    dy: float,
    dx: float,
    steps: int = 3,
) -> tuple[float, float]:
    """Gauss-Newton refinement of an integer shift; returns the input when it does not converge."""
    gy, gx = grad
    start = (dy, dx)
    for _ in range(steps):
        moved, mv = shift_bilinear(ga, va, dy, dx)
        m = vb & mv
        m[:2] = m[-2:] = False
        m[:, :2] = m[:, -2:] = False
        if m.sum() < 64:
            return start
        # gain/offset invariant: compare standardised images (each masked sample taken once)
        gbm, mm = gb[m], moved[m]
        sb = gbm.std() + 1e-9
        b = (gbm - gbm.mean()) / sb
        a = (mm - mm.mean()) / (mm.std() + 1e-9)
        jy, jx = gy[m] / sb, gx[m] / sb
        # 2x2 normal equations written out (no BLAS: its threads contend on small problems)
        r = b - a
        syy, sxx, sxy = float(np.sum(jy * jy)), float(np.sum(jx * jx)), float(np.sum(jy * jx))
        ry, rx = float(np.sum(jy * r)), float(np.sum(jx * r))
        det = syy * sxx - sxy * sxy
        if det <= 1e-9 * max(syy * sxx, 1e-30):
            return start
        step = np.array([(sxx * ry - sxy * rx) / det, (syy * rx - sxy * ry) / det])
        # moving after by +s shifts its content by +s; b - a ~ -grad . s  =>  s = -step
        dy, dx = dy - float(step[0]), dx - float(step[1])
        if abs(dy - start[0]) > 1.0 or abs(dx - start[1]) > 1.0:
            return start
        if abs(step).max() < 0.01:
            break
    return dy, dx


def estimate_shift(
    before: np.ndarray,
    after: np.ndarray,
    valid_before: np.ndarray,
    valid_after: np.ndarray,
    *,
    min_overlap: float = 0.3,
) -> ShiftEstimate:
    """Estimate the sub-pixel shift of ``after`` relative to ``before``.

    Args:
        before, after: float32 ``(C, H, W)`` chips in ``[0, 1]``.
        valid_before, valid_after: bool ``(H, W)``.
        min_overlap: minimum fraction of common valid pixels to try at all.

    Returns:
        A :class:`ShiftEstimate` (zeros and NaN confidence when it cannot be estimated).
    """
    mask = valid_before & valid_after
    if mask.mean() < min_overlap:
        return ShiftEstimate(0.0, 0.0, float("nan"), float("nan"))
    gb = before.mean(axis=0)
    ga = after.mean(axis=0)
    gbm, gam = gb[mask], ga[mask]
    if gbm.std() < 1e-3 or gam.std() < 1e-3:
        return ShiftEstimate(0.0, 0.0, float("nan"), float("nan"))
    window = _hann_window(*gb.shape)
    fb = np.where(mask, gb - gbm.mean(), 0.0) * window
    fa = np.where(mask, ga - gam.mean(), 0.0) * window
    shift = phase_peak(fb, fa)
    conf0 = _correlation(gbm, gam) if gbm.size >= 64 else float("nan")
    # the phase-correlation peak, and a local refinement from no shift: on real pairs with much
    # change the global peak can be a wrong one while the true residual is small
    best = (float("-inf"), 0.0, 0.0)
    grad = np.gradient(gb.astype(np.float64))
    peak = (float(shift[0]), float(shift[1]))
    starts = [peak]
    if max(abs(peak[0]), abs(peak[1])) > 1.0:  # else the peak's refinement covers no shift
        starts.append((0.0, 0.0))
    for start in starts:
        dy, dx = _refine_subpixel(gb, ga, valid_before, valid_after, grad, *start)
        conf = _shifted_correlation(gb, ga, valid_before, valid_after, dy, dx)
        if math.isfinite(conf) and conf > best[0]:
            best = (conf, dy, dx)
        if best[0] >= 0.5:  # a clearly good alignment: no need to try the other start
            break
    if not math.isfinite(best[0]):
        return ShiftEstimate(0.0, 0.0, float("nan"), conf0)
    return ShiftEstimate(best[1], best[2], best[0], conf0)


@lru_cache(maxsize=16)
def _hann_window(h: int, w: int) -> np.ndarray:
    """The float32 2-d Hann window of a chip shape (read-only, shared)."""
    window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    window.flags.writeable = False
    return window


def phase_peak(reference: np.ndarray, moving: np.ndarray) -> tuple[float, float]:
    """Integer shift ``(dy, dx)`` that registers ``moving`` onto ``reference`` by phase correlation.

    The same operations, in the same precision, as skimage's ``phase_cross_correlation`` with
    ``upsample_factor=1, normalization="phase"`` (so the same peak), without the error metrics
    that function also computes.

    Raises:
        ValueError: NaN in the inputs (as skimage does).
    """
    from scipy.fft import fftn, ifftn

    src_freq = fftn(reference)
    target_freq = fftn(moving)
    image_product = src_freq * target_freq.conj()
    eps = np.finfo(image_product.real.dtype).eps
    image_product /= np.maximum(np.abs(image_product), 100 * eps)
    cross_correlation = ifftn(image_product)
    flat = int(np.argmax(np.abs(cross_correlation)))
    maxima = np.unravel_index(flat, cross_correlation.shape)
    if np.isnan(cross_correlation[maxima]) or not (np.isfinite(reference).all() and np.isfinite(moving).all()):
        raise ValueError("NaN values found in the images given to phase correlation")
    shape = src_freq.shape
    out = []
    for m, size in zip(maxima, shape):
        v = float(m)
        if v > np.trunc(size / 2):
            v -= size
        out.append(v)
    return out[0], out[1]


def _shifted_correlation(gb: np.ndarray, ga: np.ndarray, vb: np.ndarray, va: np.ndarray, dy: float, dx: float) -> float:
    moved, moved_valid = shift_bilinear(ga, va, dy, dx)
    return masked_correlation(gb, moved, vb & moved_valid)
