"""Resampling a native window onto the chip grid through an affine map (pure array maths).

Bilinear and nearest sampling are done here with one gather for all bands and the validity
mask together (several times faster than ``scipy.ndimage.affine_transform`` per band); cubic
falls back to ``scipy.ndimage``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

__all__ = ["resample_affine"]


def _resample_inside(native: np.ndarray, affine: np.ndarray, out_px: int, order: int) -> np.ndarray:
    """Bilinear/nearest resampling with Pillow's affine transform (2-3x faster than ndimage).

    Only for chips whose samples all fall within the native pixel centres. Each band's plane
    and its output row of ``out`` are handed to Pillow as mapped "F" images (views, no copies);
    Pillow's own ``Image.frombuffer``/``transform``/``tobytes`` do the same arithmetic with two
    copies and a fresh image per band (see :func:`_pillow_mapped`).
    """
    from PIL import Image

    # Pillow maps output (x, y) to input (a x + b y + c, d x + e y + f) with pixel centres at
    # +0.5; ours maps chip (row, col) index coordinates to native (row, col) index coordinates.
    a, b = affine[1, 1], affine[1, 0]
    c = affine[1, 2] + 0.5 - 0.5 * (a + b)
    d, e = affine[0, 1], affine[0, 0]
    f = affine[0, 2] + 0.5 - 0.5 * (d + e)
    coeffs = (float(a), float(b), float(c), float(d), float(e), float(f))
    method = Image.Resampling.BILINEAR if order == 1 else Image.Resampling.NEAREST
    out = np.empty((native.shape[0], out_px, out_px), np.float32)  # every pixel is written below
    h, w = native.shape[1:]
    mapped = _pillow_mapped()
    for band in range(native.shape[0]):
        plane = np.ascontiguousarray(native[band], dtype=np.float32)
        if mapped:
            src = Image.core.map_buffer(plane, (w, h), "raw", 0, ("F", 0, 1))
            dst = Image.core.map_buffer(out[band], (out_px, out_px), "raw", 0, ("F", 0, 1))
            # what Image.transform does after making its output image: fill=1 writes every pixel
            getattr(dst, mapped)((0, 0, out_px, out_px), src, Image.Transform.AFFINE, coeffs, method, 1)
        else:
            img = Image.frombuffer("F", (w, h), plane, "raw", "F", 0, 1)
            moved = img.transform((out_px, out_px), Image.Transform.AFFINE, coeffs, resample=method)
            out[band] = np.frombuffer(moved.tobytes(), np.float32).reshape(out_px, out_px)
    np.clip(out, 0.0, 1.0, out=out)
    return out


@lru_cache(maxsize=1)
def _pillow_mapped() -> str | None:
    """The C-level transform method of this Pillow (``"transform"``; ``"transform2"`` before Pillow
    renamed it) when it transforms between mapped float buffers with the same bytes, else None.

    ``Image.core.map_buffer`` is Pillow's C-level constructor behind ``Image.frombuffer``; if a
    Pillow release drops it or changes the result, the public (copying) path is used instead.
    """
    from PIL import Image

    rng = np.random.default_rng(12)
    plane = rng.random((37, 41), dtype=np.float32)
    coeffs = (0.93, 0.07, 1.3, -0.05, 1.02, 2.1)
    try:
        name = "transform" if hasattr(Image.core.map_buffer(plane, (41, 37), "raw", 0, ("F", 0, 1)), "transform") else "transform2"
        for method in (Image.Resampling.BILINEAR, Image.Resampling.NEAREST):
            img = Image.frombuffer("F", (41, 37), plane, "raw", "F", 0, 1)
            ref = img.transform((23, 23), Image.Transform.AFFINE, coeffs, resample=method).tobytes()
            out = np.full((23, 23), np.nan, np.float32)
            src = Image.core.map_buffer(plane, (41, 37), "raw", 0, ("F", 0, 1))
            dst = Image.core.map_buffer(out, (23, 23), "raw", 0, ("F", 0, 1))
            getattr(dst, name)((0, 0, 23, 23), src, Image.Transform.AFFINE, coeffs, method, 1)
            if out.tobytes() != ref:
                return None
    except Exception:  # noqa: BLE001 - any failure: use the public path
        return None
    return name


def resample_affine(
    native: np.ndarray, native_valid: np.ndarray, affine: np.ndarray, out_px: int, *, order: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``native`` at ``affine @ (row, col, 1)`` for every chip pixel.

    Args:
        native: float32 ``(C, h, w)``.
        native_valid: float32 ``(h, w)``, 1 where the native pixel holds data, else 0.
        affine: ``(2, 3)`` map from chip index coordinates to native index coordinates.
        out_px: chip side in pixels.
        order: 0 nearest, 1 bilinear, 3 cubic.

    Returns:
        ``(image, valid)``: float32 ``(C, out_px, out_px)`` (0 where invalid) and bool
        ``(out_px, out_px)``, True where every contributing native pixel was valid and the
        sample lies inside the window's footprint (up to half a pixel beyond the outer pixel
        centres, where the edge pixel is repeated).
    """
    c, h, w = native.shape
    if order not in (0, 1):
        matrix = np.eye(3)
        matrix[1:, 1:] = affine[:, :2]
        offset = np.array([0.0, affine[0, 2], affine[1, 2]])
        image = ndimage.affine_transform(
            native, matrix, offset=offset, output_shape=(c, out_px, out_px), order=order, mode="constant", cval=0.0
        )
        vf = ndimage.affine_transform(
            native_valid, affine[:, :2], offset=affine[:, 2], output_shape=(out_px, out_px), order=1,
            mode="constant", cval=0.0, prefilter=False,
        )
        valid = vf > 0.999
        image = np.clip(image, 0.0, 1.0).astype(np.float32)
        image[:, ~valid] = 0.0
        return image, valid
    corners = np.array([[0, 0], [0, out_px - 1], [out_px - 1, 0], [out_px - 1, out_px - 1]], np.float64)
    mapped = corners @ affine[:, :2].T + affine[:, 2]
    if (
        mapped[:, 0].min() >= 0.0
        and mapped[:, 0].max() <= h - 1.0
        and mapped[:, 1].min() >= 0.0
        and mapped[:, 1].max() <= w - 1.0
        and native_valid.all()
    ):
        # common case: the chip lies inside all-valid data; one C-level pass per band
        return _resample_inside(native, affine, out_px, order), np.ones((out_px, out_px), bool)
    idx = np.arange(out_px, dtype=np.float64)
    rr, cc = np.meshgrid(idx, idx, indexing="ij")
    src_r = affine[0, 0] * rr + affine[0, 1] * cc + affine[0, 2] + 1.0  # +1: the border below
    src_c = affine[1, 0] * rr + affine[1, 1] * cc + affine[1, 2] + 1.0
    # a border that repeats the edge pixels, so samples up to half a pixel beyond the outer pixel
    # centres (still inside the raster's footprint) stay valid: no seams between adjacent scenes
    stack = np.empty((c + 1, h + 2, w + 2), np.float32)
    stack[:c] = np.pad(native, ((0, 0), (1, 1), (1, 1)), mode="edge")
    stack[c] = np.pad(native_valid, 1, mode="edge")
    inside = ((src_r >= 0.5) & (src_r <= h + 0.5) & (src_c >= 0.5) & (src_c <= w + 0.5)).ravel()
    flat = stack.reshape(c + 1, -1)
    wp = w + 2
    if order == 0:
        r = np.clip(np.rint(src_r), 0, h + 1).astype(np.intp)
        q = np.clip(np.rint(src_c), 0, w + 1).astype(np.intp)
        out = flat[:, (r * wp + q).ravel()]
    else:
        r0 = np.floor(src_r)
        c0 = np.floor(src_c)
        fr = (src_r - r0).astype(np.float32).ravel()
        fc = (src_c - c0).astype(np.float32).ravel()
        r0 = np.clip(r0, 0, h + 1).astype(np.intp).ravel()
        c0 = np.clip(c0, 0, w + 1).astype(np.intp).ravel()
        r1 = np.minimum(r0 + 1, h + 1)
        c1 = np.minimum(c0 + 1, w + 1)
        out = (
            flat[:, r0 * wp + c0] * ((1 - fr) * (1 - fc))
            + flat[:, r0 * wp + c1] * ((1 - fr) * fc)
            + flat[:, r1 * wp + c0] * (fr * (1 - fc))
            + flat[:, r1 * wp + c1] * (fr * fc)
        )
    out[c, ~inside] = 0.0
    out = out.reshape(c + 1, out_px, out_px)
    valid = out[c] > 0.999
    image = np.clip(out[:c], 0.0, 1.0)
    image[:, ~valid] = 0.0
    return image.astype(np.float32, copy=False), valid
