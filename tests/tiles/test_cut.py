"""Known-answer tests of pair cutting on seeded GeoTIFFs in two CRSs."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace

import numpy as np
import pytest

from tests.tiles.conftest import LON0, LAT0, lonlat_of, red_centroid
from tiles.catalog import RasterCatalog
from tiles.config import TilesConfig
from tiles.cut import PairCutter, group_sites_by_scene
from tiles.types import Site

CENTRE = (128 - 1) / 2  # chip index coordinate of the site


def _cut(before, after, site, **cfg):
    config = TilesConfig(**cfg)
    b = RasterCatalog.from_paths(before, epoch="before")
    a = RasterCatalog.from_paths(after, epoch="after")
    with PairCutter(b, a, config) as cutter:
        return cutter.cut(site)


def test_marker_lands_at_chip_centre_in_two_crs(make_scene):
    before = make_scene("b.tif", crs="utm", res_m=0.5)
    after = make_scene("a.tif", crs="wgs84", res_m=0.37)
    pair = _cut(before, after, Site("m", LON0, LAT0), normalisation="none", coregister=False)
    assert pair.ok, pair.meta
    assert pair.image.shape == (2, 3, 128, 128) and pair.image.dtype == np.float32
    assert pair.valid.all()
    for epoch in (0, 1):
        r, c = red_centroid(pair.image[epoch])
        assert abs(r - CENTRE) < 0.5 and abs(c - CENTRE) < 0.5, (epoch, r, c)
    # same ground, different CRS and resolution: the two chips agree pixel by pixel
    diff = np.abs(pair.image[0] - pair.image[1])
    assert diff.mean() < 0.03
    assert pair.meta.chip_gsd_m == pytest.approx(0.5)
    assert pair.meta.after_gsd_m == pytest.approx(0.37, rel=0.02)


def test_known_shift_is_recovered_and_applied(make_scene):
    before = make_scene("b.tif", crs="utm")
    # after content moved 2 m east and 1.5 m south: in chip pixels (0.5 m) 4 right, 3 down
    after = make_scene("a.tif", crs="wgs84", shift_m=(2.0, -1.5))
    pair = _cut(before, after, Site("s", LON0, LAT0), normalisation="none")
    m = pair.meta
    assert m.shift_dy_px == pytest.approx(3.0, abs=0.15)
    assert m.shift_dx_px == pytest.approx(4.0, abs=0.15)
    assert m.shift_m == pytest.approx(2.5, abs=0.1)
    assert m.shift_applied and m.coreg_confidence > 0.9
    r, c = red_centroid(pair.image[1])
    assert abs(r - CENTRE) < 0.5 and abs(c - CENTRE) < 0.5
    assert np.abs(pair.image[0] - pair.image[1])[:, pair.valid.all(0)].mean() < 0.03


def test_shift_not_applied_without_coregistration(make_scene):
    before = make_scene("b.tif")
    after = make_scene("a.tif", shift_m=(2.0, 0.0))
    pair = _cut(before, after, Site("s", LON0, LAT0), normalisation="none", coregister=False)
    assert not pair.meta.shift_applied
    r, c = red_centroid(pair.image[1])
    assert c == pytest.approx(CENTRE + 4, abs=0.5)


def test_large_confident_shift_is_misregistered(make_scene):
    before = make_scene("b.tif")
    after = make_scene("a.tif", shift_m=(9.0, 0.0))
    pair = _cut(before, after, Site("s", LON0, LAT0), max_shift_m=4.0)
    assert pair.meta.status == "cannot_assess" and pair.meta.reason == "misregistered"
    assert not pair.meta.shift_applied
    assert pair.meta.shift_m == pytest.approx(9.0, abs=0.2)
    assert "9.0 m" in pair.meta.detail


def test_site_at_scene_edge_reads_what_exists(make_scene, ground):
    before = make_scene("b.tif", size_m=200.0)
    after = make_scene("a.tif", size_m=200.0, crs="wgs84")
    mx, my = ground.marker_xy
    # 16 m from the east edge: 16 of the 32 m east half lies outside -> the east quarter invalid
    lon, lat = lonlat_of(mx + 100.0 - 16.0, my)
    pair = _cut(before, after, Site("edge", lon, lat), coregister=False, min_valid_fraction=0.5)
    assert pair.ok, pair.meta
    frac = pair.valid[0].mean()
    assert frac == pytest.approx(96 / 128, abs=0.01)
    assert pair.valid[0][:, :95].all() and not pair.valid[0][:, 97:].any()
    assert pair.valid[1][:, :94].all() and not pair.valid[1][:, 98:].any()
    for epoch in (0, 1):
        assert (pair.image[epoch][:, ~pair.valid[epoch]] == 0).all()
    strict = _cut(before, after, Site("edge", lon, lat), coregister=False, min_valid_fraction=0.8)
    assert strict.meta.reason == "mostly_nodata"


def test_nodata_gives_mostly_nodata(make_scene, ground):
    mx, my = ground.marker_xy
    before = make_scene("b.tif", nodata=0, nodata_box=(mx - 40, my - 40, mx + 40, my + 10))
    after = make_scene("a.tif")
    pair = _cut(before, after, Site("nd", LON0, LAT0))
    assert pair.meta.status == "cannot_assess" and pair.meta.reason == "mostly_nodata"
    # the box covers the chip from its south edge (my - 32) up to my + 10: chip rows 44..127
    assert pair.valid[0].mean() == pytest.approx(44 / 128, abs=0.01)
    assert pair.valid[0][:43].all() and not pair.valid[0][45:].any()
    assert pair.meta.valid_fraction == pytest.approx(44 / 128, abs=0.01)
    assert "before 34%" in pair.meta.detail and "after 100%" in pair.meta.detail
    assert pair.valid[1].all()


def test_outside_coverage_and_invalid_site(make_scene, ground):
    mx, my = ground.marker_xy
    before = make_scene("b.tif", size_m=200.0)
    after = make_scene("a.tif", size_m=120.0, centre_xy=(mx + 150.0, my))
    b = RasterCatalog.from_paths(before, epoch="before")
    a = RasterCatalog.from_paths(after, epoch="after")
    sites = [
        Site("in_both", *lonlat_of(mx + 70, my)),
        Site("before_only", LON0, LAT0),
        Site("nowhere", LON0 + 1.0, LAT0),
        Site("bad", math.nan, math.nan, problem="lat 123 out of range [-90, 90]"),
        Site("after_only", *lonlat_of(mx + 190, my)),
    ]
    with PairCutter(b, a, TilesConfig(coregister=False)) as cutter:
        pairs = list(cutter.cut_many(sites))
    assert [p.site.site_id for p in pairs] == [s.site_id for s in sites]
    reasons = {p.site.site_id: p.meta.reason for p in pairs}
    assert reasons["before_only"] == "outside_after_coverage"
    assert reasons["nowhere"] == "outside_before_coverage"
    assert reasons["bad"] == "invalid_site" and "123" in pairs[3].meta.detail
    assert reasons["after_only"] == "outside_before_coverage"
    # in_both: before covers 62 of the chip's 64 m, after (from mx + 90) only its east 12 m
    assert reasons["in_both"] == "mostly_nodata"
    assert pairs[0].valid[1].mean() == pytest.approx(12 / 64, abs=0.02)
    assert pairs[0].valid[0].mean() == pytest.approx(62 / 64, abs=0.02)
    assert all(p.image is None for p in pairs[1:])


def test_best_scene_per_epoch_by_coverage_then_time(make_scene, ground):
    mx, my = ground.marker_xy
    b_old = make_scene("before/old.tif", tags={"ACQUISITION_DATETIME": "2020-01-01T10:00:00Z"})
    b_new = make_scene("before/new.tif", tags={"ACQUISITION_DATETIME": "2020-06-01T10:00:00Z"})
    # newest of all, but only partly covers the chip: must lose to full coverage
    make_scene("before/newest_partial.tif", size_m=100.0, centre_xy=(mx + 60, my),
               tags={"ACQUISITION_DATETIME": "2020-07-01T10:00:00Z"})
    make_scene("after/late.tif", tags={"ACQUISITION_DATETIME": "2020-12-01T10:00:00Z"})
    make_scene("after/early.tif", crs="wgs84", tags={"TIFFTAG_DATETIME": "2020:08:01 09:30:00"})
    make_scene("after/unknown.tif")
    before = RasterCatalog.from_paths([b_old.parent], epoch="before")
    after = RasterCatalog.from_paths([b_new.parent.parent / "after" / "*.tif"], epoch="after")
    with PairCutter(before, after, TilesConfig()) as cutter:
        pair = cutter.cut(Site("t", LON0, LAT0))
    assert pair.meta.before_scene == "new"
    assert pair.meta.after_scene == "early"
    assert pair.meta.after_time.isoformat() == "2020-08-01T09:30:00+00:00"
    assert pair.meta.before_time_source == "tag"
    groups = group_sites_by_scene([Site("t", LON0, LAT0), Site("x", 0.0, 0.0)], before, after)
    assert groups == {"new|early": [Site("t", LON0, LAT0)], "-|-": [Site("x", 0.0, 0.0)]}


def test_uint16_scaled_by_scene_percentiles(make_scene):
    # no marker: its saturated red would be clipped by the stretch and dominate the correlation
    before = make_scene("b.tif", dtype="uint16", marker=False)
    after = make_scene("a.tif", marker=False)
    pair = _cut(before, after, Site("u", LON0, LAT0), normalisation="none", coregister=False)
    assert pair.image.min() >= 0 and pair.image.max() <= 1
    # the stretch maps the scene's 0.5..99.5 percentiles to 0..1, so the chips stay comparable
    for band in range(3):
        corr = np.corrcoef(pair.image[0, band].ravel(), pair.image[1, band].ravel())[0, 1]
        assert corr > 0.95
    # stretched, not just divided by 65535
    assert pair.image[0].max() > 0.9


def test_cloud_and_histogram_normalisation(make_scene):
    before = make_scene("b.tif")
    cloudy = make_scene("a_white.tif", white=True)
    pair = _cut(before, cloudy, Site("c", LON0, LAT0))
    assert pair.meta.reason == "cloud" and pair.meta.cloud_fraction > 0.9
    # bright, flat and grey in both epochs at the same place is a roof, not a cloud
    roof = _cut(make_scene("b_white.tif", white=True), cloudy, Site("c", LON0, LAT0))
    assert roof.meta.cloud_fraction < 0.05 and roof.meta.reason != "cloud"
    darker = make_scene("a.tif", crs="wgs84")
    with rasterio_update(darker) as ds:
        ds.write((ds.read() * 0.6).astype("uint8"))
    raw = _cut(before, darker, Site("h", LON0, LAT0), normalisation="none")
    matched = _cut(before, darker, Site("h", LON0, LAT0), normalisation="histogram")
    std = _cut(before, darker, Site("h", LON0, LAT0), normalisation="standardise")
    err = lambda p: float(np.abs(p.image[0] - p.image[1]).mean())  # noqa: E731
    assert err(matched) < 0.5 * err(raw) and err(std) < 0.5 * err(raw)
    assert matched.meta.normalisation == "histogram"


def rasterio_update(path):
    import rasterio

    return rasterio.open(path, "r+")


def test_radius_widens_the_window(make_scene):
    before, after = make_scene("b.tif"), make_scene("a.tif")
    pair = _cut(before, after, Site("r", LON0, LAT0, radius_m=30.0), coregister=False)
    assert pair.meta.chip_size_m == pytest.approx(120.0)
    assert pair.image.shape[-1] == 128
    r, c = red_centroid(pair.image[0])
    assert abs(r - CENTRE) < 0.6 and abs(c - CENTRE) < 0.6


def test_catalog_pickles_and_cutter_rebuilds(make_scene):
    before = RasterCatalog.from_paths(make_scene("b.tif"), epoch="before")
    after = RasterCatalog.from_paths(make_scene("a.tif"), epoch="after")
    b2, a2 = pickle.loads(pickle.dumps((before, after)))
    assert b2.scenes == before.scenes
    with PairCutter(b2, a2, replace(TilesConfig(), max_open_files=1)) as cutter:
        pairs = list(cutter.cut_many([Site("a", LON0, LAT0)] * 3))
        assert len(cutter._open) == 1
    assert all(p.ok for p in pairs)
    assert np.array_equal(pairs[0].image, pairs[2].image)


def test_chip_across_two_scenes_is_mosaicked(make_scene, ground):
    mx, my = ground.marker_xy
    # two before scenes meeting 10 m east of the site; the after scene covers everything
    west = make_scene("before/west.tif", size_m=100.0, centre_xy=(mx - 40.0, my))
    make_scene("before/east.tif", size_m=100.0, centre_xy=(mx + 60.0, my), crs="wgs84")
    after = make_scene("after.tif")
    site = Site("m", LON0, LAT0)
    pair = _cut([west.parent], after, site, normalisation="none", coregister=False)
    assert pair.ok and pair.valid.all()
    assert pair.meta.before_scene == "west" and pair.meta.before_extra_scenes == "east"
    assert np.abs(pair.image[0] - pair.image[1]).mean() < 0.03
    r, c = red_centroid(pair.image[0])
    assert abs(r - CENTRE) < 0.5 and abs(c - CENTRE) < 0.5
    single = _cut([west.parent], after, site, normalisation="none", coregister=False, mosaic=False)
    assert single.meta.before_extra_scenes == ""
    assert single.valid[0].mean() == pytest.approx(84 / 128, abs=0.02)


def test_large_site_reads_decimated_and_still_agrees(make_scene):
    before = make_scene("b.tif", size_m=500.0)
    after = make_scene("a.tif", size_m=500.0, crs="wgs84", res_m=0.4)
    pair = _cut(before, after, Site("big", LON0, LAT0, radius_m=100.0), normalisation="none", coregister=False)
    assert pair.ok and pair.meta.chip_size_m == pytest.approx(400.0)
    assert pair.meta.chip_gsd_m == pytest.approx(400.0 / 128)
    assert np.abs(pair.image[0] - pair.image[1]).mean() < 0.03


def test_unreadable_raster_gives_read_error_and_the_batch_goes_on(make_scene, ground):
    mx, my = ground.marker_xy
    good_after = make_scene("after/good.tif", size_m=100.0, centre_xy=(mx + 60.0, my))
    broken = make_scene("after/broken.tif", size_m=100.0, centre_xy=(mx - 60.0, my))
    before = RasterCatalog.from_paths(make_scene("b.tif", size_m=300.0), epoch="before")
    after = RasterCatalog.from_paths(good_after.parent, epoch="after")
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 3])  # truncated after it was catalogued
    sites = [Site("west", *lonlat_of(mx - 60.0, my)), Site("east", *lonlat_of(mx + 60.0, my))]
    with PairCutter(before, after, TilesConfig()) as cutter:
        pairs = list(cutter.cut_many(sites))
    assert pairs[0].meta.reason == "read_error" and "broken" in pairs[0].meta.detail
    assert pairs[1].ok

