"""The batch plan orders each scene group's sites along a space-filling curve."""

from __future__ import annotations

import math

import numpy as np

from detect.pipeline import SPATIAL_CELL_M, plan_batches, spatial_order
from tiles.catalog import RasterCatalog
from tiles.config import TilesConfig
from tiles.sites import read_sites
from tiles.types import Site

DEG = SPATIAL_CELL_M / 111_320.0  # one cell of latitude


def _site(i: int, lon: float, lat: float) -> Site:
    return Site(site_id=f"s{i:03d}", lon=lon, lat=lat)


def _path_length(sites, order) -> float:
    xy = np.array([(sites[i].lon, sites[i].lat) for i in order])
    return float(np.abs(np.diff(xy, axis=0)).sum())


def test_neighbours_follow_each_other_and_cells_keep_input_order():
    rng = np.random.default_rng(0)
    # 400 sites on a 20 x 20 grid of cells, in random input order
    cells = [(cx, cy) for cx in range(20) for cy in range(20)]
    rng.shuffle(cells)
    sites = [_site(i, 30.0 + (cx + 0.5) * DEG, 10.0 - (cy + 0.5) * DEG) for i, (cx, cy) in enumerate(cells)]
    members = list(range(len(sites)))
    order = spatial_order(sites, members)
    assert sorted(order) == members  # a permutation: every site exactly once
    assert order == spatial_order(sites, members)  # deterministic
    # the walk is far shorter than the input order's (a Z-curve over the cells)
    assert _path_length(sites, order) < 0.25 * _path_length(sites, members)
    # the first site is the north-west corner cell
    first = sites[order[0]]
    assert math.isclose(first.lon, 30.0 + 0.5 * DEG) and math.isclose(first.lat, 10.0 - 0.5 * DEG)
    # two sites in one cell keep their input order
    twin = sites + [_site(400, sites[order[5]].lon, sites[order[5]].lat - DEG / 100)]  # just south, same cell
    order2 = spatial_order(twin, list(range(len(twin))))
    assert order2.index(400) == order2.index(order[5]) + 1


def test_sites_without_coordinates_come_last_in_input_order():
    sites = [_site(0, 10.0, 50.0), _site(1, math.nan, math.nan), _site(2, 10.0 + DEG, 50.0), _site(3, math.nan, 1.0)]
    assert spatial_order(sites, [0, 1, 2, 3]) == [0, 2, 1, 3]


def test_a_group_across_the_antimeridian_stays_together():
    step = 3 * DEG / math.cos(math.radians(17.0))  # three cells apart: one site per cell
    east = [_site(i, 179.9999 - i * step, -17.0) for i in range(3)]
    west = [_site(3 + i, -179.9999 + i * step, -17.0) for i in range(3)]
    sites = [east[0], west[0], east[1], west[1], east[2], west[2]]
    order = spatial_order(sites, list(range(6)))
    lons = [sites[i].lon % 360 for i in order]
    assert lons == sorted(lons)  # west to east through 180


def test_plan_covers_every_site_once_in_spatial_order_within_groups(tiny_scene):
    sites = read_sites(tiny_scene.sites)
    before = RasterCatalog.from_paths([tiny_scene.before], epoch="before")
    after = RasterCatalog.from_paths([tiny_scene.after], epoch="after")
    plan = plan_batches(sites, before, after, batch_size=3, tiles=TilesConfig())
    flat = [i for b in plan for i in b.site_indices]
    assert sorted(flat) == list(range(len(sites)))
    for group in {b.group for b in plan if b.group}:
        members = [i for b in plan if b.group == group for i in b.site_indices]
        assert members == spatial_order(sites, sorted(members))
