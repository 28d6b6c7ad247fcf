"""The xBD adapter on a tiny xBD-layout folder written by the test itself.

xBD tiles become a georeferenced labelled folder that the tiles stage cuts; the pairs must be
the ones the same imagery gives when it is already a labelled folder of GeoTIFFs.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sitewatch.errors import InputError
from tiles.config import TilesConfig
from train.datasets import load_dataset, load_labelled_folder, load_xbd
from train.xbd import fit_geotransform, import_xbd, parse_wkt_ring, ring_centroid

GSD = 0.5
LON0, LAT0 = -122.7, 38.45
M_PER_DEG_LAT = math.pi / 180 * 6_371_008.8
M_PER_DEG_LON = M_PER_DEG_LAT * math.cos(math.radians(LAT0))
#: the georeference of tile 0: pixel (x, y) -> (lon, lat), rasterio's affine order; tile t lies
#: t * 300 px further east (tiles do not overlap, as in xBD)
TRANSFORM = (GSD / M_PER_DEG_LON, 0.0, LON0, 0.0, -GSD / M_PER_DEG_LAT, LAT0)
BUILDINGS = [(60, 60, "no-damage"), (190, 70, "destroyed"), (70, 190, "no-damage"), (190, 190, "un-classified")]
TILES = TilesConfig(chip_size_m=32.0, chip_px=32)


def _transform(t: int) -> tuple[float, ...]:
    a, b, c, d, e, f = TRANSFORM
    return (a, b, c + 300 * t * a, d, e, f)


def _to_lnglat(x: float, y: float, t: int = 0) -> tuple[float, float]:
    a, b, c, d, e, f = _transform(t)
    return a * x + b * y + c, d * x + e * y + f


def _square(cx: float, cy: float, half: float, to=lambda x, y: (x, y)) -> str:
    pts = [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half), (cx - half, cy - half)]
    return "POLYGON ((" + ", ".join("%.12f %.12f" % to(x, y) for x, y in pts) + "))"


def _images(t: int) -> tuple[np.ndarray, np.ndarray]:
    """(256, 256, 3) uint8 pre and post images of tile ``t``: noise, bright roofs, one burnt."""
    rng = np.random.default_rng(t)
    pre = (rng.random((256, 256, 3)) * 60 + 80).astype(np.uint8)
    for cx, cy, _ in BUILDINGS:
        pre[cy - 10 : cy + 10, cx - 10 : cx + 10] = 220
    post = pre.copy()
    for cx, cy, dmg in BUILDINGS:
        if dmg == "destroyed":
            post[cy - 12 : cy + 12, cx - 12 : cx + 12] = 30
    return pre, post


def _stem(t: int) -> str:
    return f"test-fire_{t:08d}"


def write_xbd_fixture(root: Path, tiles: int = 2) -> None:
    """``tiles`` pre/post PNG pairs of 256 px at 0.5 m with 4 buildings each (one destroyed, one
    un-classified) and their label JSON, in the public xBD layout. ``metadata.gsd`` (1.9) is
    deliberately wrong: the georeference must come from the polygons."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for t in range(tiles):
        stem = _stem(t)
        pre, post = _images(t)
        Image.fromarray(pre).save(root / "images" / f"{stem}_pre_disaster.png")
        Image.fromarray(post).save(root / "images" / f"{stem}_post_disaster.png")
        xy, ll = [], []
        for k, (cx, cy, dmg) in enumerate(BUILDINGS):
            props = {"feature_type": "building", "subtype": dmg, "uid": f"{t}-{k}"}
            xy.append({"properties": props, "wkt": _square(cx, cy, 10)})
            ll.append({"properties": props, "wkt": _square(cx, cy, 10, lambda x, y: _to_lnglat(x, y, t))})
        meta = {"gsd": 1.9, "img_name": f"{stem}_post_disaster.png", "capture_date": "2017-10-11T19:19:41.000Z", "sensor": "GEOEYE01"}
        doc = {"features": {"xy": xy, "lng_lat": ll}, "metadata": meta}
        (root / "labels" / f"{stem}_post_disaster.json").write_text(json.dumps(doc))
        pre_meta = {"capture_date": "2017-06-21T19:09:01.000Z", "sensor": "WORLDVIEW02"}
        (root / "labels" / f"{stem}_pre_disaster.json").write_text(json.dumps({"features": {"xy": []}, "metadata": pre_meta}))


def write_folder_fixture(root: Path, tiles: int = 2) -> None:
    """The same imagery and buildings as :func:`write_xbd_fixture`, as a labelled folder of
    GeoTIFFs already georeferenced (what detect reads)."""
    import rasterio
    from rasterio.transform import Affine

    for epoch in ("before", "after"):
        (root / epoch).mkdir(parents=True)
    rows = []
    for t in range(tiles):
        for epoch, img, when in zip(("before", "after"), _images(t), ("2017-06-21T19:09:01Z", "2017-10-11T19:19:41Z")):
            profile = {"driver": "GTiff", "width": 256, "height": 256, "count": 3, "dtype": "uint8",
                       "crs": "EPSG:4326", "transform": Affine(*_transform(t))}
            with rasterio.open(root / epoch / f"{_stem(t)}.tif", "w", **profile) as dst:
                dst.write(img.transpose(2, 0, 1))
                dst.update_tags(ACQUISITION_DATETIME=when)
        for k, (cx, cy, dmg) in enumerate(BUILDINGS):
            lon, lat = ring_centroid(parse_wkt_ring(_square(cx, cy, 10, lambda x, y: _to_lnglat(x, y, t))))
            rows.append([f"{_stem(t)}:{t}-{k}", repr(lon), repr(lat), _stem(t), dmg])
    with open(root / "sites.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["site_id", "lon", "lat", "tile", "damage"], *rows])


def test_wkt_parsing_and_centroid():
    ring = parse_wkt_ring("POLYGON ((0 0, 4 0, 4 2, 0 2, 0 0))")
    assert ring.shape == (5, 2)
    assert ring_centroid(ring) == pytest.approx((2.0, 1.0))
    assert ring_centroid(parse_wkt_ring("MULTIPOLYGON (((1 1, 3 1, 3 3, 1 3, 1 1)), ((9 9, 10 9, 10 10, 9 9)))")) == pytest.approx((2.0, 2.0))
    with pytest.raises(ValueError):
        parse_wkt_ring("POINT (1 2)")


def test_fit_recovers_a_known_rotated_geotransform():
    # 0.45 m pixels, 2 degrees of rotation, as off-nadir xBD tiles have
    rot = math.radians(2.0)
    sx, sy = 0.45 / M_PER_DEG_LON, 0.45 / M_PER_DEG_LAT
    truth = (sx * math.cos(rot), sx * math.sin(rot), LON0, sy * math.sin(rot), -sy * math.cos(rot), LAT0)

    def to(x, y):
        a, b, c, d, e, f = truth
        return a * x + b * y + c, d * x + e * y + f

    xy = {str(i): parse_wkt_ring(_square(cx, cy, 8)) for i, (cx, cy, _) in enumerate(BUILDINGS)}
    ll = {str(i): parse_wkt_ring(_square(cx, cy, 8, to)) for i, (cx, cy, _) in enumerate(BUILDINGS)}
    fit = fit_geotransform(xy, ll)
    assert fit is not None and fit.n_points == 20
    np.testing.assert_allclose(fit.transform, truth, rtol=1e-7, atol=1e-11)
    assert fit.residual_m < 1e-4 and fit.gsd_m == pytest.approx(0.45, rel=1e-4)
    # one building alone still fixes an affine transform (its vertices are not collinear) ...
    assert fit_geotransform({"0": xy["0"]}, {"0": ll["0"]}) is not None
    # ... two points do not
    two = np.array([[0.0, 0.0], [5.0, 5.0], [10.0, 10.0]])
    assert fit_geotransform({"0": two}, {"0": two * 1e-5}) is None
    assert fit_geotransform(xy, {}) is None


def test_import_tiny_xbd_layout(tmp_path):
    root = tmp_path / "xbd"
    write_xbd_fixture(root)
    ps = load_dataset(f"xbd:{root}", TILES, cache_dir=tmp_path / "cache", progress=False)
    # 3 usable buildings per tile (un-classified left out), 2 tiles
    assert len(ps) == 6 and ps.positives == 2
    assert ps.images.shape == (6, 2, 3, 32, 32) and ps.images.dtype == np.uint8
    assert set(ps.groups) == {_stem(0), _stem(1)}
    assert set(ps.site_ids) == {f"{_stem(t)}:{t}-{k}" for t in range(2) for k in (0, 1, 2)}
    centroids = {f"{_stem(t)}:{t}-{k}": _to_lnglat(cx, cy, t) for t in range(2) for k, (cx, cy, _) in enumerate(BUILDINGS)}
    for sid, lon, lat in zip(ps.site_ids, ps.lon, ps.lat):
        assert (lon, lat) == pytest.approx(centroids[sid], abs=1e-9)
    # each building is cut from its own tile's converted images
    np.testing.assert_array_equal(ps.scenes, ps.groups)
    # GSD came from the polygons (0.5 m), not metadata.gsd (1.9): 32 m = 64 px around the
    # building, so the 20 px bright roof covers about (20/64)^2 ~ 0.1 of the before chip
    pos = ps.images[ps.labels == 1][0]
    bright = (pos[0].mean(axis=0) > 200).mean()
    assert 0.07 < bright < 0.14
    # the destroyed roof is dark after; an intact one is not
    centre = slice(12, 20)
    assert pos[1][:, centre, centre].mean() < pos[0][:, centre, centre].mean() - 50
    neg = ps.images[ps.labels == 0][0]
    assert abs(float(neg[1][:, centre, centre].mean()) - float(neg[0][:, centre, centre].mean())) < 40
    assert ps.data_hash == import_xbd(root, cache_dir=tmp_path / "cache").source_sha256


def test_converted_tiles_are_georeferenced_geotiffs(tmp_path):
    import rasterio

    root = tmp_path / "xbd"
    write_xbd_fixture(root, tiles=1)
    imported = import_xbd(root, cache_dir=tmp_path / "cache", progress=False)
    assert imported.buildings == 4
    with rasterio.open(imported.folder / "after" / f"{_stem(0)}.tif") as ds:
        assert ds.crs.to_epsg() == 4326
        np.testing.assert_allclose(tuple(ds.transform)[:6], TRANSFORM, rtol=1e-9, atol=1e-12)
        assert ds.tags()["ACQUISITION_DATETIME"] == "2017-10-11T19:19:41.000Z" and ds.tags()["SENSOR"] == "GEOEYE01"
        np.testing.assert_array_equal(ds.read().transpose(1, 2, 0), _images(0)[1])  # lossless
    with rasterio.open(imported.folder / "before" / f"{_stem(0)}.tif") as ds:
        assert ds.tags()["ACQUISITION_DATETIME"] == "2017-06-21T19:09:01.000Z"
    with open(imported.folder / "sites.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["damage"] for r in rows] == [d for _, _, d in BUILDINGS] and {r["tile"] for r in rows} == {_stem(0)}


def test_xbd_pairs_equal_the_pairs_of_the_same_imagery_as_a_labelled_folder(tmp_path):
    write_xbd_fixture(tmp_path / "xbd")
    write_folder_fixture(tmp_path / "folder")
    from_xbd = load_xbd(tmp_path / "xbd", TILES, cache_dir=tmp_path / "c1", progress=False)
    from_folder = load_labelled_folder(tmp_path / "folder", TILES, cache_dir=tmp_path / "c2", progress=False)
    assert list(from_xbd.site_ids) == list(from_folder.site_ids)
    diff = np.abs(from_xbd.images.astype(int) - from_folder.images.astype(int))
    # the same pixels through the same cutter: identical up to rounding of the fitted transform
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001, f"xBD and folder pairs differ by up to {diff.max()} levels"
    np.testing.assert_array_equal(from_xbd.labels, from_folder.labels)
    np.testing.assert_allclose(from_xbd.lon, from_folder.lon, atol=1e-9)


def test_cache_is_keyed_on_content_not_file_times(tmp_path, caplog):
    root, cache = tmp_path / "xbd", tmp_path / "cache"
    write_xbd_fixture(root)
    first = load_xbd(root, TILES, cache_dir=cache, progress=False)
    pair_files = sorted((cache / "pairs").iterdir())
    # new file times, same bytes: same conversion, same pairs, nothing remade
    for p in sorted(root.rglob("*.*")):
        os.utime(p, (1_000_000_000, 1_000_000_000))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="train"):
        again = load_xbd(root, TILES, cache_dir=cache, progress=False)
    assert "pairs from cache" in caplog.text and "converting" not in caplog.text
    assert sorted((cache / "pairs").iterdir()) == pair_files and len(list((cache / "xbd").iterdir())) == 1
    np.testing.assert_array_equal(again.images, first.images)
    assert again.data_hash == first.data_hash
    # changed bytes (a building relabelled), same file time: converted and cut again
    label = root / "labels" / f"{_stem(0)}_post_disaster.json"
    stat = label.stat()
    label.write_text(label.read_text().replace('"un-classified"', '"destroyed"'))
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed = load_xbd(root, TILES, cache_dir=cache, progress=False)
    assert changed.data_hash != first.data_hash and len(changed) == 7 and changed.positives == 3
    assert len(list((cache / "xbd").iterdir())) == 2


def test_a_tile_whose_polygon_sets_disagree_is_left_out(tmp_path, caplog):
    root = tmp_path / "xbd"
    write_xbd_fixture(root)
    label = root / "labels" / f"{_stem(1)}_post_disaster.json"
    doc = json.loads(label.read_text())
    far = doc["features"]["lng_lat"][0]
    far["wkt"] = _square(60 + 40, 60, 10, lambda x, y: _to_lnglat(x, y, 1))  # one footprint 20 m from its pixel polygon
    label.write_text(json.dumps(doc))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="train"):
        ps = load_xbd(root, TILES, cache_dir=tmp_path / "cache", progress=False)
    assert set(ps.groups) == {_stem(0)} and len(ps) == 3
    assert "disagree" in caplog.text and _stem(1) in caplog.text


def test_missing_layout_is_clear(tmp_path):
    with pytest.raises(InputError, match="images/ and labels/"):
        load_xbd(tmp_path, TilesConfig(), cache_dir=tmp_path / "c")
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(InputError, match="no .*_post_disaster.json"):
        load_xbd(tmp_path, TilesConfig(), cache_dir=tmp_path / "c")
    (tmp_path / "labels" / "x_post_disaster.json").write_text("{not json")
    for name in ("x_pre_disaster.png", "x_post_disaster.png"):
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "images" / name)
    with pytest.raises(InputError, match="x_post_disaster.json is not a valid xBD label file"):
        load_xbd(tmp_path, TilesConfig(), cache_dir=tmp_path / "c")
