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
    out, ok, _ = _shift_bilinear(image, valid, dy, dx)
    return out, ok


Rect = tuple[int, int, int, int]
"""``(r0, r1, c0, c1)``: the pixels ``[r0:r1, c0:c1]`` (empty when ``r0 >= r1`` or ``c0 >= c1``)."""


def _shift_bilinear(
    image: np.ndarray, valid: np.ndarray, dy: float, dx: float, *, all_valid: bool | None = None
) -> tuple[np.ndarray, np.ndarray, Rect | None]:
    """:func:`shift_bilinear`, plus the valid rectangle when every input pixel is valid (else None)."""
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
    if valid.all() if all_valid is None else all_valid:  # the valid region is the rectangle every tap reaches
        n0, n1 = img.shape
        ok = np.zeros(img.shape, bool)
        r0 = max(0, -min(t[0] for t in taps))
        r1 = min(n0, n0 - max(t[0] for t in taps))
        c0 = max(0, -min(t[1] for t in taps))
        c1 = min(n1, n1 - max(t[1] for t in taps))
        if r0 < r1 and c0 < c1:
            ok[r0:r1, c0:c1] = True
        return out, ok, (r0, r1, c0, c1)
    vf = valid.astype(np.float32)
    wsum = np.zeros(img.shape, np.float32)
    for oy, ox, wt in taps:
        wsum += np.float32(wt) * _take(vf, oy, ox)
    return out, wsum > 0.999, None


def _gather(arrays: tuple[np.ndarray, ...], mask: np.ndarray, rect: Rect | None) -> tuple[np.ndarray, ...]:
    """``a[mask]`` for each array; from a slice when ``mask`` is known to be exactly ``rect``.

    A C-order slice copy holds the same values in the same order as the boolean gather (so
    every reduction over it gives the same bits), at a fraction of the cost.
    """
    if rect is None:
        return tuple(a[mask] for a in arrays)
    r0, r1, c0, c1 = rect
    return tuple(np.ascontiguousarray(a[r0:r1, c0:c1]).reshape(-1) for a in arrays)


def _interior(rect: Rect, shape: tuple[int, int], border: int) -> Rect:
    """``rect`` without a ``border`` pixels wide frame of the image."""
    r0, r1, c0, c1 = rect
    return max(r0, border), min(r1, shape[0] - border), max(c0, border), min(c1, shape[1] - border)


def _rect_size(rect: Rect) -> int:
    r0, r1, c0, c1 = rect
    return max(0, r1 - r0) * max(0, c1 - c0)


def _refine_subpixel(
    gb: np.ndarray,
    ga: np.ndarray,
    vb: np.ndarray,
    va: np.ndarray,
    grad: tuple[np.ndarray, np.ndarray],
    dy: float,
    dx: float,
    steps: int = 3,
    *,
    vb_all: bool | None = None,
    va_all: bool | None = None,
) -> tuple[float, float]:
    """Gauss-Newton refinement of an integer shift; returns the input when it does not converge.

    ``vb_all``/``va_all``: whether every pixel of ``vb``/``va`` is valid (None: look). When both
    are, the common valid pixels form a rectangle and are taken by slicing; ``vb_all=False``
    forces the boolean-mask gathers (the same values).
    """
    gy, gx = grad
    start = (dy, dx)
    vb_all = bool(vb.all()) if vb_all is None else vb_all
    va_all = bool(va.all()) if va_all is None else va_all
    for _ in range(steps):
        moved, mv, rect = _shift_bilinear(ga, va, dy, dx, all_valid=va_all)
        if vb_all and rect is not None:
            rect = _interior(rect, gb.shape, 2)
            m = None
            if _rect_size(rect) < 64:
                return start
        else:
            rect = None
            m = vb & mv
            m[:2] = m[-2:] = False
            m[:, :2] = m[:, -2:] = False
            if m.sum() < 64:
                return start
        # gain/offset invariant: compare standardised images (each masked sample taken once)
        gbm, mm, gym, gxm = _gather((gb, moved, gy, gx), m, rect)
        sb = gbm.std() + 1e-9
        b = (gbm - gbm.mean()) / sb
        a = (mm - mm.mean()) / (mm.std() + 1e-9)
        jy, jx = gym / sb, gxm / sb
        r = b - a
        syy, sxx, sxy = float(np.sum(jy * jy)), float(np.sum(jx * jx)), float(np.sum(jy * jx))
        ry, rx = float(np.sum(jy * r)), float(np.sum(jx * r))
        dy, dx, stop = _newton_update((syy, sxx, sxy), ry, rx, dy, dx, start)
        if stop == "fail":
            return start
        if stop == "done":
            break
    return dy, dx


def _newton_update(
    sums: tuple[float, float, float], ry: float, rx: float, dy: float, dx: float, start: tuple[float, float]
) -> tuple[float, float, str | None]:
    """One Gauss-Newton update of the shift from the 2x2 normal equations (written out: no BLAS,
    whose threads contend on problems this small).

    Returns:
        the updated ``(dy, dx)`` and ``"fail"`` (singular, or more than a pixel from ``start``:
        keep the start), ``"done"`` (converged) or None (go on).
    """
    syy, sxx, sxy = sums
    det = syy * sxx - sxy * sxy
    if det <= 1e-9 * max(syy * sxx, 1e-30):
        return dy, dx, "fail"
    step = np.array([(sxx * ry - sxy * rx) / det, (syy * rx - sxy * ry) / det])
    # moving after by +s shifts its content by +s; b - a ~ -grad . s  =>  s = -step
    dy, dx = dy - float(step[0]), dx - float(step[1])
    if abs(dy - start[0]) > 1.0 or abs(dx - start[1]) > 1.0:
        return dy, dx, "fail"
    return dy, dx, "done" if abs(step).max() < 0.01 else None


class _FullValid:
    """Refinement and shifted correlation when both chips are valid everywhere (the common case).

    The same arithmetic, in the same order, as :func:`_refine_subpixel` and
    :func:`_shifted_correlation` with all-True masks (so the same bits), but: the common valid
    pixels are a rectangle, so samples are slices instead of boolean gathers; the shifted after
    is computed on that rectangle only; and what depends only on the before chip and the
    rectangle (standardised before, its gradients and their sums) is computed once per
    rectangle, not once per Gauss-Newton step and start.
    """

    def __init__(self, gb: np.ndarray, ga: np.ndarray) -> None:
        self.gb = gb
        # + 0.0 turns a negative zero into +0.0, as summing the taps onto zeros did (the moved
        # after starts from its first tap instead); every other value stays as it is
        self.ga = ga.astype(np.float32, copy=False) + np.float32(0.0)
        self.f = gb.astype(np.float64)  # what np.gradient differentiates
        self._grad: tuple[np.ndarray, np.ndarray] | None = None
        self._refine: dict[Rect, tuple] = {}
        self._corr: dict[Rect, tuple] = {}

    @staticmethod
    def _taps(dy: float, dx: float) -> list[tuple[int, int, float]]:
        sy, sx = -dy, -dx
        iy, ix = int(np.floor(sy)), int(np.floor(sx))
        fy, fx = sy - iy, sx - ix
        return [
            (oy, ox, wt)
            for oy, ox, wt in ((iy, ix, (1 - fy) * (1 - fx)), (iy, ix + 1, (1 - fy) * fx),
                               (iy + 1, ix, fy * (1 - fx)), (iy + 1, ix + 1, fy * fx))
            if wt > 1e-9
        ]

    def _tap_rect(self, taps: list[tuple[int, int, float]]) -> Rect:
        n0, n1 = self.gb.shape
        return (
            max(0, -min(t[0] for t in taps)), min(n0, n0 - max(t[0] for t in taps)),
            max(0, -min(t[1] for t in taps)), min(n1, n1 - max(t[1] for t in taps)),
        )

    def _moved(self, taps: list[tuple[int, int, float]], rect: Rect) -> np.ndarray:
        """The shifted after on ``rect`` (flat, C order): the sum of :func:`shift_bilinear`'s taps."""
        r0, r1, c0, c1 = rect
        ga = self.ga
        (oy, ox, wt), rest = taps[0], taps[1:]
        out = np.multiply(ga[r0 + oy : r1 + oy, c0 + ox : c1 + ox], np.float32(wt))
        tmp = np.empty_like(out) if rest else out
        for oy, ox, wt in rest:
            out += np.multiply(ga[r0 + oy : r1 + oy, c0 + ox : c1 + ox], np.float32(wt), out=tmp)
        return out.reshape(-1)

    def _gradient(self, rect: Rect) -> tuple[np.ndarray, np.ndarray]:
        """``np.gradient(gb.astype(float64))`` on ``rect`` (2-d views), which lies off the outer 2 pixels.

        There numpy uses central differences ``(f[i+1] - f[i-1]) / 2``: the same bits here. They
        are taken once per chip, on the largest such rectangle (the chip without its outer 2
        pixels; each value depends only on its two neighbours), and each rectangle is a slice.
        """
        if self._grad is None:
            f = self.f
            gy = (f[3:-1, 2:-2] - f[1:-3, 2:-2]) / 2.0
            gx = (f[2:-2, 3:-1] - f[2:-2, 1:-3]) / 2.0
            self._grad = gy, gx
        r0, r1, c0, c1 = rect
        gy, gx = self._grad
        return gy[r0 - 2 : r1 - 2, c0 - 2 : c1 - 2], gx[r0 - 2 : r1 - 2, c0 - 2 : c1 - 2]

    def refine(self, dy: float, dx: float, steps: int = 3) -> tuple[float, float]:
        """:func:`_refine_subpixel` for all-valid chips."""
        start = (dy, dx)
        for _ in range(steps):
            taps = self._taps(dy, dx)
            rect = _interior(self._tap_rect(taps), self.gb.shape, 2)
            if rect[0] >= rect[1] or rect[2] >= rect[3] or _rect_size(rect) < 64:
                return start
            cached = self._refine.get(rect)
            if cached is None:
                (gbm,) = _gather((self.gb,), None, rect)  # type: ignore[arg-type]
                gym, gxm = self._gradient(rect)
                sb = gbm.std() + 1e-9
                b = (gbm - gbm.mean()) / sb
                jy, jx = (gym / sb).reshape(-1), (gxm / sb).reshape(-1)
                sums = (float(np.sum(jy * jy)), float(np.sum(jx * jx)), float(np.sum(jy * jx)))
                cached = self._refine[rect] = (b, jy, jx, sums)
            b, jy, jx, sums = cached
            mm = self._moved(taps, rect)
            a = (mm - mm.mean()) / (mm.std() + 1e-9)
            # float32 r meets float64 j: numpy casts r to float64 for each product; once here
            r = (b - a).astype(np.float64)
            ry, rx = float(np.sum(jy * r)), float(np.sum(jx * r))
            dy, dx, stop = _newton_update(sums, ry, rx, dy, dx, start)
            if stop == "fail":
                return start
            if stop == "done":
                break
        return dy, dx

    def correlation(self, dy: float, dx: float) -> float:
        """:func:`_shifted_correlation` for all-valid chips."""
        taps = self._taps(dy, dx)
        rect = self._tap_rect(taps)
        if rect[0] >= rect[1] or rect[2] >= rect[3] or _rect_size(rect) < 64:
            return float("nan")
        cached = self._corr.get(rect)
        if cached is None:
            (gbm,) = _gather((self.gb,), None, rect)  # type: ignore[arg-type]
            x = gbm.astype(np.float64)
            x -= x.mean()
            cached = self._corr[rect] = (x, (x * x).sum())
        x, sxx = cached
        y = self._moved(taps, rect).astype(np.float64)
        y -= y.mean()
        den = np.sqrt(sxx * (y * y).sum())
        if den < 1e-12:
            return float("nan")
        return float((x * y).sum() / den)


def estimate_shift(
    before: np.ndarray,
    after: np.ndarray,
    valid_before: np.ndarray,
    valid_after: np.ndarray,
    *,
    min_overlap: float = 0.3,
    band_means: tuple[np.ndarray, np.ndarray] | None = None,
) -> ShiftEstimate:
    """Estimate the sub-pixel shift of ``after`` relative to ``before``.

    Args:
        before, after: float32 ``(C, H, W)`` chips in ``[0, 1]``.
        valid_before, valid_after: bool ``(H, W)``.
        min_overlap: minimum fraction of common valid pixels to try at all.
        band_means: ``(before.mean(axis=0), after.mean(axis=0))`` when the caller has them
            (the quality gates use them too); the grey images correlated here.

    Returns:
        A :class:`ShiftEstimate` (zeros and NaN confidence when it cannot be estimated).
    """
    mask = valid_before & valid_after
    if mask.mean() < min_overlap:
        return ShiftEstimate(0.0, 0.0, float("nan"), float("nan"))
    vb_all, va_all = bool(valid_before.all()), bool(valid_after.all())
    gb, ga = (before.mean(axis=0), after.mean(axis=0)) if band_means is None else band_means
    full = vb_all and va_all
    gbm, gam = (gb.reshape(-1), ga.reshape(-1)) if full else (gb[mask], ga[mask])
    if gbm.std() < 1e-3 or gam.std() < 1e-3:
        return ShiftEstimate(0.0, 0.0, float("nan"), float("nan"))
    window = _hann_window(*gb.shape)
    if full:  # np.where over an all-True mask is the plain difference
        fb = (gb - gbm.mean()) * window
        fa = (ga - gam.mean()) * window
    else:
        fb = np.where(mask, gb - gbm.mean(), 0.0) * window
        fa = np.where(mask, ga - gam.mean(), 0.0) * window
    shift = phase_peak(fb, fa)
    conf0 = _correlation(gbm, gam) if gbm.size >= 64 else float("nan")
    # the phase-correlation peak, and a local refinement from no shift: on real pairs with much
    # change the global peak can be a wrong one while the true residual is small
    best = (float("-inf"), 0.0, 0.0)
    peak = (float(shift[0]), float(shift[1]))
    starts = [peak]
    if max(abs(peak[0]), abs(peak[1])) > 1.0:  # else the peak's refinement covers no shift
        starts.append((0.0, 0.0))
    fast = _FullValid(gb, ga) if full else None
    grad = None if full else np.gradient(gb.astype(np.float64))
    for start in starts:
        if fast is not None:
            dy, dx = fast.refine(*start)
            conf = fast.correlation(dy, dx)
        else:
            dy, dx = _refine_subpixel(
                gb, ga, valid_before, valid_after, grad, *start, vb_all=vb_all, va_all=va_all  # type: ignore[arg-type]
            )
            conf = _shifted_correlation(gb, ga, valid_before, valid_after, dy, dx, vb_all=vb_all, va_all=va_all)
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
    # src * conj(target), normalised by its magnitude, in place (the same operations, fewer arrays)
    image_product = np.multiply(src_freq, np.conjugate(target_freq, out=target_freq), out=src_freq)
    eps = np.finfo(image_product.real.dtype).eps
    magnitude = np.abs(image_product)
    image_product /= np.maximum(magnitude, 100 * eps, out=magnitude)
    cross_correlation = ifftn(image_product, overwrite_x=True)
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


def _shifted_correlation(
    gb: np.ndarray, ga: np.ndarray, vb: np.ndarray, va: np.ndarray, dy: float, dx: float,
    *, vb_all: bool | None = None, va_all: bool | None = None,
) -> float:
    """Correlation of ``gb`` and ``ga`` shifted by ``(dy, dx)`` over their common valid pixels.

    ``vb_all``/``va_all`` as in :func:`_refine_subpixel`.
    """
    vb_all = bool(vb.all()) if vb_all is None else vb_all
    va_all = bool(va.all()) if va_all is None else va_all
    moved, moved_valid, rect = _shift_bilinear(ga, va, dy, dx, all_valid=va_all)
    if vb_all and rect is not None:  # the common valid pixels are the rectangle
        if _rect_size(rect) < 64:
            return float("nan")
        return _correlation(*_gather((gb, moved), None, rect))  # type: ignore[arg-type]
    return masked_correlation(gb, moved, vb & moved_valid)
