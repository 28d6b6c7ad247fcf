"""Facilities part by part: a grid of chips at the model's own scale, and a ring of context chips.

Pure geometry (no pixels, no I/O). A site larger than one chip (a footprint, a ``radius_m``, or the
default radius of its ``kind`` in ``tiles.parts.kind_radius_m``) is covered by a grid of
overlapping square windows of ``tiles.chip_size_m`` (64 m at 0.5 m/px by default), instead of one
window of up to ``tiles.max_chip_size_m`` resampled to ``tiles.chip_px``. Each window is an
ordinary point :class:`~tiles.types.Site` at the window's centre, so it is cut, co-registered and
gated by the same :class:`tiles.cut.PairCutter` as any site.

Geometry, on the site's local tangent plane (east, north metres from the site's point; the same
plane :mod:`tiles.grid` cuts on):

* **extent**: the footprint's bounding box, else a square of side ``2 * radius``; the grid is
  centred on the extent's centre.
* **grid**: ``n = max(1, ceil((side - chip) / stride) + 1)`` windows per axis, ``stride = chip *
  (1 - tiles.parts.overlap)``, so the windows cover the extent. With a footprint, only windows that
  meet the polygon are kept (``tiles.parts.clip_to_footprint``).
* **bound**: more than ``tiles.parts.max_parts`` windows widen the stride in 10 % steps until the
  grid fits; the plan records the stride used and that it was coarsened.
* **context ring**: ``tiles.parts.context_count`` windows whose centres lie between
  ``edge + context_inner_m`` and ``edge + context_outer_m`` from the extent's centre, where
  ``edge`` is the footprint's farthest vertex (or the radius; half a chip for a point site). They
  are spread evenly: golden-angle azimuths, distances uniform in area. Windows meeting the
  footprint are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from tiles import grid
from tiles.config import TilesConfig
from tiles.types import Site

__all__ = [
    "PartWindow",
    "SitePlan",
    "SiteExtent",
    "site_extent",
    "needs_parts",
    "plan_parts",
    "plan_context",
    "plan_site",
    "window_meets_polygon",
    "PART_SEPARATOR",
]

#: joins a site id and a window name in the id of the window's own :class:`Site` (``H1@p03``).
PART_SEPARATOR = "@"
#: factor by which the stride is widened while a grid has more than ``max_parts`` windows.
_COARSEN_STEP = 1.1
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))

Role = Literal["part", "context"]
ExtentSource = Literal["footprint", "radius", "kind", "point"]


@dataclass(frozen=True)
class SiteExtent:
    """Where a site lies on its local plane.

    Attributes:
        source: what gave the extent (``footprint``, ``radius``, ``kind`` default, or ``point``).
        east_min, east_max, north_min, north_max: bounding box, metres from the site's point.
        edge_m: distance from the box centre to the site's farthest point (the footprint's
            farthest vertex, or the radius); half a chip for a point site.
        rings: the footprint's rings in local metres (each ``(K, 2)`` east, north), empty when
            there is no footprint.
    """

    source: ExtentSource
    east_min: float
    east_max: float
    north_min: float
    north_max: float
    edge_m: float
    rings: tuple[np.ndarray, ...] = ()

    @property
    def centre(self) -> tuple[float, float]:
        return (0.5 * (self.east_min + self.east_max), 0.5 * (self.north_min + self.north_max))

    @property
    def side_m(self) -> float:
        """The longer side of the bounding box."""
        return max(self.east_max - self.east_min, self.north_max - self.north_min)


@dataclass(frozen=True)
class PartWindow:
    """One chip window of a site: a part of the facility or a context chip around it.

    Attributes:
        role: ``part`` or ``context``.
        index: 0-based position among the site's windows of this role.
        east_m, north_m: window centre, metres from the site's point.
        size_m: window side (``tiles.chip_size_m``).
        site: the point site cut for this window (id ``<site_id>@p03`` / ``@c05``, no radius or
            footprint, same row and kind as the facility).
    """

    role: Role
    index: int
    east_m: float
    north_m: float
    size_m: float
    site: Site

    @property
    def name(self) -> str:
        """``p03`` for part 3, ``c05`` for context chip 5."""
        return f"{'p' if self.role == 'part' else 'c'}{self.index:02d}"

    @property
    def lon(self) -> float:
        return self.site.lon

    @property
    def lat(self) -> float:
        return self.site.lat

    def corners_lonlat(self, lon0: float, lat0: float) -> list[list[float]]:
        """The window's closed outline ``[[lon, lat], ...]`` (5 points), for maps and reports."""
        h = self.size_m / 2
        east = np.array([[self.east_m - h, self.east_m + h, self.east_m + h, self.east_m - h, self.east_m - h]])
        north = np.array([[self.north_m - h, self.north_m - h, self.north_m + h, self.north_m + h, self.north_m - h]])
        lon, lat = grid.offsets_to_lonlat(np.array([lon0]), np.array([lat0]), east, north)
        return [[float(a), float(b)] for a, b in zip(lon[0], lat[0])]


@dataclass(frozen=True)
class SitePlan:
    """The windows planned for one site.

    Attributes:
        site: the facility.
        extent: its extent (None when the site has no usable coordinates).
        parts: the part windows (empty when the site is not split).
        context: the context windows (empty when context is off).
        stride_m: grid stride used for the parts (NaN without parts).
        coarsened: the stride was widened to keep to ``tiles.parts.max_parts``.
        grid_windows: windows of the uncoarsened grid before clipping to the footprint.
    """

    site: Site
    extent: SiteExtent | None
    parts: tuple[PartWindow, ...] = ()
    context: tuple[PartWindow, ...] = ()
    stride_m: float = float("nan")
    coarsened: bool = False
    grid_windows: int = 0

    @property
    def windows(self) -> tuple[PartWindow, ...]:
        return self.parts + self.context


# -- extent -------------------------------------------------------------------------------------
def _rings(footprint: Mapping[str, Any]) -> list[list[tuple[float, float]]]:
    """Every linear ring of a Polygon or MultiPolygon as ``(lon, lat)`` lists."""
    kind = footprint.get("type")
    coords = footprint.get("coordinates")
    polygons = [coords] if kind == "Polygon" else (coords if kind == "MultiPolygon" else [])
    out: list[list[tuple[float, float]]] = []
    for polygon in polygons or []:
        for ring in polygon or []:
            pts = [(float(p[0]), float(p[1])) for p in ring if isinstance(p, (list, tuple)) and len(p) >= 2]
            if len(pts) >= 3:
                out.append(pts)
    return out


def _to_local(site: Site, ring: Sequence[tuple[float, float]]) -> np.ndarray:
    """``(lon, lat)`` points to east/north metres from the site's point (inverse of grid.offsets)."""
    m_lat, m_lon = grid._metres_per_degree(site.lat)
    arr = np.asarray(ring, dtype=np.float64)
    dlon = (arr[:, 0] - site.lon + 540.0) % 360.0 - 180.0  # the short way round the antimeridian
    return np.stack([dlon * max(float(m_lon), 1e-6), (arr[:, 1] - site.lat) * float(m_lat)], axis=1)


def _usable(site: Site) -> bool:
    return site.problem is None and math.isfinite(site.lon) and math.isfinite(site.lat)


def site_extent(site: Site, tiles: TilesConfig) -> SiteExtent | None:
    """The site's extent: footprint, else ``radius_m``, else its kind's default radius, else a point.

    Returns:
        None for a site without usable coordinates.
    """
    if not _usable(site):
        return None
    if site.footprint is not None:
        try:
            rings = tuple(_to_local(site, r) for r in _rings(site.footprint))
        except (TypeError, ValueError):
            rings = ()
        rings = tuple(r for r in rings if np.isfinite(r).all())
        if rings:
            pts = np.concatenate(rings)
            e0, n0 = pts.min(axis=0)
            e1, n1 = pts.max(axis=0)
            ce, cn = 0.5 * (e0 + e1), 0.5 * (n0 + n1)
            edge = float(np.hypot(pts[:, 0] - ce, pts[:, 1] - cn).max())
            return SiteExtent("footprint", float(e0), float(e1), float(n0), float(n1), edge, rings)
    radius: float | None = None
    source: ExtentSource = "point"
    if site.radius_m is not None and math.isfinite(site.radius_m) and site.radius_m > 0:
        radius, source = float(site.radius_m), "radius"
    else:
        kind_radius = tiles.parts.radius_for_kind(site.kind)
        if kind_radius is not None:
            radius, source = kind_radius, "kind"
    if radius is None:
        h = tiles.chip_size_m / 2
        return SiteExtent("point", -h, h, -h, h, h)
    return SiteExtent(source, -radius, radius, -radius, radius, radius)


def needs_parts(site: Site, tiles: TilesConfig) -> bool:
    """Whether the site is larger than one chip (its extent's longer side exceeds ``chip_size_m``)."""
    ext = site_extent(site, tiles)
    return ext is not None and ext.source != "point" and ext.side_m > tiles.chip_size_m


# -- polygon tests --------------------------------------------------------------------------------
def _point_in_rings(x: float, y: float, rings: Sequence[np.ndarray]) -> bool:
    """Even-odd rule over all rings (holes and multipolygons count naturally)."""
    inside = False
    for ring in rings:
        xs, ys = ring[:, 0], ring[:, 1]
        xj, yj = np.roll(xs, 1), np.roll(ys, 1)
        cross = (ys > y) != (yj > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = xj + (y - yj) * (xs - xj) / (ys - yj)
        inside ^= bool(np.count_nonzero(cross & (x < at)) % 2)
    return inside


def _segment_meets_box(p: np.ndarray, q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
    """Liang-Barsky: does segment ``p -> q`` touch the axis-aligned box ``[lo, hi]``?"""
    t0, t1 = 0.0, 1.0
    d = q - p
    for axis in range(2):
        if abs(d[axis]) < 1e-12:
            if p[axis] < lo[axis] or p[axis] > hi[axis]:
                return False
            continue
        a = (lo[axis] - p[axis]) / d[axis]
        b = (hi[axis] - p[axis]) / d[axis]
        if a > b:
            a, b = b, a
        t0, t1 = max(t0, a), min(t1, b)
        if t0 > t1:
            return False
    return True


def window_meets_polygon(east: float, north: float, half_m: float, rings: Sequence[np.ndarray]) -> bool:
    """Whether the square window centred on ``(east, north)`` of half side ``half_m`` meets the polygon.

    Exact: an edge of the polygon touches the window, or the window lies inside the polygon.
    """
    lo = np.array([east - half_m, north - half_m])
    hi = np.array([east + half_m, north + half_m])
    for ring in rings:
        for k in range(len(ring)):
            if _segment_meets_box(ring[k - 1], ring[k], lo, hi):
                return True
    return _point_in_rings(east, north, rings)


# -- planning -------------------------------------------------------------------------------------
def _axis_centres(lo: float, hi: float, chip: float, stride: float) -> np.ndarray:
    side = hi - lo
    n = max(1, math.ceil((side - chip) / stride - 1e-9) + 1) if side > chip else 1
    return 0.5 * (lo + hi) + (np.arange(n) - (n - 1) / 2.0) * stride


def _grid(ext: SiteExtent, chip: float, stride: float, clip: bool) -> list[tuple[float, float]]:
    es = _axis_centres(ext.east_min, ext.east_max, chip, stride)
    ns = _axis_centres(ext.north_min, ext.north_max, chip, stride)
    out = []
    for n in ns[::-1]:  # rows from north to south, each west to east (reading order on a map)
        for e in es:
            if clip and ext.rings and not window_meets_polygon(float(e), float(n), chip / 2, ext.rings):
                continue
            out.append((float(e), float(n)))
    return out


def _window_sites(site: Site, role: Role, offsets: Sequence[tuple[float, float]], size_m: float) -> tuple[PartWindow, ...]:
    if not offsets:
        return ()
    east = np.array([[e for e, _ in offsets]])
    north = np.array([[n for _, n in offsets]])
    lon, lat = grid.offsets_to_lonlat(np.array([site.lon]), np.array([site.lat]), east, north)
    out = []
    for k, (e, n) in enumerate(offsets):
        name = f"{'p' if role == 'part' else 'c'}{k:02d}"
        point = replace(
            site,
            site_id=f"{site.site_id}{PART_SEPARATOR}{name}",
            lon=float(lon[0, k]),
            lat=float(lat[0, k]),
            radius_m=None,
            footprint=None,
            damage=None,
            extra={},
        )
        out.append(PartWindow(role, k, e, n, size_m, point))
    return tuple(out)


def plan_parts(site: Site, tiles: TilesConfig) -> tuple[tuple[PartWindow, ...], float, bool, int]:
    """The part windows of a site larger than one chip (none for a smaller or unusable site).

    Returns:
        ``(parts, stride_m, coarsened, grid_windows)``: the windows in map reading order, the
        stride used, whether it was widened to keep to ``tiles.parts.max_parts``, and how many
        windows the nominal grid had before clipping.
    """
    ext = site_extent(site, tiles)
    if ext is None or ext.source == "point" or ext.side_m <= tiles.chip_size_m:
        return (), float("nan"), False, 0
    cfg = tiles.parts
    chip = tiles.chip_size_m
    stride = chip * (1.0 - cfg.overlap)
    clip = cfg.clip_to_footprint
    offsets = _grid(ext, chip, stride, clip)
    nominal = len(_axis_centres(ext.east_min, ext.east_max, chip, stride)) * len(
        _axis_centres(ext.north_min, ext.north_max, chip, stride)
    )
    coarsened = False
    while len(offsets) > cfg.max_parts:
        stride *= _COARSEN_STEP
        coarsened = True
        offsets = _grid(ext, chip, stride, clip)
    if not offsets:  # a footprint thinner than the grid's gaps: one window on its centre
        offsets = [ext.centre]
    return _window_sites(site, "part", offsets, chip), float(stride), coarsened, nominal


def plan_context(site: Site, tiles: TilesConfig) -> tuple[PartWindow, ...]:
    """The context windows around a site (any size; none for an unusable site)."""
    ext = site_extent(site, tiles)
    if ext is None:
        return ()
    cfg = tiles.parts
    chip = tiles.chip_size_m
    r_in = ext.edge_m + cfg.context_inner_m
    r_out = ext.edge_m + cfg.context_outer_m
    ce, cn = ext.centre
    offsets = []
    k_count = cfg.context_count
    for k in range(k_count):
        u = (k + 0.5) / k_count
        r = math.sqrt(r_in**2 + u * (r_out**2 - r_in**2))
        a = k * _GOLDEN_ANGLE
        e, n = ce + r * math.sin(a), cn + r * math.cos(a)
        if ext.rings and window_meets_polygon(e, n, chip / 2, ext.rings):
            continue
        offsets.append((e, n))
    return _window_sites(site, "context", offsets, chip)


def plan_site(site: Site, tiles: TilesConfig, *, parts: bool, context: bool) -> SitePlan:
    """Part and context windows of one site (either may be switched off)."""
    ext = site_extent(site, tiles)
    if ext is None:
        return SitePlan(site, None)
    part_windows: tuple[PartWindow, ...] = ()
    stride, coarsened, nominal = float("nan"), False, 0
    if parts:
        part_windows, stride, coarsened, nominal = plan_parts(site, tiles)
    ctx = plan_context(site, tiles) if context else ()
    return SitePlan(site, ext, part_windows, ctx, stride, coarsened, nominal)
