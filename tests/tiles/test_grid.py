"""Pure chip-grid maths against pyproj."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import CRS, Transformer

from tiles import grid


@pytest.mark.parametrize("lat0", [0.0, 38.5, -62.0])
def test_tangent_plane_matches_azimuthal_equidistant(lat0):
    lon0 = 12.3
    rc = grid.control_points_rc(128, 5)
    east, north = grid.chip_offsets_m(rc, 128, np.array([4.0]))  # 512 m chip
    lon, lat = grid.offsets_to_lonlat(np.array([lon0]), np.array([lat0]), east, north)
    aeqd = CRS.from_proj4(f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m")
    x, y = Transformer.from_crs("EPSG:4326", aeqd, always_xy=True).transform(lon, lat)
    assert np.abs(x - east).max() < 0.02 and np.abs(y - north).max() < 0.02  # 2 cm over 512 m


def test_affine_fit_and_window():
    rc = grid.control_points_rc(128, 3)
    true = np.array([[0.9, 0.1, 50.0], [-0.1, 0.9, 70.0]])
    pts = rc @ true[:, :2].T + true[:, 2]
    fitted = grid.fit_affine(rc, pts[None, :, 0], pts[None, :, 1])[0]
    assert np.allclose(fitted, true)
    assert grid.coverage_fraction(fitted[None], 128, 1000, 1000)[0] == pytest.approx(1.0)
    assert grid.coverage_fraction(fitted[None], 128, 100, 1000)[0] < 0.5
    r0, c0, h, w = grid.native_window(fitted, 128, 1000, 1000)
    assert r0 <= 50 - 0.5 and c0 <= 70 - 13 and r0 + h >= 50 + 0.9 * 127 + 13 and c0 + w >= 70 + 0.9 * 127
    assert grid.native_window(fitted, 128, 10, 10) is None


def test_chip_size_for_sites():
    kw = dict(chip_size_m=64.0, radius_scale=2.0, max_chip_size_m=512.0)
    assert grid.chip_size_m_for(radius_m=None, footprint_half_m=None, **kw) == 64.0
    assert grid.chip_size_m_for(radius_m=30.0, footprint_half_m=None, **kw) == 120.0
    assert grid.chip_size_m_for(radius_m=None, footprint_half_m=200.0, **kw) == 512.0
    square = {"type": "Polygon", "coordinates": [[[0, 0], [0.001, 0], [0.001, 0.001], [0, 0.001], [0, 0]]]}
    assert grid.footprint_half_extent_m(square, 0.0005, 0.0005) == pytest.approx(55.7, abs=0.2)


def test_longitude_overlap_on_the_circle():
    import numpy as np

    from tiles.grid import lon_overlap, wrap_lon_towards

    lo = np.array([10.0, 179.99, -180.01, -179.9, 170.0])
    hi = np.array([10.1, 180.01, -179.99, -179.8, 170.1])
    # a scene from 179.9 E across 180 to 179.9 W (GDAL writes it west > east)
    assert lon_overlap(lo, hi, 179.9, -179.85).tolist() == [False, True, True, True, False]
    # an ordinary scene near 180 still meets a chip that sticks out past -180
    assert lon_overlap(lo, hi, 179.95, 180.0).tolist() == [False, True, True, False, False]
    assert lon_overlap(lo, hi, 9.0, 11.0).tolist() == [True, False, False, False, False]
    wrapped = wrap_lon_towards(np.array([[-179.8, -179.7], [10.0, 10.1]]), 180.0)
    assert np.allclose(wrapped, [[180.2, 180.3], [10.0, 10.1]])
