"""Chip-grid maths, pure and apart from I/O.

Every pair is cut on one local metric grid centred on the site: a north-up square of
``size_m`` metres on the ellipsoid's tangent plane at the site (a local azimuthal-equidistant
grid; over a few hundred metres the difference is below a millimetre), sampled at ``chip_px``
pixels. Chip pixel ``(r, c)`` (array index, pixel centres at integers) sits at::

    east  = (c + 0.5 - chip_px / 2) * gsd
    north = (chip_px / 2 - r - 0.5) * gsd

A few control points of that grid are transformed to each scene's CRS in one batched call per
CRS, and an affine map from chip indices to scene array indices is fitted to them, so resampling
a native window is one small ``scipy.ndimage.affine_transform``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = [
    "WGS84_A",
    "WGS84_E2",
    "chip_size_m_for",
    "control_points_rc",
    "chip_offsets_m",
    "offsets_to_lonlat",
    "footprint_half_extent_m",
    "fit_affine",
    "pixel_coords",
    "coverage_fraction",
    "native_window",
    "lon_overlap",
    "wrap_lon_towards",
]

WGS84_A = 6_378_137.0
WGS84_E2 = 6.694379990141317e-3


def footprint_half_extent_m(footprint: Mapping[str, Any], lon0: float, lat0: float) -> float:
    """Largest distance in metres along east or north from ``(lon0, lat0)`` to a footprint vertex."""

    def positions(obj: Any) -> list[tuple[float, float]]:
        if isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], (int, float)):
            return [(float(obj[0]), float(obj[1]))]
        out: list[tuple[float, float]] = []
        if isinstance(obj, (list, tuple)):
            for item in obj:
                out.extend(positions(item))
        return out

    pts = positions(footprint.get("coordinates", []))
    if not pts:
        return 0.0
    m_per_deg_lat, m_per_deg_lon = _metres_per_degree(lat0)
    return max(max(abs(lon - lon0) * m_per_deg_lon, abs(lat - lat0) * m_per_deg_lat) for lon, lat in pts)


def chip_size_m_for(
    *,
    chip_size_m: float,
    radius_m: float | None,
    footprint_half_m: float | None,
    radius_scale: float,
    max_chip_size_m: float,
) -> float:
    """Window side in metres: the default, widened for a site's radius or footprint, capped."""
    size = chip_size_m
    if radius_m and radius_m > 0:
        size = max(size, 2.0 * radius_m * radius_scale)
    if footprint_half_m and footprint_half_m > 0:
        size = max(size, 2.0 * footprint_half_m * radius_scale)
    return float(min(size, max(max_chip_size_m, chip_size_m)))


def control_points_rc(chip_px: int, n: int = 3) -> np.ndarray:
    """Chip index coordinates of an ``n x n`` grid of control points spanning the chip edges.

    Returns:
        float64 array of shape ``(n * n, 2)`` holding ``(row, col)``.
    """
    edge = np.linspace(-0.5, chip_px - 0.5, n)
    rr, cc = np.meshgrid(edge, edge, indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], axis=1)


def chip_offsets_m(rc: np.ndarray, chip_px: int, gsd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """East/north offsets in metres of chip coordinates, for each site's GSD.

    Args:
        rc: ``(K, 2)`` chip ``(row, col)`` index coordinates.
        chip_px: chip side in pixels.
        gsd: ``(N,)`` metres per chip pixel.

    Returns:
        ``(east, north)``, each ``(N, K)``.
    """
    east = (rc[None, :, 1] + 0.5 - chip_px / 2) * gsd[:, None]
    north = (chip_px / 2 - rc[None, :, 0] - 0.5) * gsd[:, None]
    return east, north


def _metres_per_degree(lat_deg: np.ndarray | float) -> tuple[Any, Any]:
    """Metres per degree of latitude and of longitude on WGS84 at ``lat_deg``."""
    phi = np.radians(lat_deg)
    s2 = np.sin(phi) ** 2
    w = np.sqrt(1.0 - WGS84_E2 * s2)
    m_radius = WGS84_A * (1 - WGS84_E2) / w**3  # meridional radius of curvature
    n_radius = WGS84_A / w  # prime vertical radius of curvature
    return np.radians(1.0) * m_radius, np.radians(1.0) * n_radius * np.cos(phi)


def offsets_to_lonlat(
    lon0: np.ndarray, lat0: np.ndarray, east: np.ndarray, north: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Tangent-plane offsets (metres) around ``(lon0, lat0)`` to WGS84 degrees.

    Args:
        lon0, lat0: ``(N,)`` site centres in degrees.
        east, north: ``(N, K)`` offsets in metres.

    Returns:
        ``(lon, lat)``, each ``(N, K)``.
    """
    m_lat, m_lon = _metres_per_degree(lat0)
    lat = lat0[:, None] + north / m_lat[:, None]
    lon = lon0[:, None] + east / np.maximum(m_lon[:, None], 1e-6)
    return lon, lat


def pixel_coords(
    transform: tuple[float, float, float, float, float, float], x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """CRS coordinates to array index coordinates ``(row, col)`` (pixel centres at integers)."""
    a, b, c, d, e, f = transform
    det = a * e - b * d
    ia, ib = e / det, -b / det
    id_, ie = -d / det, a / det
    dx, dy = x - c, y - f
    col = ia * dx + ib * dy
    row = id_ * dx + ie * dy
    return row - 0.5, col - 0.5


def fit_affine(rc: np.ndarray, dst_rows: np.ndarray, dst_cols: np.ndarray) -> np.ndarray:
    """Least-squares affine maps from chip index coordinates to scene index coordinates.

    Args:
        rc: ``(K, 2)`` chip control points ``(row, col)`` (the same for every site).
        dst_rows, dst_cols: ``(N, K)`` scene index coordinates of those points per site.

    Returns:
        float64 ``(N, 2, 3)``: ``[[m_rr, m_rc, t_r], [m_cr, m_cc, t_c]]`` so that
        ``scene = M[:, :2] @ (row, col) + M[:, 2]``.
    """
    design = np.column_stack([rc[:, 0], rc[:, 1], np.ones(len(rc))])  # (K, 3)
    pinv = np.linalg.pinv(design)  # (3, K)
    coef_r = dst_rows @ pinv.T  # (N, 3)
    coef_c = dst_cols @ pinv.T
    return np.stack([coef_r, coef_c], axis=1)


def coverage_fraction(affine: np.ndarray, chip_px: int, height: int, width: int) -> np.ndarray:
    """Approximate fraction of each chip that falls inside a ``height x width`` raster.

    Uses the bounding box of the mapped chip corners (exact for north-up grids).

    Args:
        affine: ``(N, 2, 3)`` maps from :func:`fit_affine`.

    Returns:
        ``(N,)`` float in ``[0, 1]``.
    """
    corners = np.array([[-0.5, -0.5], [-0.5, chip_px - 0.5], [chip_px - 0.5, -0.5], [chip_px - 0.5, chip_px - 0.5]])
    pts = np.einsum("nij,kj->nki", affine[:, :, :2], corners) + affine[:, None, :, 2]  # (N, 4, 2)
    # index coordinates -> edge coordinates
    r0, r1 = pts[..., 0].min(1) + 0.5, pts[..., 0].max(1) + 0.5
    c0, c1 = pts[..., 1].min(1) + 0.5, pts[..., 1].max(1) + 0.5
    area = np.maximum((r1 - r0) * (c1 - c0), 1e-12)
    ir = np.clip(np.minimum(r1, height) - np.maximum(r0, 0), 0, None)
    ic = np.clip(np.minimum(c1, width) - np.maximum(c0, 0), 0, None)
    return np.clip(ir * ic / area, 0.0, 1.0)


def native_window(
    affine: np.ndarray, chip_px: int, height: int, width: int, margin_px: float = 0.0
) -> tuple[int, int, int, int] | None:
    """The native pixel window needed to resample one chip, clipped to the raster.

    Args:
        affine: ``(2, 3)`` map of one site.
        margin_px: extra chip pixels on every side (room for a co-registration shift).

    Returns:
        ``(row_off, col_off, height, width)``, or None when the chip misses the raster.
    """
    lo, hi = -0.5 - margin_px, chip_px - 0.5 + margin_px
    corners = np.array([[lo, lo], [lo, hi], [hi, lo], [hi, hi]])
    pts = corners @ affine[:, :2].T + affine[:, 2]
    r0 = max(int(math.floor(pts[:, 0].min())) - 1, 0)
    c0 = max(int(math.floor(pts[:, 1].min())) - 1, 0)
    r1 = min(int(math.ceil(pts[:, 0].max())) + 2, height)
    c1 = min(int(math.ceil(pts[:, 1].max())) + 2, width)
    if r1 <= r0 or c1 <= c0:
        return None
    return r0, c0, r1 - r0, c1 - c0


def lon_overlap(lon_min: np.ndarray, lon_max: np.ndarray, west: float, east: float) -> np.ndarray:
    """Whether longitude intervals overlap a scene's ``[west, east]``, across the antimeridian.

    A scene that crosses 180° has ``east < west`` (GDAL's convention for such bounds), and a
    chip near 180° may extend beyond ±180, so the test is made on the circle.

    Args:
        lon_min, lon_max: ``(N,)`` degrees, ``lon_min <= lon_max`` (values may exceed ±180).
        west, east: the scene's longitude bounds in degrees.

    Returns:
        ``(N,)`` bool.
    """
    if east < west:
        east += 360.0
    hit = np.zeros(np.shape(lon_min), dtype=bool)
    for k in (-360.0, 0.0, 360.0):
        hit |= (lon_max + k >= west) & (lon_min + k <= east)
    return hit


def wrap_lon_towards(lon: np.ndarray, centre: float) -> np.ndarray:
    """Longitudes shifted by whole turns (per row) to lie nearest to ``centre``.

    For rasters in a geographic CRS whose x runs beyond ±180 (e.g. 179.5..180.5): a site at
    -179.8 sits at x = 180.2 there.

    Args:
        lon: ``(N, K)`` degrees (one row per site).
        centre: the scene's centre longitude in its own x range.

    Returns:
        ``(N, K)`` degrees, each row shifted by the same multiple of 360.
    """
    turns = np.round((centre - lon.mean(axis=1, keepdims=True)) / 360.0)
    return lon + 360.0 * turns
