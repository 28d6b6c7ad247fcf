"""The xBD importer on a tiny xBD-layout folder written by the test itself."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sitewatch.errors import InputError
from tiles.config import TilesConfig
from train.xbd import load_xbd, parse_wkt_ring, ring_centroid

GSD = 0.5
LON0, LAT0 = -122.7, 38.45


def _to_lnglat(x: float, y: float) -> tuple[float, float]:
    m_per_deg_lat = math.pi / 180 * 6_371_008.8
    m_per_deg_lon = m_per_deg_lat * math.cos(math.radians(LAT0))
    return LON0 + x * GSD / m_per_deg_lon, LAT0 - y * GSD / m_per_deg_lat


def _square(cx: float, cy: float, half: float, to=lambda x, y: (x, y)) -> str:
    pts = [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half), (cx - half, cy - half)]
    return "POLYGON ((" + ", ".join("%.9f %.9f" % to(x, y) for x, y in pts) + "))"


def write_xbd_fixture(root: Path, tiles: int = 2) -> None:
    """``tiles`` pre/post PNG pairs of 256 px with 4 buildings each (one destroyed, one
    un-classified) and their label JSON, in the public xBD layout."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    buildings = [(60, 60, "no-damage"), (190, 70, "destroyed"), (70, 190, "no-damage"), (190, 190, "un-classified")]
    for t in range(tiles):
        stem = f"test-fire_{t:08d}"
        pre = (rng.random((256, 256, 3)) * 60 + 80).astype(np.uint8)
        for cx, cy, _ in buildings:
            pre[cy - 10 : cy + 10, cx - 10 : cx + 10] = 220
        post = pre.copy()
        for cx, cy, dmg in buildings:
            if dmg == "destroyed":
                post[cy - 12 : cy + 12, cx - 12 : cx + 12] = 30
        Image.fromarray(pre).save(root / "images" / f"{stem}_pre_disaster.png")
        Image.fromarray(post).save(root / "images" / f"{stem}_post_disaster.png")
        xy, ll = [], []
        for k, (cx, cy, dmg) in enumerate(buildings):
            props = {"feature_type": "building", "subtype": dmg, "uid": f"{t}-{k}"}
            xy.append({"properties": props, "wkt": _square(cx, cy, 10)})
            ll.append({"properties": props, "wkt": _square(cx, cy, 10, _to_lnglat)})
        doc = {"features": {"xy": xy, "lng_lat": ll}, "metadata": {"gsd": 1.9, "img_name": f"{stem}_post_disaster.png"}}
        (root / "labels" / f"{stem}_post_disaster.json").write_text(json.dumps(doc))
        (root / "labels" / f"{stem}_pre_disaster.json").write_text(json.dumps({"features": {"xy": []}}))


def test_wkt_parsing_and_centroid():
    ring = parse_wkt_ring("POLYGON ((0 0, 4 0, 4 2, 0 2, 0 0))")
    assert ring.shape == (5, 2)
    assert ring_centroid(ring) == pytest.approx((2.0, 1.0))
    with pytest.raises(ValueError):
        parse_wkt_ring("POINT (1 2)")


def test_import_tiny_xbd_layout(tmp_path):
    root = tmp_path / "xbd"
    write_xbd_fixture(root)
    tiles = TilesConfig(chip_size_m=32.0, chip_px=32)
    ps = load_xbd(root, tiles, cache_dir=tmp_path / "cache", progress=False)
    # 3 usable buildings per tile (un-classified left out), 2 tiles
    assert len(ps) == 6 and ps.positives == 2
    assert ps.images.shape == (6, 2, 3, 32, 32) and ps.images.dtype == np.uint8
    assert set(ps.groups) == {"test-fire_00000000", "test-fire_00000001"}
    assert np.isfinite(ps.lon).all() and ps.lon.min() > LON0 - 0.01
    # GSD came from the polygons (0.5 m), not metadata.gsd (1.9): 32 m = 64 px around the
    # building, so the 20 px bright roof covers about (20/64)^2 of the before chip
    pos = ps.images[ps.labels == 1][0]
    bright = (pos[0].mean(axis=0) > 200).mean()
    assert 0.05 < bright < 0.2
    # the destroyed roof is dark after; an intact one is not
    centre = slice(12, 20)
    assert pos[1][:, centre, centre].mean() < pos[0][:, centre, centre].mean() - 50
    neg = ps.images[ps.labels == 0][0]
    assert abs(float(neg[1][:, centre, centre].mean()) - float(neg[0][:, centre, centre].mean())) < 40
    # second load comes from the cache
    again = load_xbd(root, tiles, cache_dir=tmp_path / "cache", progress=False)
    assert np.array_equal(again.images, ps.images)


def test_missing_layout_is_clear(tmp_path):
    with pytest.raises(InputError, match="images/ and labels/"):
        load_xbd(tmp_path, TilesConfig(), cache_dir=tmp_path / "c")
