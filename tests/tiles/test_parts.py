"""tiles.parts: part grids, footprint clipping, the max_parts policy and the context ring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sitewatch.config import build_config
from sitewatch.errors import ConfigError
from tiles import grid
from tiles.config import PartsConfig, TilesConfig
from tiles.parts import (
    PART_SEPARATOR,
    needs_parts,
    plan_context,
    plan_parts,
    plan_site,
    site_extent,
    window_meets_polygon,
)
from tiles.types import Site

LON0, LAT0 = 30.0, 10.0


def _footprint(corners_m: list[tuple[float, float]]) -> dict:
    """A GeoJSON Polygon from east/north metres around (LON0, LAT0)."""
    east = np.array([[c[0] for c in corners_m]])
    north = np.array([[c[1] for c in corners_m]])
    lon, lat = grid.offsets_to_lonlat(np.array([LON0]), np.array([LAT0]), east, north)
    ring = [[float(a), float(b)] for a, b in zip(lon[0], lat[0])]
    return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


def _cover(parts, chip: float, pts: np.ndarray) -> np.ndarray:
    """Which points lie in at least one part window."""
    hit = np.zeros(len(pts), bool)
    for p in parts:
        hit |= (np.abs(pts[:, 0] - p.east_m) <= chip / 2) & (np.abs(pts[:, 1] - p.north_m) <= chip / 2)
    return hit


def test_point_site_has_no_parts_but_a_context_ring() -> None:
    tiles = TilesConfig()
    site = Site("s1", LON0, LAT0)
    assert not needs_parts(site, tiles)
    parts, stride, coarsened, _ = plan_parts(site, tiles)
    assert parts == () and math.isnan(stride) and not coarsened
    ctx = plan_context(site, tiles)
    assert len(ctx) == tiles.parts.context_count
    for w in ctx:
        d = math.hypot(w.east_m, w.north_m)
        assert 32.0 + 100.0 - 1e-6 <= d <= 32.0 + 300.0 + 1e-6
        assert w.site.site_id.startswith("s1" + PART_SEPARATOR + "c")


def test_radius_site_is_covered_by_overlapping_native_chips() -> None:
    tiles = TilesConfig()
    site = Site("h", LON0, LAT0, radius_m=75.0, kind="hospital")
    assert needs_parts(site, tiles)
    parts, stride, coarsened, nominal = plan_parts(site, tiles)
    # 150 m at stride 48 m with 64 m chips: ceil((150 - 64) / 48) + 1 = 3 per axis
    assert stride == pytest.approx(48.0) and not coarsened and nominal == 9 and len(parts) == 9
    assert all(p.size_m == 64.0 and p.site.radius_m is None and p.site.footprint is None for p in parts)
    xs = np.linspace(-75, 75, 31)
    pts = np.array([(x, y) for x in xs for y in xs])
    assert _cover(parts, 64.0, pts).all()
    # each part's point site sits where its offset says (metres back from degrees)
    m_lat, m_lon = grid._metres_per_degree(LAT0)
    for p in parts:
        assert (p.site.lon - LON0) * m_lon == pytest.approx(p.east_m, abs=1e-3)
        assert (p.site.lat - LAT0) * m_lat == pytest.approx(p.north_m, abs=1e-3)
    assert [p.name for p in parts] == [f"p{k:02d}" for k in range(9)]
    # reading order: north row first, west to east
    assert parts[0].north_m > parts[-1].north_m and parts[0].east_m < parts[1].east_m


def test_kind_default_radius_and_unknown_kind() -> None:
    tiles = TilesConfig()
    hospital = Site("h", LON0, LAT0, kind="Hospital")
    ext = site_extent(hospital, tiles)
    assert ext is not None and ext.source == "kind" and ext.side_m == pytest.approx(200.0)
    assert len(plan_parts(hospital, tiles)[0]) == 16  # ceil(136 / 48) + 1 = 4 per axis
    assert not needs_parts(Site("x", LON0, LAT0, kind="bakery"), tiles)
    custom = build_config(TilesConfig, {"parts": {"kind_radius_m": {"bakery": 40.0}}})
    assert needs_parts(Site("x", LON0, LAT0, kind="bakery"), custom)


def test_footprint_clip_keeps_only_windows_that_meet_it() -> None:
    # an L-shaped compound: a 200 x 40 m wing along the south and a 40 x 200 m wing along the west
    corners = [(-100, -100), (100, -100), (100, -60), (-60, -60), (-60, 100), (-100, 100)]
    site = Site("L", LON0, LAT0, footprint=_footprint(corners))
    tiles = TilesConfig()
    parts, _, _, nominal = plan_parts(site, tiles)
    assert nominal == 16 and 0 < len(parts) < nominal
    ext = site_extent(site, tiles)
    assert ext is not None and ext.source == "footprint"
    for p in parts:
        assert window_meets_polygon(p.east_m, p.north_m, 32.0, ext.rings)
    # the north-east corner window (far from both wings) is gone, every footprint point is covered
    assert not any(p.east_m > 40 and p.north_m > 40 for p in parts)
    pts = np.array([(x, y) for x in np.linspace(-100, 100, 41) for y in np.linspace(-100, -60, 9)])
    assert _cover(parts, 64.0, pts).all()
    unclipped = build_config(TilesConfig, {"parts": {"clip_to_footprint": False}})
    assert len(plan_parts(site, unclipped)[0]) == 16


def test_window_meets_polygon_exact_cases() -> None:
    square = [np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])]
    assert window_meets_polygon(5, 5, 1, square)  # inside, touching no edge
    assert window_meets_polygon(5, 5, 100, square)  # polygon inside the window
    assert window_meets_polygon(12, 5, 2.5, square)  # overlaps an edge
    assert not window_meets_polygon(14, 5, 2.5, square)
    assert not window_meets_polygon(14, 14, 3.9, square)  # near the corner, diagonal gap
    assert window_meets_polygon(14, 14, 4.0, square)  # touches the corner


def test_max_parts_widens_the_stride_and_records_it() -> None:
    tiles = build_config(TilesConfig, {"parts": {"max_parts": 10}})
    site = Site("big", LON0, LAT0, radius_m=200.0)
    parts, stride, coarsened, nominal = plan_parts(site, tiles)
    assert nominal == 64 and coarsened and len(parts) <= 10 and stride > 48.0
    roomy = build_config(TilesConfig, {"parts": {"max_parts": 64}})
    full = plan_parts(site, roomy)
    assert not full[2] and len(full[0]) == 64 and full[1] == pytest.approx(48.0)


def test_max_parts_policy_holds_for_any_size() -> None:
    for radius in (40.0, 100.0, 300.0, 1000.0):
        for cap in (1, 4, 25):
            tiles = build_config(TilesConfig, {"parts": {"max_parts": cap}})
            parts, stride, coarsened, _ = plan_parts(Site("s", LON0, LAT0, radius_m=radius), tiles)
            assert 1 <= len(parts) <= cap
            assert coarsened == (stride > 48.0 + 1e-9)


def test_context_ring_bounds_and_footprint() -> None:
    tiles = build_config(TilesConfig, {"parts": {"context_inner_m": 50.0, "context_outer_m": 150.0, "context_count": 20}})
    site = Site("h", LON0, LAT0, footprint=_footprint([(-60, -40), (60, -40), (60, 40), (-60, 40)]))
    ctx = plan_context(site, tiles)
    edge = math.hypot(60, 40)
    assert len(ctx) == 20
    dist = [math.hypot(w.east_m, w.north_m) for w in ctx]
    assert min(dist) >= edge + 50 - 1e-6 and max(dist) <= edge + 150 + 1e-6
    angles = sorted(math.atan2(w.north_m, w.east_m) for w in ctx)
    gaps = np.diff(angles + [angles[0] + 2 * math.pi])
    assert gaps.max() < math.radians(60)  # spread all round, not bunched
    plan = plan_site(site, tiles, parts=True, context=False)
    assert plan.context == () and len(plan.parts) == 6 and plan.windows == plan.parts


def test_unusable_site_plans_nothing() -> None:
    bad = Site("bad", float("nan"), float("nan"), radius_m=100.0, problem="lat missing")
    plan = plan_site(bad, TilesConfig(), parts=True, context=True)
    assert plan.extent is None and plan.windows == ()


def test_parts_config_errors_name_the_setting() -> None:
    with pytest.raises(ConfigError) as err:
        build_config(TilesConfig, {"parts": {"max_parts": 0}})
    assert "tiles.parts.max_parts" in str(err.value)
    with pytest.raises(ConfigError) as err:
        PartsConfig(context_inner_m=200.0, context_outer_m=100.0)
    assert err.value.setting == "tiles.parts.context_outer_m"
    with pytest.raises(ConfigError):
        PartsConfig(kind_radius_m={"hospital": -5.0})


def test_multipolygon_and_antimeridian_footprints() -> None:
    tiles = TilesConfig()
    # two 40 x 40 m blocks 120 m apart (a MultiPolygon): the empty middle column of windows is dropped
    west = _footprint([(-80, -20), (-40, -20), (-40, 20), (-80, 20)])["coordinates"]
    east = _footprint([(40, -20), (80, -20), (80, 20), (40, 20)])["coordinates"]
    site = Site("m", LON0, LAT0, footprint={"type": "MultiPolygon", "coordinates": [west, east]})
    parts, _, _, nominal = plan_parts(site, tiles)
    assert nominal == 3 and len(parts) == 2 and {round(p.east_m) for p in parts} == {-48, 48}
    # a 100 m square straddling the antimeridian at the equator is 100 m wide, not 360 degrees
    d = 50.0 / grid._metres_per_degree(0.0)[1]
    ring = [[180 - d, -d], [-180 + d, -d], [-180 + d, d], [180 - d, d], [180 - d, -d]]
    site = Site("am", 180.0 - 1e-9, 0.0, footprint={"type": "Polygon", "coordinates": [ring]})
    ext = site_extent(site, tiles)
    assert ext is not None and ext.side_m == pytest.approx(100.0, rel=1e-3)
    assert len(plan_parts(site, tiles)[0]) == 4
