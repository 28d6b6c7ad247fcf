"""Real deliveries that used to break pair cutting silently (issue 10, items 1-6).

Each test writes the kind of GeoTIFF vendors really deliver (11-bit data in uint16, files that
share a name across epochs, BGRN band order, black collars without nodata, a scene across the
antimeridian, a 2 km pixel) and checks the pair against a known answer.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from tests.tiles.conftest import LAT0, LON0, lonlat_of
from tiles.catalog import RasterCatalog
from tiles.config import TilesConfig
from tiles.cut import REASONS, PairCutter
from tiles.index import PAIR_META_COLUMNS, pair_meta_row
from tiles.types import Site

SITE = Site("s", LON0, LAT0)


def _cut(before, after, site=SITE, **cfg):
    b = RasterCatalog.from_paths(before, epoch="before")
    a = RasterCatalog.from_paths(after, epoch="after")
    with PairCutter(b, a, TilesConfig(**cfg)) as cutter:
        return cutter.cut(site)


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])


# -- 1. per-scene scaling is keyed by the file, never the stem ------------------------------------


@pytest.mark.parametrize(
    "before_range, after_range",
    [((0, 2047), (20, 420)), ((20, 420), (0, 2047)), ((0, 2047), (100, 60000))],
    ids=["11bit-then-dim", "dim-then-11bit", "11bit-then-16bit"],
)
def test_16bit_epochs_sharing_a_file_name_are_scaled_with_their_own_statistics(make_scene, before_range, after_range):
    # uint8 reference of the same ground: what the chips must look like
    ref = _cut(make_scene("ref/b.tif", marker=False), make_scene("ref/a.tif", marker=False),
               normalisation="none", coregister=False)
    # the xBD / vendor layout: before/scene.tif and after/scene.tif
    before = make_scene("before/scene.tif", dtype="uint16", value_range=before_range, marker=False)
    after = make_scene("after/scene.tif", dtype="uint16", value_range=after_range, marker=False)
    pair = _cut(before, after, normalisation="none", coregister=False)
    assert pair.ok, pair.meta
    assert pair.meta.blank_fraction < 0.01 and pair.meta.saturated_fraction < 0.01
    for epoch in (0, 1):
        chip = pair.image[epoch]
        clipped = float(((chip <= 0.0) | (chip >= 1.0)).mean())
        assert clipped < 0.02, (epoch, clipped)  # the stretch clips only its 0.5 % tails
        assert chip.max() > 0.8 and chip.min() < 0.2, (epoch, chip.min(), chip.max())
        for band in range(3):
            assert _corr(chip[band], ref.image[epoch][band]) > 0.98
    # the two epochs look alike although their raw values differ by up to 30x
    assert np.abs(pair.image[0] - pair.image[1]).mean() < 0.03


def test_dim_16bit_alone_is_stretched_not_blank(make_scene):
    before = make_scene("b.tif", dtype="uint16", value_range=(0, 300), marker=False)
    after = make_scene("a.tif", dtype="float32", value_range=(0.0, 900.0), marker=False)
    pair = _cut(before, after, normalisation="none", coregister=False)
    assert pair.ok and pair.meta.blank_fraction == 0.0
    assert pair.image[0].max() > 0.8 and np.abs(pair.image[0] - pair.image[1]).mean() < 0.03


# -- 2. a scene across the antimeridian; coverage hints--------------------------------------------------------

UTM60 = "EPSG:32660"


def _antimeridian_raster(path, *, lat: float = 65.0, size_m: float = 200.0, res_m: float = 0.5, seed: int = 3):
    """A UTM 60N raster centred on 180° (so it spans both signs of longitude)."""
    x0, y0 = Transformer.from_crs("EPSG:4326", UTM60, always_xy=True).transform(180.0, lat)
    n = int(size_m / res_m)
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 220, (3, n // 4, n // 4)).astype(np.uint8)
    data = np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=3, dtype="uint8", crs=UTM60,
                       transform=from_origin(x0 - size_m / 2, y0 + size_m / 2, res_m, res_m)) as ds:
        ds.write(data)
    return path


def test_scene_across_the_antimeridian_covers_sites_on_both_sides(tmp_path):
    before = _antimeridian_raster(tmp_path / "before.tif")
    after = _antimeridian_raster(tmp_path / "after.tif")
    b = RasterCatalog.from_paths(before, epoch="before")
    a = RasterCatalog.from_paths(after, epoch="after")
    # about 23 m east and west of 180° at 65° N; a 64 m chip around each lies inside the 200 m scene
    sites = [Site("west_of_180", 179.9995, 65.0), Site("east_of_180", -179.9995, 65.0), Site("on_180", 180.0, 65.0),
             Site("far", -179.9, 65.0)]
    with PairCutter(b, a, TilesConfig(coregister=False, normalisation="none")) as cutter:
        pairs = {p.site.site_id: p for p in cutter.cut_many(sites)}
    for sid in ("west_of_180", "east_of_180", "on_180"):
        assert pairs[sid].ok, pairs[sid].meta
        assert pairs[sid].valid.all()
        assert np.abs(pairs[sid].image[0] - pairs[sid].image[1]).max() < 1e-6
    # the two sides are different ground: the chips differ
    assert np.abs(pairs["west_of_180"].image[0] - pairs["east_of_180"].image[0]).mean() > 0.05
    assert pairs["far"].meta.reason == "outside_before_coverage"
    assert b.scenes_containing(-179.9995, 65.0) == [b.scenes[0]]
    assert b.scenes_containing(179.9995, 65.0) == [b.scenes[0]]
    assert b.scenes_containing(-179.9, 65.0) == []


def test_geographic_scene_beyond_180_is_used(tmp_path):
    # an EPSG:4326 raster whose x runs from 179.999 to 180.001 (GDAL allows it, vendors do it)
    path = tmp_path / "geo.tif"
    n = 400
    dlon, dlat = 0.002 / n, 0.001 / n
    rng = np.random.default_rng(0)
    data = np.repeat(np.repeat(rng.integers(30, 220, (3, n // 4, n // 4)).astype(np.uint8), 4, 1), 4, 2)
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=3, dtype="uint8", crs="EPSG:4326",
                       transform=from_origin(179.999, 10.0005, dlon, dlat)) as ds:
        ds.write(data)
    pair = _cut(path, path, Site("east", -179.9997, 10.0), coregister=False, chip_size_m=20.0, chip_px=32)
    assert pair.ok and pair.valid.all(), pair.meta


def test_web_mercator_scene_across_the_antimeridian_gets_a_hint_not_silence(tmp_path):
    # EPSG:3857 cannot hold x beyond 180° for pyproj: a site east of 180° cannot be placed on
    # such a scene; that must be said, with what to do
    x0, y0 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(179.9995, -16.0)
    path = tmp_path / "merc.tif"
    with rasterio.open(path, "w", driver="GTiff", width=400, height=400, count=3, dtype="uint8", crs="EPSG:3857",
                       transform=from_origin(x0 - 50, y0 + 100, 0.5, 0.5)) as ds:
        ds.write(np.full((3, 400, 400), 120, np.uint8))
    pair = _cut(path, path, Site("east", -179.9995, -16.0), coregister=False)
    if pair.ok:  # a pyproj that wraps Web Mercator x: supported, nothing to hint
        return
    assert pair.meta.reason == "outside_before_coverage"
    assert "antimeridian" in pair.meta.detail and "EPSG:3857" in pair.meta.detail and "reproject" in pair.meta.detail


def test_swapped_lon_lat_gets_a_hint_when_the_swapped_point_is_covered(make_scene):
    before, after = make_scene("b.tif"), make_scene("a.tif")
    swapped = _cut(before, after, Site("sw", LAT0, LON0))  # (45.1, 15.2): both in range, in the sea
    assert swapped.meta.reason == "outside_before_coverage"
    assert "swapped" in swapped.meta.detail and "15.2" in swapped.meta.detail
    nowhere = _cut(before, after, Site("far", LON0 + 1.0, LAT0))
    assert "swapped" not in nowhere.meta.detail


# -- 3. resolution gate and mismatch ----------------------------------------------------------------


def test_a_2km_pixel_is_too_coarse(make_scene):
    before = make_scene("b.tif")
    after = make_scene("a.tif", size_m=6000.0, res_m=2000.0)  # 3 x 3 pixels of 2 km
    pair = _cut(before, after)
    assert pair.meta.status == "cannot_assess" and pair.meta.reason == "too_coarse"
    assert "2000" in pair.meta.detail and "tiles.max_native_gsd_ratio" in pair.meta.detail
    assert pair.meta.after_gsd_m == pytest.approx(2000.0)
    assert "too_coarse" in REASONS
    # a looser gate lets the same pair through (recorded as a strong mismatch)
    loose = _cut(before, after, max_native_gsd_ratio=10_000.0)
    assert loose.meta.reason != "too_coarse" and loose.meta.gsd_mismatch


def test_resolution_mismatch_between_epochs_is_recorded(make_scene):
    before = make_scene("b.tif", res_m=0.3)
    after = make_scene("a.tif", crs="wgs84", res_m=1.2)
    pair = _cut(before, after, coregister=False)
    assert pair.ok, pair.meta  # 1.2 m <= 2.5 x 0.5 m chip GSD
    assert pair.meta.gsd_ratio == pytest.approx(4.0, rel=0.02) and pair.meta.gsd_mismatch
    row = pair_meta_row(pair)
    assert row["gsd_mismatch"] == "true" and float(row["gsd_ratio"]) == pytest.approx(4.0, rel=0.02)
    same = _cut(before, make_scene("a2.tif", res_m=0.4), coregister=False)
    assert same.meta.gsd_ratio == pytest.approx(4 / 3, rel=0.02) and not same.meta.gsd_mismatch
    assert {"gsd_ratio", "gsd_mismatch"} <= set(PAIR_META_COLUMNS)


def test_a_fine_scene_is_preferred_to_an_earlier_coarse_one(make_scene):
    before = make_scene("b.tif")
    make_scene("after/coarse.tif", size_m=400.0, res_m=4.0, tags={"ACQUISITION_DATETIME": "2020-01-01T00:00:00Z"})
    fine = make_scene("after/fine.tif", tags={"ACQUISITION_DATETIME": "2020-02-01T00:00:00Z"})
    pair = _cut(before, fine.parent)
    assert pair.ok and pair.meta.after_scene == "fine", pair.meta


# -- 4. band order from the colour interpretation ----------------------------------------------------


@pytest.mark.parametrize(
    "colorinterp, descriptions, source",
    [
        (["blue", "green", "red", "undefined"], None, "colour_interpretation"),
        (["gray", "undefined", "undefined", "undefined"], ["Blue", "Green", "Red", "Near-Infrared"], "band_description"),
    ],
    ids=["colorinterp", "descriptions"],
)
def test_bgrn_raster_is_read_as_rgb_from_its_tags(make_scene, colorinterp, descriptions, source):
    ref = _cut(make_scene("b.tif"), make_scene("a.tif"), normalisation="none", coregister=False)
    bgrn = make_scene("a_bgrn.tif", band_order="BGRN", colorinterp=colorinterp, descriptions=descriptions)
    pair = _cut(make_scene("b.tif"), bgrn, normalisation="none", coregister=False)
    assert pair.ok
    assert np.abs(pair.image[1] - ref.image[1]).max() < 1e-6
    assert (pair.meta.after_bands, pair.meta.after_band_source) == ("3,2,1", source)
    assert (pair.meta.before_bands, pair.meta.before_band_source) == ("1,2,3", "colour_interpretation")
    row = pair_meta_row(pair)
    assert row["after_bands"] == "3,2,1" and row["after_band_source"] == source


def test_untagged_4band_raster_uses_tiles_bands_with_a_warning(make_scene, caplog):
    ref = _cut(make_scene("b.tif"), make_scene("a.tif"), normalisation="none", coregister=False)
    untagged = make_scene("a_bgrn.tif", band_order="BGRN", colorinterp=["gray", "undefined", "undefined", "undefined"])
    with caplog.at_level(logging.WARNING):
        default = _cut(make_scene("b.tif"), untagged, normalisation="none", coregister=False)
    assert (default.meta.after_bands, default.meta.after_band_source) == ("1,2,3", "tiles.bands")
    assert any("a_bgrn.tif" in r.getMessage() and "tiles.bands" in r.getMessage() for r in caplog.records)
    mapped = _cut(make_scene("b.tif"), untagged, normalisation="none", coregister=False, bands=(3, 2, 1))
    assert mapped.meta.after_bands == "3,2,1"
    assert np.abs(mapped.image[1] - ref.image[1]).max() < 1e-6
    # the catalogue says which bands every scene gives, for the manifest
    cat = RasterCatalog.from_paths(untagged, epoch="after")
    choice = cat.band_choices(TilesConfig(bands=(3, 2, 1)))[cat.scenes[0].scene_id]
    assert (choice.bands, choice.source) == ((3, 2, 1), "tiles.bands")


def test_colour_interpretation_can_be_turned_off(make_scene):
    tagged = make_scene("a.tif", band_order="BGRN", colorinterp=["blue", "green", "red", "undefined"])
    pair = _cut(make_scene("b.tif"), tagged, colour_interpretation=False, normalisation="none", coregister=False)
    assert (pair.meta.after_bands, pair.meta.after_band_source) == ("1,2,3", "tiles.bands")


# -- 5. black scene borders without nodata -----------------------------------------------------------


def _zero_window(path, rows: slice, cols: slice) -> None:
    with rasterio.open(path, "r+") as ds:
        data = ds.read()
        data[:, rows, cols] = 0
        ds.write(data)


def test_black_border_connected_to_the_scene_edge_is_nodata(make_scene, ground):
    mx, my = ground.marker_xy
    # a black collar from 16 m east of the site to the east edge of the 200 m scene, nodata unset
    before = make_scene("b.tif", nodata_box=(mx + 16.0, my - 200, mx + 200, my + 200))
    # a black roof inside the scene, crossing the chip's west edge (not connected to the scene edge)
    _zero_window(before, slice(180, 220), slice(120, 160))  # x mx-40..mx-20, y my-10..my+10
    after = make_scene("a.tif")
    pair = _cut(before, after, coregister=False, normalisation="none")
    assert pair.ok, pair.meta
    v = pair.valid[0]
    assert v[:, :95].all() and not v[:, 97:].any()  # collar (chip columns 96..127) invalid
    assert (pair.image[0][:, 45:83, :23] == 0).all() and pair.valid[0][40:88, :28].all()  # a black roof stays data
    assert pair.meta.valid_fraction == pytest.approx(96 / 128, abs=0.01)
    # a site inside the collar has no data, it is not a black (blank) ok chip
    inside = _cut(before, after, Site("in_collar", *lonlat_of(mx + 60.0, my)), coregister=False)
    assert inside.meta.reason == "mostly_nodata", inside.meta
    # the old behaviour on request
    off = _cut(before, after, coregister=False, normalisation="none", black_border_nodata=False)
    assert off.valid.all()


def test_black_border_is_filled_from_the_next_scene(make_scene, ground):
    mx, my = ground.marker_xy
    collared = make_scene("before/a_collared.tif", nodata_box=(mx + 16.0, my - 200, mx + 200, my + 200),
                          tags={"ACQUISITION_DATETIME": "2020-06-01T00:00:00Z"})
    make_scene("before/b_older.tif", crs="wgs84", tags={"ACQUISITION_DATETIME": "2020-01-01T00:00:00Z"})
    pair = _cut(collared.parent, make_scene("a.tif"), coregister=False, normalisation="none")
    assert pair.ok and pair.valid.all()
    assert (pair.meta.before_scene, pair.meta.before_extra_scenes) == ("a_collared", "b_older")
    assert np.abs(pair.image[0] - pair.image[1]).mean() < 0.03


def test_black_border_of_a_16bit_scene_is_left_out_of_its_stretch(make_scene, ground):
    mx, my = ground.marker_xy
    plain = _cut(make_scene("p.tif", dtype="uint16", marker=False), make_scene("a.tif", marker=False),
                 normalisation="none", coregister=False)
    # 60 % of the scene is black collar: with the zeros in its percentiles the stretch would change
    before = make_scene("b.tif", dtype="uint16", marker=False, nodata_box=(mx - 100, my - 100, mx + 100, my - 40))
    pair = _cut(before, make_scene("a2.tif", marker=False), normalisation="none", coregister=False)
    assert np.abs(pair.image[0] - plain.image[0]).max() < 0.02


# -- 6. NaN areas ------------------------------------------------------------


def test_site_in_a_nan_area_is_mostly_nodata_not_outside(make_scene, ground):
    mx, my = ground.marker_xy
    before = make_scene("b.tif", dtype="float32", value_range=(0.0, 1000.0), nan_box=(mx - 50, my - 50, mx + 50, my + 50))
    pair = _cut(before, make_scene("a.tif"))
    assert pair.meta.reason == "mostly_nodata", pair.meta
    assert pair.meta.valid_fraction == 0.0 and pair.meta.before_scene == "b"
